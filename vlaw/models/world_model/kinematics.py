"""From π0.5's joint velocities to the world model's poses: integration + Franka kinematics.

π0.5-DROID emits normalised joint velocities (7) and an absolute gripper position at 15 Hz;
Ctrl-World conditions on absolute end-effector poses (xyz + Euler 'xyz' + gripper, 7-d). The
conversion (Ctrl-World `scripts/rollout_interact_pi.py` + `models/utils.py get_fk_solution`,
ctrl_world.md §1.4):

1. Integrate from the current joint state: one unit of normalised velocity is 0.2 rad per
   15 Hz step (DROID's joint-velocity action space), q_{k+1} = q_k + 0.2 v_k. (Ctrl-World uses a
   small learned "action adapter" MLP for this step; the adapter's weights are specific to the
   real robot's tracking, so vlaw integrates the commanded velocities directly.)
2. Franka forward kinematics from the published modified (Craig) DH parameters
   (a, d, alpha per joint): (0, 0.333, 0), (0, 0, -pi/2), (0, 0.316, pi/2), (0.0825, 0, pi/2),
   (-0.0825, 0.384, -pi/2), (0, 0, pi/2), (0.088, 0, pi/2); then the flange d = 0.107.
   Ctrl-World's `get_fk_solution` lists two more rows (a -pi/4 rotation about z and a 0.1034 m
   tool offset) but its loop runs over `range(7 + 1)`, so only the joints and the flange are
   applied: its poses are flange poses, which is also what DROID records as
   `cartesian_position` (a third-party DROID port reports ~1e-8 agreement without the tool
   rows and ~0.1 m / 45 deg error with them). Hence `include_tool=False` by default;
   `include_tool=True` adds the listed tool frame.
3. Orientation as scipy's `Rotation.as_euler('xyz')` (extrinsic x, y, z: R = Rz(c) Ry(b) Rx(a)).

Shapes: joint positions (..., 7); poses (..., 7) = xyz, Euler xyz, gripper. Pure jnp, so it
jits and vmaps inside the imagination loop.

The `imagine` phase executes the policy's velocities as a Franka would instead
(`integrate_joint_velocities`: per-step deltas within the datasheet velocity and position
limits) and poses the frame each station records as `cartesian_position`
(`station_tool_transform`, `end_effector_poses`). No MuJoCo here: the limits and the
simulator's tool frame come from vlaw.franka, which is plain numpy.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vlaw import franka  # numpy only: the Panda's DH table, datasheet limits and the sim's TCP
from vlaw.data.droid import FRAME_RATE_HZ

# Modified DH rows (a, d, alpha) of the Franka Emika Panda / FR3 joints 1..7, metres / radians.
FRANKA_DH = franka.DH_ROWS
FLANGE_D = franka.FLANGE_D
TOOL_ROTATION = franka.HAND_YAW  # about the flange z axis
TOOL_D = franka.FRANKA_HAND_TCP_D
RAD_PER_UNIT_VELOCITY = 0.2  # normalised joint velocity 1 <-> 0.2 rad per 15 Hz step


def _dh(a: float, d: float, alpha: float, theta: jax.Array) -> jax.Array:
    """Modified-DH link transform Rx(alpha) Tx(a) Rz(theta) Tz(d): (...,) -> (..., 4, 4)."""
    ct, st = jnp.cos(theta), jnp.sin(theta)
    ca, sa = math.cos(alpha), math.sin(alpha)
    zero, one = jnp.zeros_like(theta), jnp.ones_like(theta)
    rows = [
        [ct, -st, zero, zero + a],
        [st * ca, ct * ca, zero - sa, zero - sa * d],
        [st * sa, ct * sa, zero + ca, zero + ca * d],
        [zero, zero, zero, one],
    ]
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def franka_forward_kinematics(joints: jax.Array, include_tool: bool = False) -> jax.Array:
    """Joint angles (..., 7) -> base-from-end-effector transform (..., 4, 4)."""
    joints = jnp.asarray(joints, jnp.float32)
    t = jnp.broadcast_to(jnp.eye(4, dtype=joints.dtype), (*joints.shape[:-1], 4, 4))
    for i, (a, d, alpha) in enumerate(FRANKA_DH):
        t = t @ _dh(a, d, alpha, joints[..., i])
    zero = jnp.zeros(joints.shape[:-1], joints.dtype)
    t = t @ _dh(0.0, FLANGE_D, 0.0, zero)
    if include_tool:
        t = t @ _dh(0.0, TOOL_D, 0.0, zero + TOOL_ROTATION)
    return t


def euler_xyz(rotation: jax.Array) -> jax.Array:
    """Rotation matrices (..., 3, 3) -> scipy `as_euler('xyz')` angles (..., 3), extrinsic.

    R = Rz(c) Ry(b) Rx(a): a = atan2(R21, R22), b = atan2(-R20, hypot(R00, R10)),
    c = atan2(R10, R00) (gimbal lock at |b| = pi/2 never happens for DROID's downward gripper).
    """
    r = rotation
    a = jnp.arctan2(r[..., 2, 1], r[..., 2, 2])
    b = jnp.arctan2(-r[..., 2, 0], jnp.hypot(r[..., 0, 0], r[..., 1, 0]))
    c = jnp.arctan2(r[..., 1, 0], r[..., 0, 0])
    return jnp.stack([a, b, c], axis=-1)


def pose_from_joints(joints: jax.Array, gripper: jax.Array, include_tool: bool = False):
    """Joints (..., 7), gripper (..., 1) -> pose (..., 7) = xyz, Euler xyz, gripper."""
    t = franka_forward_kinematics(joints, include_tool)
    return jnp.concatenate([t[..., :3, 3], euler_xyz(t[..., :3, :3]), gripper], axis=-1)


def poses_from_joint_velocities(
    joint_position: jax.Array,
    gripper_position: jax.Array,
    joint_velocities: jax.Array,
    gripper_commands: jax.Array,
    *,
    gripper_max: float = 1.0,
    include_tool: bool = False,
) -> jax.Array:
    """Integrate a velocity chunk from the current state and return the pose of every state.

    Shapes: joint_position (B, 7) and gripper_position (B, 1) now; joint_velocities (B, K, 7)
    normalised; gripper_commands (B, K, 1) absolute -> poses (B, K + 1, 7), pose 0 being the
    current state. Ctrl-World then keeps every `policy_skip_step`-th pose (2 or 3) and the first
    `num_future` of them as one chunk (`poses[:, ::skip][:, :5]`). Grippers are clipped to
    [0, gripper_max] (Ctrl-World: task-specific 0.75..1.0).
    """
    deltas = RAD_PER_UNIT_VELOCITY * joint_velocities
    joints = jnp.concatenate(
        [joint_position[:, None], joint_position[:, None] + jnp.cumsum(deltas, axis=1)], axis=1
    )
    grippers = jnp.concatenate([gripper_position[:, None], gripper_commands], axis=1)
    return pose_from_joints(joints, jnp.clip(grippers, 0.0, gripper_max), include_tool)


def integrate_joint_velocities(joint_position: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """Normalised joint velocities executed as a Franka would: each 15 Hz step moves the joints
    by 0.2 v within the datasheet velocity limit, then within the position limits (unlike
    `poses_from_joint_velocities`, which integrates without limits as Ctrl-World does).
    (B, 7), (B, K, 7) -> joints (B, K + 1, 7) float64, the first the given ones."""
    max_delta = franka.JOINT_VELOCITY_MAX / FRAME_RATE_HZ
    joints = [np.asarray(joint_position, np.float64)]
    for k in range(velocities.shape[1]):
        delta = np.clip(RAD_PER_UNIT_VELOCITY * velocities[:, k], -max_delta, max_delta)
        joints.append(
            np.clip(joints[-1] + delta, franka.JOINT_POSITION_MIN, franka.JOINT_POSITION_MAX)
        )
    return np.stack(joints, axis=1)


def station_tool_transform(simulated: bool) -> np.ndarray:
    """(4, 4) flange -> the frame whose pose a station records as `cartesian_position`: the
    simulator's TCP (vlaw/sim/franka.py) when `simulated`, else the flange itself, as DROID
    records it."""
    tool = np.eye(4, dtype=np.float32)
    if simulated:
        c, s = np.cos(franka.HAND_YAW), np.sin(franka.HAND_YAW)
        tool[:2, :2] = [[c, -s], [s, c]]
        tool[2, 3] = franka.TCP_OFFSET
    return tool


@jax.jit
def end_effector_poses(joints: jax.Array, grippers: jax.Array, tool: jax.Array) -> jax.Array:
    """Joints (..., 7), grippers (..., 1), tool (4, 4) (`station_tool_transform`) -> poses
    (..., 7): xyz, Euler xyz (scipy's extrinsic 'xyz', as the stations record), gripper."""
    t = franka_forward_kinematics(joints) @ tool
    rotation = euler_xyz(t[..., :3, :3])
    return jnp.concatenate([t[..., :3, 3], rotation, grippers.astype(t.dtype)], axis=-1)
