"""Algorithm 1's imagination: the policy rolled out inside the world model, D_syn.

    imagine_phase(config, workdir, iteration)

`loop.synthetic_rollouts_per_task` rollouts per task go to `<workdir>/iter_NN/synthetic`, for
`label` to score. Starts: the first step of each episode of the task in `iter_NN/real`, else in
the demonstrations (`vlaw.workdir.imagine_start_dirs`); each serves equally often (+-1), in a
seeded order (`vlaw.rollout.imagine_plan`). Policy: the one this iteration improves, which
`collect` rolled out: `train_policy`'s checkpoint of iteration k - 1, else a vlaw policy at
`policy.train.init_from` (collect's base policy at iteration 0, the scripted expert, reads the
simulator's state and cannot act on predicted frames). The closed loop itself:
`vlaw.rollout.imagine`.

Ground truth (`vlaw.rollout.replay`): in the simulator (`sim.enabled`,
`loop.imagine_sim_replay`) each imagined action sequence is replayed open loop from the reset
that made its start; the station's label becomes `success`. Otherwise `success` is False.

Resume: finished batches are staged (lossless npz beside the dataset, as in `collect`), replay
outcomes too, and a rerun imagines only what is missing. The policy is loaded once; its
sampling key, like the world model's, derives from the phase's seed (run seed and iteration)
and the batch alone, so a resumed run writes what a straight run writes. The RLDS dataset is
written atomically, in plan order, and the staging removed; a staging directory left by other
settings is refused, never mixed in.

Several processes (a multi-host job, `vlaw.multihost`) share the work through the staging in
the shared run directory: process p imagines the unstaged batches k with k % P == p
(`imagine_plan.process_share`), on its own devices; after a barrier the chief (process 0)
alone replays and writes the dataset, and a second barrier holds the others until it exists.
A batch's noise is `fold_in(key, k)`, whichever process draws it, so P processes write what
one writes, and a job resumed with another P reuses every staged batch.
"""

import dataclasses
import os
import shutil
import time
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from vlaw import multihost
from vlaw import workdir as workdir_lib
from vlaw.agents import policy as policy_agent
from vlaw.agents import world_model as world_model_agent
from vlaw.data import rlds_write
from vlaw.data.episode import Episode
from vlaw.rollout import episodes as episodes_lib
from vlaw.rollout import replay
from vlaw.rollout.imagine import imagine_batch, steps_per_interaction
from vlaw.rollout.imagine_plan import process_share, rollout_plan, start_states


def imagining_policy_dir(config, workdir: str, iteration: int) -> str:
    """The checkpoint directory of the policy that imagines (see the module docstring)."""
    previous = workdir_lib.checkpoint_dir(workdir, "policy", iteration - 1) if iteration else ""
    if previous and policy_agent.is_trained(previous):
        return previous
    init_from = str(config.policy.train.init_from or "")
    if init_from and os.path.exists(os.path.join(init_from, policy_agent.SPEC_FILE)):
        return init_from
    if iteration > 0:
        reason = (
            f"{previous} holds no checkpoint; "
            f"run the train_policy phase for iteration {iteration - 1} first"
        )
    else:
        reason = (
            "at iteration 0 collect's base policy is the scripted expert, which reads the "
            "simulator's state and cannot act on predicted frames; start imagining at "
            "iteration 1 (after train_policy of iteration 0)"
        )
    raise FileNotFoundError(
        f"imagine iter_{iteration:02d}: no policy to roll out: {reason}, or set "
        "policy.train.init_from to a vlaw policy checkpoint directory"
    )


def _staged_path(staging: str, episode_id: str) -> str:
    return os.path.join(staging, f"{episode_id}.npz")


def _load_staged(staging: str, episode_id: str) -> Episode:
    return episodes_lib.load_staged_episode(_staged_path(staging, episode_id))


