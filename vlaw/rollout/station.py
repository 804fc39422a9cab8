"""The Station protocol: what `collect` and `evaluate` drive, a real DROID robot or the simulator.

A station is reset to a task (an instruction and a seed), observed, acted on with action chunks
in pi0.5-DROID's action space, and labelled (the operator's success judgement on a robot, the
simulator's test of its state here). Observations use DROID's names (droid_rlds.md §1.4):

  exterior_image_1_left, exterior_image_2_left, wrist_image_left   uint8 (H, W, 3)
  joint_position (7,) rad, gripper_position (1,) in [0, 1] (1 closed),
  cartesian_position (6,) xyz + extrinsic-xyz Euler angles in the robot base frame.

Actions: (T, 8) = 7 normalised joint velocities in [-1, 1] (1 <-> 0.2 rad per 15 Hz step) and
one absolute gripper position in [0, 1].

Numpy only: simulator worker processes import this module and must never import TensorFlow.
`EpisodeRecorder` turns the (observation, command) pairs a station reports into `Episode`s.
"""

import dataclasses
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from vlaw.data import droid
from vlaw.data.episode import Episode, EpisodeMetadata

STATE_NAMES = ("joint_position", "gripper_position", "cartesian_position")
ACTION_DICT_NAMES = (
    "cartesian_position",
    "cartesian_velocity",
    "gripper_position",
    "gripper_velocity",
    "joint_position",
    "joint_velocity",
)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Which task to reset to. An empty instruction lets the station draw one from the seed."""

    task: str
    seed: int
    instruction: str = ""


@dataclasses.dataclass
class Observation:
    """One observation in DROID's names (see the module docstring for shapes)."""

    images: dict[str, np.ndarray]  # camera name -> uint8 (H, W, 3)
    joint_position: np.ndarray  # (7,) float64
    gripper_position: np.ndarray  # (1,) float64
    cartesian_position: np.ndarray  # (6,) float64
    instruction: str

    def as_step_fields(self) -> dict[str, np.ndarray]:
        """ "observation/<name>" -> array, the per-step layout of `Episode.observation`."""
        fields = {f"observation/{name}": image for name, image in self.images.items()}
        for name in STATE_NAMES:
            fields[f"observation/{name}"] = np.asarray(getattr(self, name), np.float64)
        return fields


@dataclasses.dataclass
class StepRecord:
    """One control step: the observation before the command and the command (DROID order)."""

    observation: Observation
    action_dict: dict[str, np.ndarray]  # ACTION_DICT_NAMES -> (d,) float64


class Station(Protocol):
    """One robot station (real DROID controller or simulator)."""

    def reset(self, task: TaskSpec) -> Observation: ...

    def observe(self) -> Observation: ...

    def act(self, action_chunk: np.ndarray) -> list[StepRecord]:
        """Executes (T, 8) actions at 15 Hz; returns the T executed steps."""
        ...

    def label(self) -> bool: ...


class StationBatch(Protocol):
    """B stations stepped together (the simulator renders them in one framebuffer)."""

    @property
    def batch_size(self) -> int: ...

    def reset(self, tasks: Sequence[TaskSpec]) -> list[Observation]: ...

    def observe(self) -> list[Observation]: ...

    def act(self, action_chunks: np.ndarray) -> list[list[StepRecord]]:
        """(B, T, 8) actions; returns each station's T executed steps."""
        ...

    def label(self) -> list[bool]: ...


def episode_id(source: str, iteration: int, spec: TaskSpec) -> str:
    """The id of the episode a spec produces: unique within a run, the same on a rerun."""
    return f"{source}-{iteration:02d}-{spec.task}-{spec.seed}"


def expert_actor(noise: float, corrections: bool = False) -> str:
    """What a scripted-expert episode names as its policy (metadata `policy_checkpoint`)."""
    return f"scripted_expert(noise={noise:g}{', corrections' if corrections else ''})"


# Task names hold no "-", so an id made of other ids (imagine's "...-from-<start id>") fails.
_EPISODE_ID = re.compile(r"(?P<source>[a-z]+)-(?P<iteration>\d+)-(?P<task>[^-]+)-(?P<seed>\d+)")


def parse_episode_id(episode_id: str) -> tuple[str, int, TaskSpec]:
    """The inverse of `episode_id`: (source, iteration, spec), the spec without instruction
    (ids do not hold it). Raises ValueError naming the id when it is not of that form."""
    match = _EPISODE_ID.fullmatch(episode_id)
    if match is None:
        raise ValueError(
            f"episode id {episode_id!r} is not of the form '{{source}}-{{iteration}}-{{task}}-"
            "{seed}' that station.episode_id writes"
        )
    spec = TaskSpec(match["task"], int(match["seed"]))
    return match["source"], int(match["iteration"]), spec


def validate_action_chunk(action_chunk: np.ndarray) -> np.ndarray:
    """(T, 8) float64, finite; raises ValueError otherwise (a robot must never get NaN)."""
    chunk = np.asarray(action_chunk, dtype=np.float64)
    if chunk.ndim != 2 or chunk.shape[1] != droid.POLICY_ACTION_DIM:
        raise ValueError(f"action chunk must be (T, 8), got {chunk.shape}")
    if not np.all(np.isfinite(chunk)):
        raise ValueError("action chunk has non-finite values")
    return chunk


class EpisodeRecorder:
    """Accumulates a station's steps and builds the `Episode` when it ends."""

    def __init__(
        self,
        instruction: str,
        task: str,
        *,
        source: str,
        iteration: int = 0,
        policy_checkpoint: str = "",
        episode_id: str = "",
    ):
        self.instruction = instruction
        self.task = task
        self.source = source
        self.iteration = iteration
        self.policy_checkpoint = policy_checkpoint
        self.episode_id = episode_id
        self.steps: list[StepRecord] = []

    def add(self, steps: Sequence[StepRecord]) -> None:
        self.steps.extend(steps)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def finish(self, success: bool) -> Episode:
        if not self.steps:
            raise ValueError(f"episode {self.episode_id!r} has no steps")
        per_step = [step.observation.as_step_fields() for step in self.steps]
        observation = {key: np.stack([fields[key] for fields in per_step]) for key in per_step[0]}
        action_dict = {
            f"action_dict/{name}": np.stack(
                [np.asarray(step.action_dict[name], np.float64) for step in self.steps]
            )
            for name in ACTION_DICT_NAMES
        }
        metadata = EpisodeMetadata(
            success=bool(success),
            source=self.source,
            task=self.task,
            iteration=self.iteration,
            policy_checkpoint=self.policy_checkpoint,
            kept=bool(success),
            episode_id=self.episode_id,
        )
        episode = Episode(self.instruction, observation, action_dict, metadata)
        episode.validate(where=self.episode_id or "recorded episode")
        return episode
