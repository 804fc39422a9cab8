"""Scripted experts: task waypoints followed by operational-space control, emitted in DROID's
action space (normalised joint velocities + gripper position), with a noise knob.

Control law per 15 Hz step: the tool-centre-point error (position, and orientation as a
rotation vector) becomes a Cartesian twist limited in speed; MuJoCo's site Jacobian
(`mj_jacSite`) maps it to joint velocities by damped least squares, plus a null-space pull
towards DROID's reset posture (keeps the elbow away from limits); the joint velocity times the
step length, over 0.2 rad, is the normalised action.

Noise (knob `noise` >= 0, the sim preset uses 0.3): each waypoint's target is offset by
N(0, (0.02 m * noise)^2) per axis (kept until the next waypoint that resamples it; only along
the surface for waypoints pressed onto one), and the arm action gets N(0, (0.15 * noise)^2)
per joint (a third of that while pressing on a surface), before the low-pass of the command
(`COMMAND_SMOOTHING`). Noise 0 gives near-perfect
demonstrations; measured success rates per noise level are in benchmarks/RESULTS.md.

Corrections (`corrections=True`, DART: Laskey et al. 2017): the noisy action is executed but
the action to record (`recorded`) is the noise-free expert's at the state the noise led to:
towards the waypoint without its offset, with no action noise, low-passed on its own history.
Noise-free demos only visit the expert's own path, so a policy that strays from it by a
centimetre has never seen the way back; these show it.
"""

from collections.abc import Iterator

import mujoco
import numpy as np

from vlaw.sim import panda, scene
from vlaw.sim.tasks.base import Waypoint

