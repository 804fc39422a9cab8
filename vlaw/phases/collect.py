"""Algorithm 1's data collection: rollouts on the station, labelled, appended to D_real.

    collect_phase(config, workdir, iteration)

  iteration 0, once: `loop.warmstart_demos_per_task` scripted-expert demonstrations per task
                     -> <workdir>/demos (source "demo"; the paper's 25 per task, §5.1)
  every iteration:   `loop.real_rollouts_per_task` rollouts per task, success-labelled by the
                     station -> <workdir>/iter_NN/real (source "real")

Who acts in the rollouts of iteration k: the policy that `train_policy` trained at iteration
k - 1 (its checkpoint path goes into each episode's `policy_checkpoint`). Iteration 0 runs
before any policy training (Algorithm 1: collect, then train), so there, and at any later
iteration whose previous policy checkpoint is missing (phases run out of order), the scripted
expert at `sim.expert_noise` stands in for the base policy. A rerun skips datasets that already
exist and resumes a dataset whose episodes are partly staged (`vlaw.rollout.episodes`).
"""

import os

import ml_collections
from absl import logging

from vlaw import workdir as workdir_lib
from vlaw.rollout.episodes import record_dataset
from vlaw.rollout.station import TaskSpec


def task_specs(
    config: ml_collections.ConfigDict, stream: str, iteration: int, per_task: int
) -> list[TaskSpec]:
    """`per_task` station resets per task of the run, seeded from `stream`
    (`vlaw.workdir.EPISODE_STREAMS`)."""
    return [
        TaskSpec(task, workdir_lib.episode_seed(config.seed, stream, task, iteration, i))
        for task in config.tasks
        for i in range(per_task)
    ]


def collect_phase(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> dict:
    """Algorithm 1's data collection (see the module docstring). Returns the summary."""
    if not config.sim.enabled:
        raise ValueError(
            "collect on a real DROID station needs the robot controller (vlaw/robot), which "
            "this build does not include; set config.sim.enabled=True to use the simulator"
        )
    summary: dict = {"policy": f"scripted_expert(noise={config.sim.expert_noise:g})"}
    policy = _previous_policy(config, workdir, iteration)
    if policy is not None:
        summary["policy"] = "trained"
        summary["policy_checkpoint"] = policy.checkpoint
    demos_dir = workdir_lib.demos_dir(workdir)
    if iteration == 0:
        if os.path.exists(demos_dir):
            logging.info("collect: %s exists, keeping it", demos_dir)
            summary["demos"] = {"dataset_dir": demos_dir, "skipped": True}
        else:
            specs = task_specs(config, "demo", 0, config.loop.warmstart_demos_per_task)
            summary["demos"] = record_dataset(config, demos_dir, specs, "demo", 0, "vlaw_demos")
    real_dir = workdir_lib.real_dir(workdir, iteration)
    if os.path.exists(real_dir):
        logging.info("collect: %s exists, keeping it", real_dir)
        summary["real"] = {"dataset_dir": real_dir, "skipped": True}
    else:
        specs = task_specs(config, "real", iteration, config.loop.real_rollouts_per_task)
        summary["real"] = record_dataset(
            config, real_dir, specs, "real", iteration, "vlaw_real", policy=policy
        )
    return summary


def _previous_policy(config, workdir: str, iteration: int):
    """The policy `train_policy` trained at iteration - 1, or None (see the module docstring)."""
    if iteration == 0:
        return None
    from vlaw.agents import policy as policy_agent  # JAX: only once a trained policy may act

    directory = workdir_lib.checkpoint_dir(workdir, "policy", iteration - 1)
    if not policy_agent.is_trained(directory):
        logging.warning(
            "collect iter_%02d: no policy checkpoint in %s; the scripted expert acts instead",
            iteration,
            directory,
        )
        return None
    seed = workdir_lib.phase_seed(config.seed, "collect_policy", iteration)
    return policy_agent.load_policy(directory, seed=seed)
