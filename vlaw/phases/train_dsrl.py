"""DSRL's iteration on the station: steered rollouts, then SAC on every rollout so far.

    train_dsrl_phase(config, workdir, iteration)     # iteration >= 1, config.method = "dsrl"

1. Rolls out the base policy (`checkpoints/policy/iter_00`, frozen) steered by the current
   noise policy for `loop.real_rollouts_per_task` episodes per task, on the "real" layouts of
   this iteration: the real-rollout budget of VLAW and filtered BC. The acting noise policy
   is iteration k-1's SAC actor, sampled (exploration), or at iteration 1 w ~ N(0, I): the
   unsteered base policy. The episodes are recorded as this iteration's real rollouts,
   `iter_NN/real` (RLDS; staged and resumable as `collect`'s).
2. Rebuilds their decisions as SAC transitions (`vlaw.baselines.dsrl.episode_transitions`),
   adds them to the replay of earlier iterations (`checkpoints/dsrl/iter_{k-1}/replay.npz`)
   and runs `dsrl.updates_per_transition` SAC updates per new transition, continuing from
   iteration k-1's SAC state.
3. Saves the SAC state (orbax), the replay and `dsrl.json` under `checkpoints/dsrl/iter_NN`.

Resumable: a rerun keeps a finished dataset, resumes a partly staged one, and, when the SAC
state of the iteration is saved, returns at once.
"""

import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from vlaw import workdir as workdir_lib
from vlaw.agents import policy as policy_agent
from vlaw.baselines import dsrl, sac
from vlaw.data import rlds_read
from vlaw.rollout.episodes import record_dataset
from vlaw.train.mesh import create_mesh


def train_dsrl_phase(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> dict:
    """One DSRL iteration (see the module docstring). Returns the summary."""
    if iteration < 1:
        raise ValueError("train_dsrl runs at iterations >= 1 (iteration 0 is the warm start)")
    if not config.sim.enabled:
        raise ValueError(
            "train_dsrl on a real DROID station needs the robot controller (vlaw/robot), which "
            "this build does not include; set config.sim.enabled=True to use the simulator"
        )
    directory = workdir_lib.checkpoint_dir(workdir, "dsrl", iteration)
    if dsrl.is_trained(directory):
        logging.info("train_dsrl: %s is trained, keeping it", directory)
        return {**workdir_lib.read_json(os.path.join(directory, dsrl.SPEC_FILE)), "skipped": True}
    base_dir = workdir_lib.checkpoint_dir(workdir, "policy", 0)
    if not policy_agent.is_trained(base_dir):
        raise FileNotFoundError(
            f"train_dsrl iter_{iteration:02d}: no base policy in {base_dir}; run the warm start "
            "(collect and train_policy of iteration 0) first"
        )
    seed = workdir_lib.phase_seed(config.seed, "collect_policy", iteration)
    base = policy_agent.load_policy(base_dir, seed=seed)
    hp = dsrl.hyper_params(config)
    action_dim = dsrl.noise_action_dim(config, base)
    observation_dim = dsrl.observation_dim(config)
    rng = jax.random.PRNGKey(workdir_lib.phase_seed(config.seed, "train_dsrl", iteration))
    init_rng, update_rng = jax.random.split(rng)
    template = sac.init_state(hp, observation_dim, action_dim, init_rng)

    previous_dir = workdir_lib.checkpoint_dir(workdir, "dsrl", iteration - 1)
    if iteration > 1 and not dsrl.is_trained(previous_dir):
        raise FileNotFoundError(
            f"train_dsrl iter_{iteration:02d}: no SAC state in {previous_dir}; run the "
            f"train_dsrl phase of iteration {iteration - 1} first"
        )
    if iteration > 1:
        state = dsrl.load_state(previous_dir, template)
        replay = sac.ReplayBuffer.load(os.path.join(previous_dir, dsrl.REPLAY_FILE))
        mode, actor = dsrl.EXPLORE, state.actor
    else:
        state, replay = template, sac.ReplayBuffer(observation_dim, action_dim)
        mode, actor = dsrl.BASE, None
    noise_seed = workdir_lib.phase_seed(config.seed, "dsrl_explore", iteration)
    magnitude = float(config.dsrl.action_magnitude)
    noise_policy = dsrl.NoisePolicy(mode, hp, actor, noise_seed, magnitude, action_dim)

    # 1. The iteration's real rollouts.
    real_dir = workdir_lib.real_dir(workdir, iteration)
    specs = workdir_lib.task_specs(
        config, "real", iteration, int(config.loop.real_rollouts_per_task)
    )
    acting = f"{base.checkpoint} steered by noise policy {mode}"
    if mode == dsrl.EXPLORE:
        acting += f" of {previous_dir}"
    steered = dsrl.SteeredPolicy(config, base, noise_policy, specs, acting)
    if os.path.exists(real_dir):
        logging.info("train_dsrl: %s exists, keeping it", real_dir)
        real = {"dataset_dir": real_dir, "skipped": True}
    else:
        real = record_dataset(
            config, real_dir, specs, "real", iteration, "vlaw_real", policy=steered
        )

    # 2. Transitions, replay, SAC updates.
    steps_per_decision = dsrl.executed_steps(config, base.config.action_horizon)
    new = [
        dsrl.episode_transitions(config, episode, noise_policy, steps_per_decision)
        for episode in rlds_read.read_episodes(real_dir)
    ]
    for transitions in new:
        replay.add(transitions)
    new_transitions = sum(len(t["reward"]) for t in new)
    successes = sum(int(t["reward"].sum()) for t in new)
    mesh = create_mesh(config.mesh)
    state = sac.place_state(state, mesh)
    per_call = int(config.dsrl.updates_per_transition)
    batch_size = int(config.dsrl.batch_size)
    sample_rng = np.random.default_rng(workdir_lib.phase_seed(config.seed, "train_dsrl", iteration))
    start, metrics = time.time(), {}
    for index in range(new_transitions):
        batches = sac.place_batches(replay.minibatches(sample_rng, per_call, batch_size), mesh)
        state, metrics = sac.update(hp, state, batches, jax.random.fold_in(update_rng, index))
        if index % max(1, new_transitions // 10) == 0 or index == new_transitions - 1:
            logging.info(
                "train_dsrl iter_%02d: %d/%d updates %s",
                iteration,
                (index + 1) * per_call,
                new_transitions * per_call,
                {k: round(float(v), 4) for k, v in metrics.items()},
            )

    # 3. Save: the state and the replay first, the spec (which marks it trained) last.
    os.makedirs(directory, exist_ok=True)
    replay.save(os.path.join(directory, dsrl.REPLAY_FILE))
    summary = {
        "iteration": iteration,
        "variant": "DSRL-SAC",
        "base_policy": base.checkpoint,
        "acting_noise_policy": mode,
        "real": real,
        "new_transitions": new_transitions,
        "replay_transitions": len(replay),
        "rollout_successes": successes,
        "sac_updates": new_transitions * per_call,
        "sac_step": int(state.step),
        "train_seconds": round(time.time() - start, 2),
        "final_metrics": {k: float(v) for k, v in metrics.items()},
    }
    dsrl.save_state(config, directory, jax.device_get(state), summary)
    return summary
