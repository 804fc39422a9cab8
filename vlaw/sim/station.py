"""The simulated DROID station: one MuJoCo scene per station, stepped as a batch and rendered
into one tiled framebuffer.

Action handling follows DROID's `RobotEnv(action_space="joint_velocity",
gripper_action_space="position")` (droid_rlds.md §3.2): a normalised joint velocity v in [-1, 1]
becomes a joint-position target q + 0.2 v for the next 1/15 s, clamped to the Panda's velocity
limits (|dq| <= v_max / 15, with a margin) and position limits (slowing down near them), and
tracked by joint servos: a position servo on the target, ramped over the 16 substeps as Franka's
1 kHz controller interpolates, plus a velocity servo on the commanded joint velocity (so the arm
does not lag its command). The gripper command is an absolute position in [0, 1] (0 open).

`SimStation` is one station (physics, state, task); `SimStationBatch` steps B of them and renders
them together. Both implement vlaw.rollout.station's protocols.
"""

import copy
from collections.abc import Sequence

import mujoco
import numpy as np

from vlaw.data import droid
from vlaw.rollout.station import Observation, StepRecord, TaskSpec, validate_action_chunk
from vlaw.sim import panda, scene
from vlaw.sim.render import TiledRenderer
from vlaw.sim.tasks import TASKS, Task, make_task

JOINT_DELTA_PER_UNIT = 0.2  # rad per step for a normalised joint velocity of 1 (DROID)
# rad per step: the datasheet velocity limits, less a margin for the servos' overshoot (<10%).
MAX_JOINT_DELTA = 0.88 * panda.JOINT_VELOCITY_MAX / scene.CONTROL_HZ
LIMIT_MARGIN = 0.02  # rad kept from the hard joint limits by the target clamp
LIMIT_APPROACH = 0.5  # fraction of the distance to a limit allowed per step
RAMP_CHUNKS = 4  # the target is ramped in this many pieces over the 16 substeps
SETTLE_SECONDS = 0.4  # objects settle under gravity after a reset, before the first frame
HOLD_SECONDS = 0.5  # Appendix B's "short holding period" simulated before judging success
VELOCITY_CTRL = slice(8, 15)  # ctrl indices of the joint velocity servos (panda.py)
HOME_JOINT_NOISE = 0.04  # rad: reset pose jitter per seed (DROID can randomise its reset)


def refresh_positions(model: mujoco.MjModel, data: mujoco.MjData) -> None:
    """Recomputes what MuJoCo derives from `qpos`: body, site and camera poses, and the com
    quantities that site Jacobians read.

    `mj_step` computes these before it integrates, so after a step they describe the state one
    substep earlier (up to ~9 mm of TCP motion per 15 Hz step). Observations, the expert's
    Jacobian and the rendered cameras must describe the state the step ended in. ~5 us, against
    ~6 ms per control step. Contacts (ink bookkeeping, the success test) stay as the physics
    step found them: `mj_fwdPosition` would redo collision detection for ~200 us.
    """
    mujoco.mj_kinematics(model, data)
    mujoco.mj_comPos(model, data)
    mujoco.mj_camlight(model, data)


def euler_xyz_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Extrinsic x-y-z Euler angles (roll, pitch, yaw) with R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r = rotation
    pitch = -np.arcsin(np.clip(r[2, 0], -1.0, 1.0))
    roll = np.arctan2(r[2, 1], r[2, 2])
    yaw = np.arctan2(r[1, 0], r[0, 0])
    return np.array([roll, pitch, yaw])


def validate_action(action) -> np.ndarray:
    """One step's action as (8,) float64: 7 normalised joint velocities and the gripper
    position. Raises ValueError for another shape or a non-finite value: MuJoCo would zero every
    control of a step with a NaN in it (the gripper snapping shut) and record NaN state."""
    action = np.asarray(action, dtype=np.float64)
    if action.shape != (droid.POLICY_ACTION_DIM,):
        raise ValueError(
            f"an action must have shape ({droid.POLICY_ACTION_DIM},) (7 normalised joint "
            f"velocities + gripper position), got {action.shape}"
        )
    if not np.all(np.isfinite(action)):
        raise ValueError(f"action has non-finite values: {action}")
    return action


