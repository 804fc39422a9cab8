"""The Panda's limits and the check every DROID command passes before it is sent.

A command is DROID's joint-velocity action (droid_rlds.md §3.2): 7 normalised joint velocities,
one unit meaning `MAX_JOINT_DELTA` = 0.2 rad per 1/15 s step (3 rad/s, beyond the Panda's
2.175-2.61 rad/s), which `RobotEnv` turns into the joint-position target q + 0.2 v; plus an
absolute gripper position in [0, 1]. `safe_command` clips, in order:

  1. every joint velocity to the Panda's velocity limit (less `VELOCITY_MARGIN`, as DROID's
     Polymetis configuration), in normalised units;
  2. each joint's step so the target stays within the joint position limits (less
     `POSITION_MARGIN`); a joint already outside may only move back in;
  3. the whole step, scaled down along its direction, so the tool centre point's target stays
     in the workspace box (robot base frame); from outside the box, only steps that do not
     leave it further are kept.

The numbers are the datasheet's, read from vlaw.franka (the simulated Panda and the world
model's kinematics read the same); the forward kinematics is vlaw.sim.panda's DH model of the
arm with the 2F-85's tool centre (plain numpy, no MuJoCo).
"""

import dataclasses

import numpy as np

from vlaw import franka  # the Panda's published limits, numpy only
from vlaw.sim import panda  # its DH forward kinematics to the 2F-85's tool centre

CONTROL_HZ = 15.0  # DROID's control rate
MAX_JOINT_DELTA = 0.2  # rad per step for a unit normalised joint velocity (DROID's IK solver)
POSITION_MARGIN = 0.1  # rad inside the datasheet's joint limits (DROID's Polymetis margin)
VELOCITY_MARGIN = 0.1  # rad/s under the datasheet's velocity limits (likewise)
_BISECTION_STEPS = 12  # step scale found to 2^-12 of a step


@dataclasses.dataclass(frozen=True)
class SafetyLimits:
    joint_position_min: np.ndarray  # (7,) rad
    joint_position_max: np.ndarray  # (7,) rad
    joint_velocity_max: np.ndarray  # (7,) rad/s
    workspace_min: np.ndarray  # (3,) m, tool centre point in the robot base frame
    workspace_max: np.ndarray  # (3,) m

    @property
    def normalized_velocity_max(self) -> np.ndarray:
        """The velocity limit in DROID's normalised units (< 1 on a Panda)."""
        return np.minimum(self.joint_velocity_max / (CONTROL_HZ * MAX_JOINT_DELTA), 1.0)


def panda_limits(workspace_min, workspace_max) -> SafetyLimits:
    """The Panda's joint limits with DROID's margins and the given workspace box."""
    low, high = np.asarray(workspace_min, np.float64), np.asarray(workspace_max, np.float64)
    if low.shape != (3,) or high.shape != (3,) or np.any(low >= high):
        raise ValueError(f"workspace box must be (3,) lows below (3,) highs, got {low}, {high}")
    return SafetyLimits(
        joint_position_min=franka.JOINT_POSITION_MIN + POSITION_MARGIN,
        joint_position_max=franka.JOINT_POSITION_MAX - POSITION_MARGIN,
        joint_velocity_max=franka.JOINT_VELOCITY_MAX - VELOCITY_MARGIN,
        workspace_min=low,
        workspace_max=high,
    )


def tool_position(joint_position: np.ndarray) -> np.ndarray:
    """(3,) tool centre point in the robot base frame."""
    return panda.dh_forward_kinematics(joint_position)[:3, 3]


def _box_distance(point: np.ndarray, limits: SafetyLimits) -> float:
    """How far `point` lies outside the workspace box (0 inside)."""
    below = np.maximum(limits.workspace_min - point, 0.0)
    above = np.maximum(point - limits.workspace_max, 0.0)
    return float(np.linalg.norm(below + above))


@dataclasses.dataclass(frozen=True)
class SafeCommand:
    action: np.ndarray  # (8,) what may be sent
    clipped: tuple[str, ...]  # which limits changed it ("velocity", "joint_position", ...)


def safe_command(action, joint_position, limits: SafetyLimits) -> SafeCommand:
    """The command that may be sent from `joint_position` (see the module docstring). Raises
    ValueError on a non-finite or misshaped action: it is never sent, clipped or not."""
    action = np.asarray(action, np.float64)
    q = np.asarray(joint_position, np.float64)
    if action.shape != (8,) or not np.all(np.isfinite(action)):
        raise ValueError(f"refusing command {action}: not 8 finite numbers")
    if q.shape != (7,) or not np.all(np.isfinite(q)):
        raise ValueError(f"refusing to command from joint position {q}")
    clipped = []
    velocity = np.clip(action[:7], -1.0, 1.0)
    bound = limits.normalized_velocity_max
    limited = np.clip(velocity, -bound, bound)
    if not np.array_equal(limited, action[:7]):
        clipped.append("velocity")
    velocity = limited

    room_up = np.maximum(limits.joint_position_max - q, 0.0) / MAX_JOINT_DELTA
    room_down = np.minimum(limits.joint_position_min - q, 0.0) / MAX_JOINT_DELTA
    limited = np.clip(velocity, room_down, room_up)
    if not np.array_equal(limited, velocity):
        clipped.append("joint_position")
    velocity = limited

    here = _box_distance(tool_position(q), limits)

    def allowed(scale: float) -> bool:
        there = _box_distance(tool_position(q + scale * MAX_JOINT_DELTA * velocity), limits)
        return there == 0.0 or there <= here

    if not allowed(1.0):
        low, high = 0.0, 1.0  # allowed(0) holds: staying put never leaves the box further
        for _ in range(_BISECTION_STEPS):
            middle = (low + high) / 2
            low, high = (middle, high) if allowed(middle) else (low, middle)
        velocity = low * velocity
        clipped.append("workspace")
    gripper = float(np.clip(action[7], 0.0, 1.0))
    if gripper != action[7]:
        clipped.append("gripper")
    return SafeCommand(np.append(velocity, gripper), tuple(clipped))
