"""DROID's RLDS schema as plain data (no TensorFlow), and the VLAW metadata we add to it.

Facts (shared/research/droid_rlds.md §1.4, §3.2):
- 15 Hz steps; three 180x320x3 JPEG cameras; float64 proprioception and commands.
- The released `action` field is NOT "[6x joint velocities, 1x gripper]" as its description
  says: it is commanded `cartesian_position` (6) ++ `gripper_position` (1). The real control
  signals are in `action_dict`. pi0.5-DROID acts in `joint_velocity` (7) ++ `gripper_position` (1).
- Success exists only in `episode_metadata/file_path` (a `/success/` or `/failure/` segment) and
  as reward 1.0 on the last step of successes; we keep both conventions and add explicit fields.
- Released files carry the builder name `r2d2_faceblur` (droid 1.0.0, droid_100) or `droid_101`.
"""

import dataclasses

import numpy as np

FRAME_RATE_HZ = 15
DROID_IMAGE_SHAPE = (180, 320, 3)
CAMERA_NAMES = ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left")
# Builder names found in the released DROID files (the folder name is not the dataset name).
DROID_BUILDER_NAMES = ("r2d2_faceblur", "droid_101", "droid", "droid_100")
# pi0.5-DROID's action space: 7 joint velocities (normalised to [-1, 1], 1 <-> 0.2 rad per step)
# and one absolute gripper position in [0, 1] (0 open, 1 closed).
POLICY_ACTION_DIM = 8
STATE_DIM = 8  # joint_position (7) ++ gripper_position (1), openpi's DROID state.
# DROID's normalisation of the commanded velocities in `action_dict` (droid_rlds.md §3.2): a
# unit Cartesian velocity moves the pose by 0.075 m / 0.15 rad per step, a unit gripper
# velocity moves gripper_position by 0.25 per step. Every station that writes these fields
# (the simulator, imagination) divides by the same constants.
CARTESIAN_DELTA_PER_UNIT = (0.075, 0.15)  # m, rad per step
GRIPPER_DELTA_PER_UNIT = 0.25  # gripper_position per step


@dataclasses.dataclass(frozen=True)
class Field:
    """One feature of the RLDS schema.

    `path` is "/"-joined below the step (or episode) dict; `kind` is one of "tensor", "scalar",
    "image" (uint8 HxWx3, JPEG in files) or "text" (a str).
    """

    path: str
    kind: str
    dtype: str
    shape: tuple[int, ...] = ()
    doc: str = ""


def _tensor(path: str, dim: int, doc: str, dtype: str = "float64") -> Field:
    return Field(path, "tensor", dtype, (dim,), doc)


OBSERVATION_STATE_FIELDS = (
    _tensor("observation/cartesian_position", 6, "End-effector xyz + Euler (base frame)."),
    _tensor("observation/joint_position", 7, "Arm joint angles in radians."),
    _tensor("observation/gripper_position", 1, "Gripper closure, 0 open ... 1 closed."),
)
ACTION_DICT_FIELDS = (
    _tensor("action_dict/cartesian_position", 6, "Commanded end-effector pose."),
    _tensor("action_dict/cartesian_velocity", 6, "Commanded normalised Cartesian velocity."),
    _tensor("action_dict/gripper_position", 1, "Commanded gripper position."),
    _tensor("action_dict/gripper_velocity", 1, "Commanded gripper velocity."),
    _tensor("action_dict/joint_position", 7, "Commanded joint positions."),
    _tensor("action_dict/joint_velocity", 7, "Commanded normalised joint velocities."),
)


def image_fields(image_shape: tuple[int, int, int] = DROID_IMAGE_SHAPE) -> tuple[Field, ...]:
    """The three camera fields at `image_shape` (DROID: 180x320x3; the sim preset: 64x64x3)."""
    return tuple(
        Field(f"observation/{name}", "image", "uint8", tuple(image_shape), "RGB camera image.")
        for name in CAMERA_NAMES
    )


def step_fields(image_shape: tuple[int, int, int] = DROID_IMAGE_SHAPE) -> tuple[Field, ...]:
    """Every per-step field of DROID's released RLDS files, in DROID's names and dtypes."""
    return (
        *image_fields(image_shape),
        *OBSERVATION_STATE_FIELDS,
        *ACTION_DICT_FIELDS,
        _tensor("action", 7, "cartesian_position (6) ++ gripper_position (1), as released."),
        Field("reward", "scalar", "float32", (), "1.0 on the last step of a success."),
        Field("discount", "scalar", "float32", (), "Always 1.0."),
        Field("is_first", "scalar", "bool"),
        Field("is_last", "scalar", "bool"),
        Field("is_terminal", "scalar", "bool"),
        Field("language_instruction", "text", "string"),
        Field("language_instruction_2", "text", "string"),
        Field("language_instruction_3", "text", "string"),
    )


DROID_EPISODE_FIELDS = (
    Field("episode_metadata/file_path", "text", "string", (), "Contains /success/ or /failure/."),
    Field("episode_metadata/recording_folderpath", "text", "string"),
)

# What vlaw adds to DROID's episode metadata. Readers treat these as optional so that real
# DROID shards (which lack them) read through the same code; defaults are derived then.
VLAW_EPISODE_FIELDS = (
    Field("episode_metadata/success", "scalar", "bool", (), "Success label (operator or sim)."),
    Field("episode_metadata/source", "text", "string", (), "real | synthetic | demo | droid."),
    Field("episode_metadata/iteration", "scalar", "int32", (), "VLAW iteration that made it."),
    Field("episode_metadata/task", "text", "string", (), "Task family, e.g. scoop."),
    Field("episode_metadata/policy_checkpoint", "text", "string", (), "Policy that acted."),
    Field("episode_metadata/reward_score", "scalar", "float32", (), "P(yes); NaN if unscored."),
    Field("episode_metadata/kept", "scalar", "bool", (), "Passed the reward threshold."),
    Field("episode_metadata/episode_id", "text", "string", (), "Unique id within the run."),
)

# "evaluate": a policy's held-out evaluation rollouts, recorded but never trained on.
# "replay": a recorded episode's actions replayed in the world model, with the recording's label
# (`vlaw.rollout.recorded_replay`).
SOURCES = ("real", "synthetic", "demo", "droid", "evaluate", "replay")


def success_from_file_path(file_path: str) -> bool:
    """DROID's only success label: a `/success/` path segment (openpi keeps `.*success.*`)."""
    return "/success/" in file_path or file_path.startswith("success/")


def policy_actions(action_dict: dict[str, np.ndarray]) -> np.ndarray:
    """pi0.5-DROID actions (T, 8) = joint_velocity (7) ++ gripper_position (1), float32."""
    return np.concatenate(
        [action_dict["action_dict/joint_velocity"], action_dict["action_dict/gripper_position"]],
        axis=-1,
    ).astype(np.float32)


def policy_state(observation: dict[str, np.ndarray]) -> np.ndarray:
    """openpi's DROID state (T, 8) = joint_position (7) ++ gripper_position (1), float32."""
    return np.concatenate(
        [observation["observation/joint_position"], observation["observation/gripper_position"]],
        axis=-1,
    ).astype(np.float32)


def world_model_poses(observation: dict[str, np.ndarray]) -> np.ndarray:
    """Ctrl-World's per-frame conditioning (T, 7): observed cartesian_position ++ gripper."""
    return np.concatenate(
        [
            observation["observation/cartesian_position"],
            observation["observation/gripper_position"],
        ],
        axis=-1,
    ).astype(np.float32)
