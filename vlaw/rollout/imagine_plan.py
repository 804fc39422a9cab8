"""What the `imagine` phase imagines: its start states and the seeded plan of rollouts.

Starts: the first step of each episode of a task in `iter_NN/real`, else in `<workdir>/demos`
(iteration 0 of a run has no real rollouts before `collect`'s, and a phase run out of order may
have none). Each start serves N / len(starts) times (+-1), in an order drawn from the phase's
seed, so a rerun plans the same rollouts with the same ids.
"""

import dataclasses
import os
import zlib
from collections.abc import Iterator, Sequence

import numpy as np

from vlaw.data import droid, rlds_read
from vlaw.rollout.station import TaskSpec, parse_episode_id


@dataclasses.dataclass(frozen=True)
class StartState:
    """The first step of a recorded episode, where imagined rollouts begin."""

    task: str
    episode_id: str
    instruction: str
    images: np.ndarray  # (V, H, W, 3) uint8 in droid.CAMERA_NAMES order, as recorded
    joint_position: np.ndarray  # (7,)
    gripper_position: np.ndarray  # (1,)

    def station_spec(self) -> TaskSpec:
        """The simulator reset that reproduces this state, from the episode's id
        (`station.episode_id`); ValueError when the id names no reset of this task."""
        try:
            _, _, spec = parse_episode_id(self.episode_id)
            if spec.task != self.task:
                raise ValueError(f"episode id {self.episode_id!r} names task {spec.task!r}")
        except ValueError as error:
            raise ValueError(
                f"the simulator cannot reproduce a start of task {self.task!r} ({error}); set "
                "loop.imagine_sim_replay=False to imagine without ground truth"
            ) from error
        return dataclasses.replace(spec, instruction=self.instruction)


@dataclasses.dataclass(frozen=True)
class Rollout:
    """One imagined episode of the plan: the `index`-th of its task, from `start`."""

    index: int
    start: StartState
    iteration: int

    @property
    def episode_id(self) -> str:
        head = f"synthetic-{self.iteration:02d}-{self.start.task}-{self.index:04d}"
        return f"{head}-from-{self.start.episode_id}" if self.start.episode_id else head


def _first_steps(dataset_dir: str, tasks: Sequence[str]) -> Iterator[StartState]:
    """The first step of each episode of `tasks` in `dataset_dir` (only its frames decoded)."""
    layout = rlds_read.open_dataset(dataset_dir)
    for raw in rlds_read.iter_raw_episodes(layout):
        metadata = rlds_read.metadata_from_raw(raw)
        if metadata.task not in tasks or raw["num_steps"] == 0:
            continue
        images = [
            rlds_read.decode_images(
                raw[f"{rlds_read.STEPS}observation/{name}"][:1], layout.image_shape
            )[0]
            for name in droid.CAMERA_NAMES
        ]
        yield StartState(
            task=metadata.task,
            episode_id=metadata.episode_id,
            instruction=rlds_read.instruction_from_raw(raw),
            images=np.stack(images),
            joint_position=np.asarray(raw[f"{rlds_read.STEPS}observation/joint_position"][0]),
            gripper_position=np.asarray(raw[f"{rlds_read.STEPS}observation/gripper_position"][0]),
        )


def start_states(tasks: Sequence[str], candidates: Sequence[str]) -> dict[str, list[StartState]]:
    """Per task, the first steps of its episodes in the first of the `candidates` dataset
    directories that has any (`vlaw.workdir.imagine_start_dirs`: iter_NN/real, else demos)."""
    found: dict[str, list[StartState]] = {task: [] for task in tasks}
    for dataset_dir in candidates:
        missing = [task for task in tasks if not found[task]]
        if missing and os.path.isdir(dataset_dir):
            for state in _first_steps(dataset_dir, missing):
                found[state.task].append(state)
    empty = [task for task, states in found.items() if not states]
    if empty:
        raise FileNotFoundError(
            f"imagine: no episode of task(s) {empty} to start from in {list(candidates)}; run the "
            "collect phase first"
        )
    return found


def rollout_plan(
    config, starts: dict[str, list[StartState]], iteration: int, seed: int
) -> list[Rollout]:
    """N rollouts per task, task by task; each start serves N / len(starts) times (+-1) in a
    seeded order."""
    n = int(config.loop.synthetic_rollouts_per_task)
    plan = []
    for task in config.tasks:
        rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
        order = np.resize(rng.permutation(len(starts[task])), n)
        plan += [Rollout(i, starts[task][j], iteration) for i, j in enumerate(order)]
    return plan


def process_share(todo: Sequence[int], process_index: int, process_count: int) -> list[int]:
    """The batches of `todo` (indices into the plan's batches, not yet staged) that process
    `process_index` of a multi-host job imagines: those k with k % process_count ==
    process_index.

    By the batch's index, not its position in `todo`: a process's share then does not depend
    on what the others have staged when it looks, and each batch's noise is
    `fold_in(key, k)`, so the episodes are the same whichever process imagines them. A resumed
    job may be unbalanced by what each process had finished; a fresh one is balanced to +-1.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return [k for k in todo if k % process_count == process_index]