def imagine_phase(
    config: ml_collections.ConfigDict,
    workdir: str,
    iteration: int,
    *,
    stop_after_batches: int | None = None,
    progress: bool = True,
) -> dict:
    """Algorithm 1's imagination (see the module docstring). Returns the summary.

    `stop_after_batches` ends the call after that many newly imagined batches (per process),
    without writing the dataset, as a preemption would; calling again resumes. Every process of
    a multi-host job calls it; the chief's summary has `wrote_dataset` True, the others' False
    (and None for what only the chief measures).
    """
    dataset_dir = workdir_lib.synthetic_dir(workdir, iteration)
    if os.path.exists(dataset_dir):
        logging.info("imagine: %s exists, keeping it", dataset_dir)
        return {"dataset_dir": dataset_dir, "skipped": True}
    interactions, steps = int(config.loop.imagine_interactions), steps_per_interaction(config)
    policy_dir = imagining_policy_dir(config, workdir, iteration)
    seed = workdir_lib.phase_seed(config.seed, "imagine", iteration)
    starts = start_states(config.tasks, workdir_lib.imagine_start_dirs(workdir, iteration))
    plan = rollout_plan(config, starts, iteration, seed)
    replay_labels = replay.replay_enabled(config)
    # Up front: a start the simulator cannot reset to stops the phase before it imagines.
    replay_specs = {r.episode_id: r.start.station_spec() for r in plan} if replay_labels else {}
    world_model_dir = workdir_lib.checkpoint_dir(workdir, "world_model", iteration)
    world = world_model_agent.load_world_model(config, world_model_dir)
    size = int(config.loop.imagine_batch_size)
    batches = [plan[i : i + size] for i in range(0, len(plan), size)]
    staging = episodes_lib.staging_dir(dataset_dir)
    ids = [r.episode_id for r in plan]
    settings = dict(episode_ids=ids, interactions=interactions, batch_size=size, seed=seed)
    chief, index, count = multihost.is_chief(), multihost.process_index(), multihost.process_count()
    barrier = f"vlaw_imagine_iter_{iteration:02d}"
    episodes_lib.check_staging_plan(
        staging, {**settings, "policy": os.path.abspath(policy_dir)}, write=chief
    )
    staged = [all(os.path.exists(_staged_path(staging, r.episode_id)) for r in b) for b in batches]
    todo = [k for k, done in enumerate(staged) if not done]
    # Every process has looked at the staging before any adds to it: one `todo` everywhere,
    # hence the same decisions below (whether to load the policy, whether to stop early).
    multihost.barrier(f"{barrier}_planned")
    shares = [process_share(todo, p, count) for p in range(count)]
    now, left = shares[index], 0  # `left`: batches no process imagines in this call
    if stop_after_batches is not None:
        now = now[:stop_after_batches]
        left = sum(max(0, len(share) - stop_after_batches) for share in shares)
    logging.info(
        "imagine: %d of %d batches to imagine, %d of them here (process %d of %d)",
        *(len(todo), len(batches), len(now), index, count),
    )
    # Loaded once: imagine_batch passes each call its key, so the policy's own keys go unused.
    # By every process or none (`todo`, not this process's share): a checkpoint's restore is a
    # collective of all processes.
    policy = policy_agent.load_policy(policy_dir) if todo else None
    key, start = jax.random.PRNGKey(seed), time.perf_counter()
    with tqdm(
        total=len(now) * interactions, desc="imagine", unit="interaction", disable=not progress
    ) as bar:
        for k in now:
            batch = batches[k] + [batches[k][0]] * (size - len(batches[k]))  # one shape
            # Noise from (seed, batch) alone: a resumed run imagines what a straight one does.
            rng = jax.random.fold_in(key, k)
            episodes = imagine_batch(world, policy, batch, config=config, rng=rng, bar=bar)
            for episode in episodes[: len(batches[k])]:
                episodes_lib.save_staged_episode(staging, episode)
    seconds = time.perf_counter() - start
    summary = {
        "dataset_dir": dataset_dir,
        "policy_checkpoint_dir": policy_dir,
        "world_model_checkpoint_dir": world_model_dir,
        "interactions_per_episode": interactions,
        "steps_per_episode": interactions * steps,
        "batch_size": size,
        "resumed_episodes": sum(len(b) for b, done in zip(batches, staged) if done),
        "imagine_seconds": round(seconds, 2),
        # One closed-loop step of a whole batch: policy call, world-model chunk, decode.
        "seconds_per_interaction": round(seconds / (len(now) * interactions), 3) if now else None,
    }
    if stop_after_batches is not None and left:
        return {**summary, "stopped_early": True, "batches_left": left}
    multihost.barrier(f"{barrier}_staged")  # every batch is staged
    per_task = {task: [r for r in plan if r.start.task == task] for task in config.tasks}
    summary.update(
        num_episodes=len(plan),
        episodes_per_task={task: len(rollouts) for task, rollouts in per_task.items()},
        start_episodes={t: len({r.start.episode_id for r in rs}) for t, rs in per_task.items()},
        success_is_ground_truth=replay_labels,
        wrote_dataset=chief,
    )
    if chief:
        summary.update(_write_dataset(config, dataset_dir, plan, staging, replay_specs, progress))
    elif replay_labels:
        summary["sim_success_rate"] = None  # the chief's to measure: it replays
    # No process goes on (to `label`, which reads the dataset) before the chief has written it.
    multihost.barrier(f"{barrier}_written")
    logging.info("imagine iter_%02d: %s", iteration, summary)
    return summary


def _write_dataset(config, dataset_dir: str, plan, staging: str, replay_specs, progress) -> dict:
    """The chief's part: replays the staged episodes' actions in the simulator from the resets
    of `replay_specs` (episode id -> TaskSpec; empty: no ground truth), writes them in plan
    order and removes the staging. Summary entries."""
    outcomes = {}
    if replay_specs:
        outcomes = replay.replayed_labels(
            config,
            staging,
            replay_specs,
            lambda id_: _load_staged(staging, id_).policy_actions(),
            progress=progress,
        )

    def episodes() -> Iterator[Episode]:
        for rollout in plan:  # plan order: a resumed run writes what a straight run writes
            episode = _load_staged(staging, rollout.episode_id)
            success = bool(outcomes.get(rollout.episode_id, False))
            episode.metadata = dataclasses.replace(episode.metadata, success=success)
            yield episode

    written = rlds_write.write_episodes(
        dataset_dir,
        episodes(),
        name="vlaw_synthetic",
        episodes_per_shard=int(config.data.episodes_per_shard),
        progress=progress,
    )
    shutil.rmtree(staging, ignore_errors=True)
    result = {"num_episodes": written["num_episodes"]}
    if replay_specs:
        result["sim_success_rate"] = {
            task: float(np.mean([outcomes[r.episode_id] for r in plan if r.start.task == task]))
            for task in config.tasks
        }
    return result
