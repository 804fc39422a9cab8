"""Rollouts on stations (simulated or real) recorded as `Episode`s, and their staging.

`policy_episodes` drives any `StationBatch` with a policy that maps observations to action
chunks, executing `open_loop_steps` actions of each chunk before asking again (openpi's DROID
client: 8 of 10), and records each station's steps. `record_dataset` runs a list of episodes
(scripted expert or policy) in simulator workers into one RLDS dataset: each episode is saved
atomically the moment it ends (lossless npz in a staging directory beside the dataset), so an
interrupted run resumes the count on rerun; once all episodes exist the RLDS dataset is written
atomically and the staging removed. TensorFlow is imported (through vlaw.data.rlds_write) only in
this parent process, never in the rendering workers.
"""

import collections
import dataclasses
import glob
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from absl import logging

from vlaw.data.atomic_json import read_json, write_json
from vlaw.data.episode import Episode, EpisodeMetadata
from vlaw.rollout.station import (
    EpisodeRecorder,
    Observation,
    StationBatch,
    TaskSpec,
    episode_id,
    expert_actor,
)

# observations of the B stations -> (B, T, 8) action chunks
Policy = Callable[[Sequence[Observation]], np.ndarray]


def policy_episodes(
    stations: StationBatch,
    policy: Policy,
    specs: Sequence[TaskSpec],
    *,
    max_steps: int,
    open_loop_steps: int,
    source: str = "real",
    iteration: int = 0,
    policy_checkpoint: str = "",
    noise_per_episode: bool = False,
) -> Iterator[Episode]:
    """Rolls `policy` on `stations` for every spec (batches of `stations.batch_size`).

    Each episode runs `max_steps` steps, then the station labels it. A final partial batch
    pads with repeats of its first spec whose episodes are dropped. `noise_per_episode`: the
    policy is called with `episode_calls=[(spec.seed, call index)]` (a `TrainedPolicy` then
    keys each row's sampling noise by its episode alone, so a resumed run redoes an episode
    exactly, whatever batch it lands in).
    """
    batch_size = stations.batch_size
    for start in range(0, len(specs), batch_size):
        batch_specs = list(specs[start : start + batch_size])
        real_count = len(batch_specs)
        batch_specs += [batch_specs[0]] * (batch_size - real_count)
        observations = stations.reset(batch_specs)
        recorders = [
            EpisodeRecorder(
                obs.instruction,
                spec.task,
                source=source,
                iteration=iteration,
                policy_checkpoint=policy_checkpoint,
                episode_id=episode_id(source, iteration, spec),
            )
            for obs, spec in zip(observations, batch_specs)
        ]
        steps, call = 0, 0
        while steps < max_steps:
            if noise_per_episode:
                keys = [(spec.seed, call) for spec in batch_specs]
                chunks = np.asarray(policy(observations, episode_calls=keys), np.float64)
            else:
                chunks = np.asarray(policy(observations), np.float64)
            call += 1
            length = min(open_loop_steps, chunks.shape[1], max_steps - steps)
            records = stations.act(chunks[:, :length])
            for recorder, station_records in zip(recorders, records):
                recorder.add(station_records)
            steps += length
            observations = stations.observe()
        labels = stations.label()
        for b in range(real_count):
            yield recorders[b].finish(labels[b])


class SuccessTally:
    """Counts successes per task while episodes stream past (to log and summarise)."""

    def __init__(self):
        self.episodes = collections.Counter()
        self.successes = collections.Counter()

    def watch(self, episodes: Iterator[Episode]) -> Iterator[Episode]:
        for episode in episodes:
            self.episodes[episode.metadata.task] += 1
            self.successes[episode.metadata.task] += int(episode.metadata.success)
            yield episode

    def rates(self) -> dict[str, float]:
        return {task: self.successes[task] / n for task, n in sorted(self.episodes.items())}


