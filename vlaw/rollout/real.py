"""Rollouts on a Station (simulated or real) recorded as `Episode`s, and the `collect` phase.

`policy_episodes` drives any `StationBatch` with a policy that maps observations to action
chunks, executing `open_loop_steps` actions of each chunk before asking again (openpi's DROID
client: 8 of 10), and records each station's steps. `collect_phase` is Algorithm 1's data
collection:

  iteration 0, once: `loop.warmstart_demos_per_task` scripted-expert demonstrations per task
                     -> <workdir>/demos (source "demo"; the paper's 25 per task, §5.1)
  every iteration:   `loop.real_rollouts_per_task` rollouts per task, success-labelled by the
                     station -> <workdir>/iter_XX/real (source "real")

Who acts in the rollouts of iteration k: the policy that `train_policy` trained at iteration
k - 1 (`<workdir>/checkpoints/policy/iter_{k-1}`, loaded by `vlaw.train.policy.load_policy`;
its checkpoint path goes into each episode's `policy_checkpoint`). Iteration 0 runs before any
policy training (Algorithm 1: collect, then train), so there, and at any later iteration whose
previous policy checkpoint is missing (phases run out of order), the scripted expert at
`sim.expert_noise` stands in for the base policy. Each episode is saved
atomically the moment it ends (lossless npz in a staging directory beside the dataset), so an
interrupted collect resumes the count on rerun; once all episodes exist the RLDS dataset is
written atomically and the staging removed. A rerun skips datasets that already exist.
TensorFlow is imported (through vlaw.data.rlds_write) only in this parent process, never in the
rendering workers.
"""

import collections
import dataclasses
import glob
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence

import ml_collections
import numpy as np
from absl import logging

from vlaw.data.episode import Episode, EpisodeMetadata
from vlaw.rollout.station import (
    EpisodeRecorder,
    Observation,
    StationBatch,
    TaskSpec,
    episode_id,
)

# observations of the B stations -> (B, T, 8) action chunks
Policy = Callable[[Sequence[Observation]], np.ndarray]
SEED_STREAMS = {"demo": 1, "real": 2, "evaluate": 3}


def episode_seed(root_seed: int, stream: str, task: str, iteration: int, index: int) -> int:
    """A layout seed per (stream, task, iteration, episode), distinct across all of them."""
    task_key = sum(ord(c) * 31**i for i, c in enumerate(task)) % (2**31)
    sequence = np.random.SeedSequence([root_seed, SEED_STREAMS[stream], task_key, iteration, index])
    return int(sequence.generate_state(1)[0])


def task_specs(
    config: ml_collections.ConfigDict, stream: str, iteration: int, per_task: int
) -> list[TaskSpec]:
    return [
        TaskSpec(task, episode_seed(config.seed, stream, task, iteration, i))
        for task in config.tasks
        for i in range(per_task)
    ]


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
) -> Iterator[Episode]:
    """Rolls `policy` on `stations` for every spec (batches of `stations.batch_size`).

    Each episode runs `max_steps` steps, then the station labels it. A final partial batch
    pads with repeats of its first spec whose episodes are dropped.
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
        steps = 0
        while steps < max_steps:
            chunks = np.asarray(policy(observations), np.float64)
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
        ) as pool:
            yield pool, specs_for_task


def _expert_stream(config, specs: list[TaskSpec], source: str, iteration: int):
    """Scripted-expert episodes task by task, from simulator workers (`Iterator[Episode]`)."""
    for pool, specs_for_task in task_pools(config, specs):
        yield from pool.expert_episodes(
            specs_for_task,
            noise=config.sim.expert_noise,
            max_steps=config.sim.max_steps,
            source=source,
            iteration=iteration,
        )


def staging_dir(dataset_dir: str) -> str:
    """Where a dataset's finished episodes wait, one file each, until the dataset is written."""
    parent, base = os.path.split(os.path.abspath(dataset_dir))
    return os.path.join(parent, f".{base}.episodes")


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


def write_staged_json(path: str, payload: dict) -> None:
    """Writes `payload` atomically (temp file, rename): a crash leaves the old file or the new."""
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(temp, path)


def read_staged_json(path: str, default: dict) -> dict:
    """What `write_staged_json` wrote at `path`, or `default` when nothing was written yet."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


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


def _policy_stream(config, specs: list[TaskSpec], source: str, iteration: int, policy):
    """Rollouts of a trained `policy` (a `vlaw.train.policy.TrainedPolicy`) task by task, the
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
        )


def _record(
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
    from vlaw.data import rlds_write  # imports TensorFlow: parent process only

    staging = staging_dir(dataset_dir)
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
        for path in staged:
            yield load_staged_episode(path)
        if policy is None:
            stream = _expert_stream(config, todo, source, iteration)
        else:
            stream = _policy_stream(config, todo, source, iteration, policy)
        for episode in stream:
            save_staged_episode(staging, episode)
            yield episode

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


def collect_phase(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> dict:
    """Algorithm 1's data collection (see the module docstring). Returns the summary."""
    if not config.sim.enabled:
        raise ValueError(
            "collect on a real DROID station needs the robot controller (vlaw/robot), which "
            "this build does not include; set config.sim.enabled=True to use the simulator"
        )
    from vlaw.pipeline import iteration_dir

    summary: dict = {"policy": f"scripted_expert(noise={config.sim.expert_noise:g})"}
    policy = _trained_policy(config, workdir, iteration)
    if policy is not None:
        summary["policy"] = "trained"
        summary["policy_checkpoint"] = policy.checkpoint
    demos_dir = os.path.join(workdir, "demos")
    if iteration == 0:
        if os.path.exists(demos_dir):
            logging.info("collect: %s exists, keeping it", demos_dir)
            summary["demos"] = {"dataset_dir": demos_dir, "skipped": True}
        else:
            specs = task_specs(config, "demo", 0, config.loop.warmstart_demos_per_task)
            summary["demos"] = _record(config, demos_dir, specs, "demo", 0, "vlaw_demos")
    real_dir = os.path.join(iteration_dir(workdir, iteration), "real")
    if os.path.exists(real_dir):
        logging.info("collect: %s exists, keeping it", real_dir)
        summary["real"] = {"dataset_dir": real_dir, "skipped": True}
    else:
        specs = task_specs(config, "real", iteration, config.loop.real_rollouts_per_task)
        summary["real"] = _record(
            config, real_dir, specs, "real", iteration, "vlaw_real", policy=policy
        )
    return summary


def _trained_policy(config, workdir: str, iteration: int):
    """The policy `train_policy` trained at iteration - 1, or None (see the module docstring)."""
    if iteration == 0:
        return None
    from vlaw.train import policy as policy_training  # JAX: only once a policy may exist

    if not policy_training.has_policy_checkpoint(workdir, iteration - 1):
        logging.warning(
            "collect iter_%02d: no policy checkpoint from iteration %d; the scripted expert "
            "acts instead",
            iteration,
            iteration - 1,
        )
        return None
    return policy_training.load_policy(workdir, iteration - 1, seed=config.seed + iteration)