STEP_SECONDS = 1.0 / scene.CONTROL_HZ
POSITION_GAIN = 0.5  # fraction of the position error removed per step (before speed limits)
ROTATION_GAIN = 0.5
MAX_ROTATION_SPEED = 2.0  # rad/s
DAMPING = 1e-3  # damped least squares regulariser (m^2)
NULLSPACE_GAIN = 0.1
WAYPOINT_NOISE_M = 0.02
ACTION_NOISE = 0.15
CONTACT_STEADINESS = 0.3  # action noise factor on waypoints pressed onto a surface
# Each arm command keeps this fraction of the previous one (a first-order low-pass, as a human
# hand or a trajectory generator moves). Without it the closed loop reacts every step to joint
# velocities no observation shows: at gain 0.8 and no low-pass, 19-24 % of the arm commands'
# variance was step-to-step (outside a 5-step moving average) and a policy could not fit its
# own demos (issue 13). Gain 0.5 with 0.4 leaves 4-8 % per task at noise 0 and keeps the
# expert's success; 0.5 made erase fail (the lag overshoots its strokes). Measured in
# benchmarks/RESULTS.md, "A smoother expert".
COMMAND_SMOOTHING = 0.4


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame) taking `current` (3, 3) to `target` (3, 3)."""
    quaternion = np.zeros(4)
    mujoco.mju_mat2Quat(quaternion, (target @ current.T).ravel())
    if quaternion[0] < 0:  # the same rotation; this sign gives the short way round
        quaternion = -quaternion
    velocity = np.zeros(3)
    mujoco.mju_quat2Vel(velocity, quaternion, 1.0)
    return velocity


def operational_space_action(
    station, position: np.ndarray, rotation: np.ndarray, max_speed: float
) -> np.ndarray:
    """(7,) normalised joint velocities moving the TCP towards (position, rotation)."""
    model, data = station.model, station.data
    tcp_position, tcp_rotation = station.tcp_pose()
    linear = (position - tcp_position) * POSITION_GAIN / STEP_SECONDS
    speed = np.linalg.norm(linear)
    if speed > max_speed:
        linear *= max_speed / speed
    angular = rotation_error(tcp_rotation, rotation) * ROTATION_GAIN / STEP_SECONDS
    angular_speed = np.linalg.norm(angular)
    if angular_speed > MAX_ROTATION_SPEED:
        angular *= MAX_ROTATION_SPEED / angular_speed
    jacobian_position = np.zeros((3, model.nv))
    jacobian_rotation = np.zeros((3, model.nv))
    mujoco.mj_jacSite(model, data, jacobian_position, jacobian_rotation, station.tcp_site)
    jacobian = np.vstack([jacobian_position, jacobian_rotation])[:, station.arm_dof]
    twist = np.concatenate([linear, angular])
    gram = jacobian @ jacobian.T + DAMPING * np.eye(6)
    pseudo_inverse = jacobian.T @ np.linalg.solve(gram, np.eye(6))
    joint_velocity = pseudo_inverse @ twist
    posture = (panda.HOME_JOINT_POSITION - station.joint_position) * NULLSPACE_GAIN / STEP_SECONDS
    joint_velocity += (np.eye(7) - pseudo_inverse @ jacobian) @ posture
    action = joint_velocity * STEP_SECONDS / 0.2
    # Scale the whole vector into [-1, 1] (as DROID's controller does): clipping each joint
    # alone would bend the direction of motion.
    return action / max(1.0, np.abs(action).max())


class ScriptedExpert:
    """Follows a waypoint plan on one SimStation; `act()` -> (8,) action or None (done).

    The plan is the task's expert (`station.task.plan(station)`) unless another generator of
    waypoints is given (the adversarial policies of vlaw/sim/adversaries.py)."""

    def __init__(
        self,
        station,
        noise: float = 0.0,
        seed: int = 0,
        plan: Iterator[Waypoint] | None = None,
        corrections: bool = False,
    ):
        self.station = station
        self.noise = float(noise)
        self.corrections = bool(corrections)
        # The (8,) action to record for the last `act()`: the executed one, or the correction.
        self.recorded: np.ndarray | None = None
        self._previous_correction = np.zeros(7)
        self.rng = np.random.default_rng(seed)
        self.plan = station.task.plan(station) if plan is None else plan
        self.offset = np.zeros(3)
        self.waypoint: Waypoint | None = None
        self.steps_on_waypoint = 0
        self.done = False
        self.previous_arm = np.zeros(7)  # the robot starts at rest
        self._next_waypoint()

    def _next_waypoint(self) -> None:
        self.waypoint = next(self.plan, None)
        self.steps_on_waypoint = 0
        if self.waypoint is None:
            self.done = True
        elif self.waypoint.noisy:
            self.offset = self.rng.normal(0.0, WAYPOINT_NOISE_M * self.noise, 3)
            if self.waypoint.planar:  # pressing on a surface: misplaced along it, not into it
                self.offset[2] = 0.0

    def _reached(self) -> bool:
        waypoint = self.waypoint
        tcp_position, tcp_rotation = self.station.tcp_pose()
        error = waypoint.position + self.offset - tcp_position
        if waypoint.planar:
            error = error[:2]
        turned = np.linalg.norm(rotation_error(tcp_rotation, waypoint.tool_rotation()))
        close = np.linalg.norm(error) < waypoint.tolerance and (
            waypoint.tolerance >= 1.0 or turned < waypoint.rotation_tolerance
        )
        if self.steps_on_waypoint >= waypoint.max_steps:
            return True
        return close and self.steps_on_waypoint >= waypoint.min_steps

    def act(self) -> np.ndarray | None:
        """The next action (8,) to execute, or None once the plan is finished."""
        while not self.done and self._reached():
            self._next_waypoint()
        if self.done:
            self.recorded = None
            return None
        waypoint = self.waypoint
        self.steps_on_waypoint += 1
        arm = operational_space_action(
            self.station,
            waypoint.position + self.offset,
            waypoint.tool_rotation(),
            waypoint.max_speed,
        )
        # A demonstrator steadies the hand while pressing on a surface (drawing, wiping).
        steadiness = CONTACT_STEADINESS if waypoint.planar else 1.0
        arm = arm + self.rng.normal(0.0, ACTION_NOISE * self.noise * steadiness, 7)
        # Filtered after the noise, so a tremor is smooth too.
        arm = COMMAND_SMOOTHING * self.previous_arm + (1.0 - COMMAND_SMOOTHING) * arm
        self.previous_arm = np.clip(arm, -1.0, 1.0)
        executed = np.concatenate([self.previous_arm, [waypoint.gripper]])
        self.recorded = executed
        if self.corrections:
            clean = operational_space_action(
                self.station, waypoint.position, waypoint.tool_rotation(), waypoint.max_speed
            )
            smoothed = COMMAND_SMOOTHING * self._previous_correction
            self._previous_correction = np.clip(smoothed + (1.0 - COMMAND_SMOOTHING) * clean, -1, 1)
            self.recorded = np.concatenate([self._previous_correction, [waypoint.gripper]])
        return executed