class SimStation:
    """One simulated station: physics, state and task. `SimStationBatch` renders it."""

    def __init__(self, task_name: str, layout_spread: float = 1.0):
        if task_name not in TASKS:
            raise ValueError(f"unknown task {task_name!r}; choose from {sorted(TASKS)}")
        self.task_name = task_name
        self.model = TASKS[task_name].build_model()
        self.data = mujoco.MjData(self.model)
        self._scratch = mujoco.MjData(self.model)  # forward kinematics of commanded targets
        self.arm_qpos = np.array([self.model.joint(n).qposadr[0] for n in panda.ARM_JOINT_NAMES])
        self.arm_dof = np.array([self.model.joint(n).dofadr[0] for n in panda.ARM_JOINT_NAMES])
        self.finger_qpos = self.model.joint("finger_left").qposadr[0]
        self.tcp_site = self.model.site(panda.TCP_SITE).id
        self.layout_spread = layout_spread  # of the task's layout variety (`Task.uniform`)
        self.task: Task = make_task(task_name, layout_spread)
        self.instruction = ""
        self.seed = 0
        self.images: dict[str, np.ndarray] = {}

    # --- state -----------------------------------------------------------------------------
    @property
    def joint_position(self) -> np.ndarray:
        return self.data.qpos[self.arm_qpos].copy()

    @property
    def gripper_position(self) -> float:
        return panda.gripper_position_from_opening(self.data.qpos[self.finger_qpos])

    def tcp_pose(self, data: mujoco.MjData | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), rotation (3, 3)) of the tool centre point in the base frame."""
        data = self.data if data is None else data
        return data.site_xpos[self.tcp_site].copy(), data.site_xmat[self.tcp_site].reshape(
            3, 3
        ).copy()

    def cartesian_position(self, data: mujoco.MjData | None = None) -> np.ndarray:
        position, rotation = self.tcp_pose(data)
        return np.concatenate([position, euler_xyz_from_matrix(rotation)])

    def observation(self) -> Observation:
        return Observation(
            images=dict(self.images),
            joint_position=self.joint_position,
            gripper_position=np.array([self.gripper_position]),
            cartesian_position=self.cartesian_position(),
            instruction=self.instruction,
        )

    # --- episode ---------------------------------------------------------------------------
    def reset(self, spec: TaskSpec) -> None:
        """Deterministic in `spec.seed`: the layout, the instruction and the reset pose."""
        if spec.task != self.task_name:
            raise ValueError(f"station built for {self.task_name!r} got task {spec.task!r}")
        rng = np.random.default_rng(spec.seed)
        self.seed = spec.seed
        self.task = make_task(self.task_name, self.layout_spread)
        mujoco.mj_resetData(self.model, self.data)
        home = panda.HOME_JOINT_POSITION + rng.uniform(-1, 1, 7) * HOME_JOINT_NOISE
        self.data.qpos[self.arm_qpos] = home
        self.data.qpos[self.finger_qpos] = panda.FINGER_TRAVEL
        self.data.qpos[self.model.joint("finger_right").qposadr[0]] = panda.FINGER_TRAVEL
        self.data.ctrl[:7] = home
        self.data.ctrl[7] = panda.FINGER_TRAVEL
        self.data.ctrl[VELOCITY_CTRL] = 0.0
        instruction = self.task.reset(self.model, self.data, rng)
        self.instruction = spec.instruction or instruction
        mujoco.mj_forward(self.model, self.data)
        settle_steps = int(SETTLE_SECONDS / self.model.opt.timestep)
        mujoco.mj_step(self.model, self.data, nstep=settle_steps)
        self.task.after_settle(self.model, self.data)
        refresh_positions(self.model, self.data)

    def apply_action(self, action: np.ndarray) -> StepRecord:
        """Executes one (8,) action for 1/15 s; returns (observation before, command).
        Raises ValueError (before touching the simulator) for an invalid action."""
        action = validate_action(action)
        before = self.observation()
        joint_now = before.joint_position
        target = self._joint_target(joint_now, action)
        gripper = float(np.clip(action[7], 0.0, 1.0))
        self.data.ctrl[7] = panda.gripper_opening_from_position(gripper)
        substeps = scene.PHYSICS_SUBSTEPS // RAMP_CHUNKS
        self.data.ctrl[VELOCITY_CTRL] = (target - joint_now) * scene.CONTROL_HZ
        for piece in range(1, RAMP_CHUNKS + 1):
            self.data.ctrl[:7] = joint_now + (target - joint_now) * piece / RAMP_CHUNKS
            mujoco.mj_step(self.model, self.data, nstep=substeps)
            self.task.after_substeps(self.model, self.data)
        refresh_positions(self.model, self.data)
        return StepRecord(before, self._action_dict(before, target, gripper))

    def command_record(self, action: np.ndarray) -> dict:
        """The action dict that commanding (8,) `action` now would record; nothing moves.
        (A scripted expert's correction is recorded this way while another action executes.)"""
        action = validate_action(action)
        before = self.observation()
        target = self._joint_target(before.joint_position, action)
        return self._action_dict(before, target, float(np.clip(action[7], 0.0, 1.0)))

    def _joint_target(self, joint_now: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The joint positions one step of `action` commands from `joint_now`."""
        velocity = np.clip(action[:7], -1.0, 1.0)
        delta = np.clip(velocity * JOINT_DELTA_PER_UNIT, -MAX_JOINT_DELTA, MAX_JOINT_DELTA)
        # Approach a position limit by halving the remaining distance each step, so the joint
        # decelerates instead of hitting the hard stop at full speed.
        room_up = np.maximum(panda.JOINT_POSITION_MAX - LIMIT_MARGIN - joint_now, 0.0)
        room_down = np.maximum(joint_now - panda.JOINT_POSITION_MIN - LIMIT_MARGIN, 0.0)
        delta = np.clip(delta, -LIMIT_APPROACH * room_down, LIMIT_APPROACH * room_up)
        return np.clip(
            joint_now + delta,
            panda.JOINT_POSITION_MIN + LIMIT_MARGIN,
            panda.JOINT_POSITION_MAX - LIMIT_MARGIN,
        )

    def _action_dict(self, before: Observation, target: np.ndarray, gripper: float) -> dict:
        """DROID's six commanded quantities for a step (droid_rlds.md §1.4, §3.2)."""
        self._scratch.qpos[:] = self.data.qpos
        self._scratch.qpos[self.arm_qpos] = target
        mujoco.mj_kinematics(self.model, self._scratch)
        commanded_pose = self.cartesian_position(self._scratch)
        pose_delta = commanded_pose - before.cartesian_position
        pose_delta[3:] = (pose_delta[3:] + np.pi) % (2 * np.pi) - np.pi
        linear, angular = droid.CARTESIAN_DELTA_PER_UNIT
        cartesian_velocity = np.concatenate([pose_delta[:3] / linear, pose_delta[3:] / angular])
        gripper_velocity = (gripper - before.gripper_position[0]) / droid.GRIPPER_DELTA_PER_UNIT
        return {
            "cartesian_position": commanded_pose,
            "cartesian_velocity": np.clip(cartesian_velocity, -1.0, 1.0),
            "gripper_position": np.array([gripper]),
            "gripper_velocity": np.clip(np.array([gripper_velocity]), -1.0, 1.0),
            "joint_position": target,
            "joint_velocity": (target - before.joint_position) / JOINT_DELTA_PER_UNIT,
        }

    def label(self) -> bool:
        """Appendix B success, judged after a short hold with the last command kept."""
        data = copy.copy(self.data)
        data.ctrl[VELOCITY_CTRL] = 0.0  # hold still
        data.ctrl[:7] = data.qpos[self.arm_qpos]
        task = copy.deepcopy(self.task)
        hold_steps = int(HOLD_SECONDS / self.model.opt.timestep)
        mujoco.mj_step(self.model, data, nstep=hold_steps)
        refresh_positions(self.model, data)
        return bool(task.success(self.model, data))


class SimStationBatch:
    """B simulated stations stepped together and rendered with one read-back per step.

    Implements `vlaw.rollout.station.StationBatch`. Stations may run different tasks; a station
    is bound to the task it was built for (`task_names`).
    """

    def __init__(
        self,
        task_names: Sequence[str],
        image_height: int = 64,
        image_width: int = 64,
        layout_spread: float = 1.0,
    ):
        self.stations = [SimStation(name, layout_spread) for name in task_names]
        self.image_shape = (image_height, image_width, 3)
        self.renderer = TiledRenderer(
            [s.model for s in self.stations], image_height, image_width, droid.CAMERA_NAMES
        )

    @property
    def batch_size(self) -> int:
        return len(self.stations)

    def render(self, active: Sequence[bool] | None = None) -> None:
        """Refreshes every (active) station's camera images."""
        frames = self.renderer.render(
            [s.model for s in self.stations],
            [s.data for s in self.stations],
            [s.task.decorations for s in self.stations],
            active,
        )
        for b, station in enumerate(self.stations):
            if active is None or active[b]:
                station.images = {name: frames[b, c] for c, name in enumerate(droid.CAMERA_NAMES)}

    def reset(self, tasks: Sequence[TaskSpec]) -> list[Observation]:
        if len(tasks) != self.batch_size:
            raise ValueError(f"{len(tasks)} task specs for {self.batch_size} stations")
        for station, spec in zip(self.stations, tasks):
            station.reset(spec)
        self.render()
        return self.observe()

    def observe(self) -> list[Observation]:
        return [s.observation() for s in self.stations]

    def step(
        self, actions: np.ndarray, active: Sequence[bool] | None = None
    ) -> list[StepRecord | None]:
        """One control step of every active station: (B, 8) actions; None for inactive ones.
        Every active station's action is checked before any station moves."""
        actions = np.asarray(actions, np.float64)
        if actions.shape != (self.batch_size, droid.POLICY_ACTION_DIM):
            raise ValueError(
                f"expected ({self.batch_size}, {droid.POLICY_ACTION_DIM}) actions, "
                f"got {actions.shape}"
            )
        if active is not None and len(active) != self.batch_size:
            raise ValueError(f"{len(active)} active flags for {self.batch_size} stations")
        for b in range(self.batch_size):
            if active is None or active[b]:
                validate_action(actions[b])
        records: list[StepRecord | None] = []
        for b, station in enumerate(self.stations):
            if active is not None and not active[b]:
                records.append(None)
                continue
            records.append(station.apply_action(actions[b]))
        self.render(active)
        return records

    def act(self, action_chunks: np.ndarray) -> list[list[StepRecord]]:
        chunks = np.asarray(action_chunks, np.float64)
        if chunks.ndim != 3 or chunks.shape[0] != self.batch_size:
            raise ValueError(f"expected ({self.batch_size}, T, 8) actions, got {chunks.shape}")
        for chunk in chunks:
            validate_action_chunk(chunk)
        records: list[list[StepRecord]] = [[] for _ in self.stations]
        for t in range(chunks.shape[1]):
            for b, record in enumerate(self.step(chunks[:, t])):
                records[b].append(record)
        return records

    def label(self) -> list[bool]:
        return [s.label() for s in self.stations]

    def close(self) -> None:
        self.renderer.close()


class SingleSimStation:
    """`vlaw.rollout.station.Station` over a batch of one (its own renderer)."""

    def __init__(
        self,
        task_name: str,
        image_height: int = 64,
        image_width: int = 64,
        layout_spread: float = 1.0,
    ):
        self.batch = SimStationBatch([task_name], image_height, image_width, layout_spread)
        self.station = self.batch.stations[0]

    def reset(self, task: TaskSpec) -> Observation:
        return self.batch.reset([task])[0]

    def observe(self) -> Observation:
        return self.batch.observe()[0]

    def act(self, action_chunk: np.ndarray) -> list[StepRecord]:
        return self.batch.act(validate_action_chunk(action_chunk)[None])[0]

    def label(self) -> bool:
        return self.batch.label()[0]

    def close(self) -> None:
        self.batch.close()
