"""Algorithm 1's data collection: rollouts on the station, labelled, appended to D_real.

    collect_phase(config, workdir, iteration)

  iteration 0 (the warm start): `loop.warmstart_demos_per_task` scripted-expert demonstrations
      per task at `sim.expert_noise` -> <workdir>/demos (source "demo"; the paper's 25 per task,
      §5.1), on which `train_policy` then fine-tunes the base policy.
  iteration k >= 1: `loop.real_rollouts_per_task` rollouts per task of the policy
      `train_policy` trained at iteration k - 1 (the base policy at k = 1), success-labelled by
      the station -> <workdir>/iter_NN/real (source "real"); each episode records the
      checkpoint that acted.

The scripted expert only ever makes demonstrations: every real rollout is a learned policy's,
as in the paper, whose failures ground the world model. A rerun skips datasets that already
exist and resumes a dataset whose episodes are partly staged (`vlaw.rollout.episodes`).
"""

import os

import ml_collections
from absl import logging

from vlaw import workdir as workdir_lib
from vlaw.robot.recording import station_recorder
from vlaw.rollout.episodes import record_dataset
from vlaw.rollout.station import expert_actor


def collect_phase(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> dict:
    """Algorithm 1's data collection (see the module docstring). Returns the summary."""
    record = station_recorder(config)
    if iteration == 0:
        demos_dir = workdir_lib.demos_dir(workdir)
        summary = {"policy": expert_actor(config.sim.expert_noise, config.sim.expert_corrections)}
        if os.path.exists(demos_dir):
            logging.info("collect: %s exists, keeping it", demos_dir)
            return {**summary, "demos": {"dataset_dir": demos_dir, "skipped": True}}
        if config.station == "droid":
            raise FileNotFoundError(
                f"collect iter_00 on the DROID station: put the demonstrations (teleoperated "
                f"with DROID's own tools, converted to RLDS) in {demos_dir}; no scripted expert "
                "drives a real arm"
            )
        per_task = int(config.loop.warmstart_demos_per_task)
        specs = workdir_lib.task_specs(config, "demo", 0, per_task)
        return {
            **summary,
            "demos": record_dataset(config, demos_dir, specs, "demo", 0, "vlaw_demos"),
        }
    real_dir = workdir_lib.real_dir(workdir, iteration)
    if os.path.exists(real_dir):
        logging.info("collect: %s exists, keeping it", real_dir)
        return {"policy": "trained", "real": {"dataset_dir": real_dir, "skipped": True}}
    policy = _previous_policy(config, workdir, iteration)
    per_task = int(config.loop.real_rollouts_per_task)
    specs = workdir_lib.task_specs(config, "real", iteration, per_task)
    real = record(config, real_dir, specs, "real", iteration, "vlaw_real", policy=policy)
    return {"policy": "trained", "policy_checkpoint": policy.checkpoint, "real": real}


def _previous_policy(config, workdir: str, iteration: int):
    """The policy `train_policy` trained at iteration - 1 (the base policy at iteration 1)."""
    from vlaw.agents import policy as policy_agent  # JAX: only where a trained policy acts

    directory = workdir_lib.checkpoint_dir(workdir, "policy", iteration - 1)
    if not policy_agent.is_trained(directory):
        raise FileNotFoundError(
            f"collect iter_{iteration:02d}: no policy in {directory} to roll out; run the "
            f"train_policy phase of iteration {iteration - 1} first (iteration 0 trains the "
            "base policy on the demonstrations)"
        )
    seed = workdir_lib.phase_seed(config.seed, "collect_policy", iteration)
    return policy_agent.load_policy(directory, seed=seed)