def task_pools(config, specs: list[TaskSpec]):
    """(simulator pool, that task's specs) for each task of the run, in order.

    Each task gets its own pool, no larger than its episode count, alive while the caller
    streams from it (this generator is suspended inside the `with` meanwhile)."""
    from vlaw.sim.workers import StationPool

    for task in config.tasks:
        specs_for_task = [s for s in specs if s.task == task]
        if not specs_for_task:
            continue
        per_worker = min(config.sim.stations_per_worker, len(specs_for_task))
        num_workers = max(1, min(config.sim.num_workers, -(-len(specs_for_task) // per_worker)))
        with StationPool(
            [task] * (num_workers * per_worker),
            num_workers,
            per_worker,
            config.data.image_height,
            config.data.image_width,
            layout_spread=config.sim.layout_spread,
        ) as pool:
            yield pool, specs_for_task


def _expert_stream(config, specs: list[TaskSpec], source: str, iteration: int):
    """Scripted-expert episodes task by task, from simulator workers (`Iterator[Episode]`)."""
    for pool, specs_for_task in task_pools(config, specs):
        yield from pool.expert_episodes(
            specs_for_task,
            noise=config.sim.expert_noise,
            corrections=config.sim.expert_corrections,
            max_steps=config.sim.max_steps,
            source=source,
            iteration=iteration,
        )


def staging_dir(dataset_dir: str) -> str:
    """Where a dataset's finished episodes wait, one file each, until the dataset is written."""
    parent, base = os.path.split(os.path.abspath(dataset_dir))
    return os.path.join(parent, f".{base}.episodes")


PLAN_FILE = "plan.json"


def check_staging_plan(staging: str, plan: dict, *, write: bool = True) -> None:
    """Staged episodes belong to one plan (their ids and the settings that made them): a rerun
    with other settings is refused, naming what changed, instead of mixing both into one
    dataset. The first call writes the plan; with `write` False it only checks (the processes
    of a multi-host job all check, the chief alone writes)."""
    path = os.path.join(staging, PLAN_FILE)
    stored = read_json(path, default=plan)
    changed = sorted(k for k in set(stored) | set(plan) if stored.get(k) != plan.get(k))
    if changed:
        raise ValueError(
            f"{staging} holds episodes made with other settings ({', '.join(changed)}); "
            "restore those settings to resume, or remove that directory to start over"
        )
    if write:
        write_json(path, plan)


def save_staged_episode(directory: str, episode: Episode) -> str:
    """Writes one episode losslessly (compressed npz) and atomically (temp file, rename)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{episode.metadata.episode_id}.npz")
    header = {"instruction": episode.instruction, "metadata": dataclasses.asdict(episode.metadata)}
    arrays = {key.replace("/", ":"): value for key, value in episode.observation.items()}
    arrays.update({key.replace("/", ":"): value for key, value in episode.action_dict.items()})
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "wb") as f:
        np.savez_compressed(f, header=np.array(json.dumps(header)), **arrays)
    os.replace(temp, path)
    return path


def load_staged_episode(path: str) -> Episode:
    with np.load(path) as stored:
        header = json.loads(str(stored["header"]))
        arrays = {key.replace(":", "/"): stored[key] for key in stored.files if key != "header"}
    return Episode(
        instruction=header["instruction"],
        observation={k: v for k, v in arrays.items() if k.startswith("observation/")},
        action_dict={k: v for k, v in arrays.items() if k.startswith("action_dict/")},
        metadata=EpisodeMetadata(**header["metadata"]),
    )


def policy_stream(
    config, specs: list[TaskSpec], policy, source: str = "evaluate", iteration: int = 0
) -> Iterator[Episode]:
    """Rollouts of a trained `policy` (a `vlaw.agents.policy.TrainedPolicy`) task by task, the
    policy running here in the parent and the stations in simulator workers."""
    for pool, specs_for_task in task_pools(config, specs):
        yield from policy_episodes(
            pool,
            policy,
            specs_for_task,
            max_steps=config.sim.max_steps,
            open_loop_steps=config.policy.open_loop_steps,
            source=source,
            iteration=iteration,
            policy_checkpoint=policy.checkpoint,
            noise_per_episode=True,
        )


def record_dataset(
    config,
    dataset_dir: str,
    specs: list[TaskSpec],
    source: str,
    iteration: int,
    name: str,
    policy=None,
) -> dict:
    """Runs the episodes of `specs` in simulator workers into one RLDS dataset.

    Each episode is saved to the staging directory the moment it ends; a rerun after a crash
    loads the saved ones and runs only the rest. The RLDS dataset is then written in one go
    (atomically, by vlaw.data.rlds_write) and the staging directory removed. `policy` None: the
    scripted expert acts.
    """
    from vlaw.data import rlds_write  # TensorFlow: this parent process only, never the sim workers

    staging = staging_dir(dataset_dir)
    actor = expert_actor(config.sim.expert_noise, config.sim.expert_corrections)
    if policy is not None:
        actor = policy.checkpoint
    plan = {
        "episode_ids": [episode_id(source, iteration, spec) for spec in specs],
        "actor": actor,
        "max_steps": int(config.sim.max_steps),
        "open_loop_steps": int(config.policy.open_loop_steps),
        "image_size": [int(config.data.image_height), int(config.data.image_width)],
    }
    check_staging_plan(staging, plan)
    staged = sorted(glob.glob(os.path.join(staging, "*.npz")))
    done = {os.path.basename(path)[: -len(".npz")] for path in staged}
    todo = [spec for spec in specs if episode_id(source, iteration, spec) not in done]
    if staged:
        logging.info(
            "collect: resuming %s with %d of %d episodes done",
            dataset_dir,
            len(specs) - len(todo),
            len(specs),
        )

    def episodes() -> Iterator[Episode]:
        # In spec order, staged or not, so a resumed run writes the episodes in the order a
        # straight run does (yielding the staged ones first reordered the dataset whenever a
        # kill landed after a later episode was staged; the fault-injection test caught it).
        # The stream yields task by task; episodes it yields ahead of their turn wait here.
        if policy is None:
            stream = _expert_stream(config, todo, source, iteration)
        else:
            stream = policy_stream(config, todo, policy, source, iteration)
        ahead: dict[str, Episode] = {}
        for spec in specs:
            id_ = episode_id(source, iteration, spec)
            if id_ in done:
                yield load_staged_episode(os.path.join(staging, f"{id_}.npz"))
                continue
            while id_ not in ahead:
                episode = next(stream)
                save_staged_episode(staging, episode)
                ahead[episode.metadata.episode_id] = episode
            yield ahead.pop(id_)

    tally = SuccessTally()
    summary = rlds_write.write_episodes(
        dataset_dir,
        tally.watch(episodes()),
        name=name,
        episodes_per_shard=config.data.episodes_per_shard,
        progress=True,
    )
    shutil.rmtree(staging, ignore_errors=True)
    rates = tally.rates()
    for task, rate in rates.items():
        count = tally.episodes[task]
        logging.info("collect %s: %s success rate %.2f over %d episodes", source, task, rate, count)
    return {
        "dataset_dir": summary["dataset_dir"],
        "num_episodes": summary["num_episodes"],
        "resumed_episodes": len(specs) - len(todo),
        "success_rate": rates,
    }
