"""The in-memory episode every part of vlaw exchanges: numpy arrays in DROID's names.

Stations (simulated or real) and the world model produce `Episode`s; `vlaw.data.rlds_write`
writes them as RLDS and `vlaw.data.rlds_read` reads them back. Numpy only: the simulator's
processes import this module and must never import TensorFlow.
"""

import dataclasses
import math

import numpy as np

from vlaw.data import droid


@dataclasses.dataclass
class EpisodeMetadata:
    """Episode-level labels (DROID's two path fields plus vlaw's own, see droid.py)."""

    success: bool
    source: str  # one of droid.SOURCES
    task: str
    iteration: int = 0
    policy_checkpoint: str = ""
    reward_score: float = math.nan  # P("yes") from the reward model; NaN when unscored
    kept: bool = False  # reward_score > alpha (synthetic) or success (real)
    episode_id: str = ""
    file_path: str = ""  # DROID-style; derived from the label when empty (see `droid_file_path`)
    recording_folderpath: str = ""

    def droid_file_path(self) -> str:
        """A DROID-compatible `file_path`: success lives in a `/success/` or `/failure/` segment."""
        if self.file_path:
            return self.file_path
        outcome = "success" if self.success else "failure"
        return f"vlaw/{self.source}/{outcome}/{self.task}/{self.episode_id or 'episode'}"


@dataclasses.dataclass
class Episode:
    """One trajectory of T steps.

    Attributes:
      instruction: the language instruction (DROID stores it on every step).
      observation: "observation/<name>" -> array (T, ...): the three cameras (T, H, W, 3) uint8
        and the three state vectors (T, d) float64, DROID's names (droid.step_fields).
      action_dict: "action_dict/<name>" -> (T, d) float64, DROID's six commanded quantities.
      metadata: episode labels.
    """

    instruction: str
    observation: dict[str, np.ndarray]
    action_dict: dict[str, np.ndarray]
    metadata: EpisodeMetadata

    @property
    def num_steps(self) -> int:
        return int(self.observation["observation/joint_position"].shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.observation[f"observation/{droid.CAMERA_NAMES[0]}"].shape[1:])

    def policy_actions(self) -> np.ndarray:
        """(T, 8) float32: joint velocities ++ gripper position (pi0.5-DROID)."""
        return droid.policy_actions(self.action_dict)

    def policy_state(self) -> np.ndarray:
        """(T, 8) float32: joint positions ++ gripper position."""
        return droid.policy_state(self.observation)

    def validate(self, where: str = "episode") -> None:
        """Raises ValueError naming the first missing or malformed field."""
        if self.metadata.source not in droid.SOURCES:
            raise ValueError(
                f"{where}: episode_metadata/source={self.metadata.source!r}, "
                f"expected one of {droid.SOURCES}"
            )
        arrays = {**self.observation, **self.action_dict}
        if "observation/joint_position" not in arrays:
            raise ValueError(f"{where}: missing field observation/joint_position")
        num_steps = self.num_steps
        if num_steps == 0:
            raise ValueError(f"{where}: episode has no steps")
        for field in droid.step_fields(self.image_shape):
            if not field.path.startswith(("observation/", "action_dict/")):
                continue  # derived by the writer (action, reward, flags, text)
            if field.path not in arrays:
                raise ValueError(f"{where}: missing field {field.path}")
            value = np.asarray(arrays[field.path])
            if value.shape != (num_steps, *field.shape):
                raise ValueError(
                    f"{where}: field {field.path} has shape {value.shape}, "
                    f"expected {(num_steps, *field.shape)}"
                )
            if field.kind == "image" and value.dtype != np.uint8:
                raise ValueError(f"{where}: field {field.path} has dtype {value.dtype}, want uint8")
            if field.kind == "tensor" and not np.issubdtype(value.dtype, np.floating):
                raise ValueError(f"{where}: field {field.path} has dtype {value.dtype}, want float")
