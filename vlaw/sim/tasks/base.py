"""What every simulated task provides, and the expert's waypoint vocabulary.

A task contributes MJCF (its objects), randomises them per seed, keeps any state that is not in
MuJoCo's (marker ink, pen traces), decides success from simulator state with the paper's
Appendix B criteria, and scripts an expert as a generator of end-effector waypoints that reads
the simulator when it resumes (so each waypoint is planned from the state it starts in).
"""

import abc
import dataclasses
from collections.abc import Iterator, Sequence

import mujoco
import numpy as np

from vlaw.sim import scene
from vlaw.sim.render import Decoration

# Orientation of the tool frame pointing straight down (z down, x along world x).
TOOL_DOWN = np.diag([1.0, -1.0, -1.0])
HOME_YAW = np.pi / 4  # the hand's yaw at DROID's reset pose (the hand sits at -45 deg)


def rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def tool_rotation(yaw: float, tilt: float = 0.0) -> np.ndarray:
    """Tool pointing down, turned by `yaw` about world z, tilted by `tilt` about its own x.

    The fingers close along the tool's y axis, so an object held across the fingers lies along
    the tool's x axis and `tilt` rolls it about its own length (pouring)."""
    return rot_z(yaw) @ TOOL_DOWN @ rot_x(tilt)


@dataclasses.dataclass
class Waypoint:
    """A target for the tool centre point, and when to move on to the next one."""

    position: np.ndarray  # (3,) metres, base frame
    yaw: float = HOME_YAW  # radians about world z
    gripper: float = 0.0  # 0 open ... 1 closed
    tilt: float = 0.0  # radians about the tool's x axis
    tolerance: float = 0.012  # metres: reached when closer than this ...
    rotation_tolerance: float = 0.25  # ... and turned to within this many radians ...
    min_steps: int = 0  # ... and after at least this many steps (let the gripper close)
    max_steps: int = 40  # give up and move on after this many steps
    max_speed: float = 0.8  # m/s
    noisy: bool = True  # draw a new noise offset for this waypoint (else keep the last one)
    rotation: np.ndarray | None = None  # (3, 3) full tool orientation; overrides yaw and tilt
    planar: bool = False  # measure `tolerance` in x-y only (targets pressed into a surface)

    def tool_rotation(self) -> np.ndarray:
        return self.rotation if self.rotation is not None else tool_rotation(self.yaw, self.tilt)


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by `angle` about the unit vector `axis`."""
    quaternion = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quaternion, np.asarray(axis, np.float64), float(angle))
    matrix = np.zeros(9)
    mujoco.mju_quat2Mat(matrix, quaternion)
    return matrix.reshape(3, 3)


def grasp_yaw(object_yaw: float, symmetry: float = np.pi / 2) -> float:
    """The hand yaw closest to the reset yaw that lines the fingers up with an object's faces."""
    candidates = object_yaw + symmetry * np.arange(-4, 5)
    return float(candidates[np.argmin(np.abs(candidates - HOME_YAW))])


def yaw_of(rotation: np.ndarray) -> float:
    return float(np.arctan2(rotation[1, 0], rotation[0, 0]))


def free_joint_pose(model: mujoco.MjModel, data: mujoco.MjData, joint: str, position, yaw=0.0):
    """Places a free joint's body at `position` (3,) with heading `yaw`, at rest."""
    address = model.joint(joint).qposadr[0]
    data.qpos[address : address + 3] = position
    data.qpos[address + 3 : address + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
    dof = model.joint(joint).dofadr[0]
    data.qvel[dof : dof + 6] = 0.0


def sample_separated(
    rng: np.random.Generator,
    count: int,
    min_distance: float,
    x_range=scene.WORKSPACE_X,
    y_range=scene.WORKSPACE_Y,
) -> np.ndarray:
    """`count` (x, y) points in the workspace at least `min_distance` apart: (count, 2)."""
    for _ in range(1000):
        points = np.stack([rng.uniform(*x_range, count), rng.uniform(*y_range, count)], axis=1)
        gaps = np.linalg.norm(points[:, None] - points[None], axis=-1) + np.eye(count) * 9
        if gaps.min() >= min_distance:
            return points
    raise RuntimeError("could not place objects apart; workspace too small")


def geoms_in_contact(data: mujoco.MjData, geoms_a: set[int], geoms_b: set[int]) -> bool:
    for i in range(data.ncon):
        g1, g2 = data.contact.geom1[i], data.contact.geom2[i]
        if (g1 in geoms_a and g2 in geoms_b) or (g2 in geoms_a and g1 in geoms_b):
            return True
    return False


def body_geoms(model: mujoco.MjModel, body: str) -> set[int]:
    body_id = model.body(body).id
    return {g for g in range(model.ngeom) if model.geom_bodyid[g] == body_id}


class Task(abc.ABC):
    """Base class; subclasses set `name`, define the abstract methods, override other hooks."""

    name = ""
    # MuJoCo's no-slip solver passes: tasks that press a held object onto a surface (a tissue,
    # a pen) need them to keep soft contacts from creeping in the fingers; they cost physics time.
    noslip_iterations = 0
    # How much of the task's layout variety resets draw (`sim.layout_spread`): 1 the whole
    # ranges, s < 1 the centred fraction s of each (0: one nominal layout). Set by `make_task`.
    layout_spread = 1.0

    def uniform(self, rng: np.random.Generator, low, high, size=None):
        """A layout draw: uniform on [low, high] at full spread, else on the centred fraction
        `layout_spread` of it (one rng draw either way, so a seed keeps its relative place)."""
        if self.layout_spread == 1.0:
            return rng.uniform(low, high, size)
        low, high = np.asarray(low, float), np.asarray(high, float)
        center, half = (low + high) / 2, (high - low) / 2 * self.layout_spread
        return rng.uniform(center - half, center + half, size)

    @classmethod
    @abc.abstractmethod
    def model_xml(cls) -> tuple[str, str, str]:
        """(extra <default> classes, bodies in <worldbody>, top-level extras)."""

    @classmethod
    def build_model(cls) -> mujoco.MjModel:
        model = scene.build_model(*cls.model_xml())
        model.opt.noslip_iterations = cls.noslip_iterations
        return model

    @abc.abstractmethod
    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> str:
        """Randomises the layout in `data` (and task state); returns the instruction."""

    def after_settle(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:  # noqa: B027
        """Called once the reset layout has settled under gravity (default: nothing to do)."""

    def after_substeps(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:  # noqa: B027
        """Called a few times per control step for contact bookkeeping (ink, traces); the
        default has none."""

    def decorations(self) -> Sequence[Decoration]:
        """Task-state drawings added to the rendered scene (marks, traces)."""
        return ()

    @abc.abstractmethod
    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        """Appendix B's criterion on the simulator state (after the holding period)."""

    @abc.abstractmethod
    def plan(self, station) -> Iterator[Waypoint]:
        """The scripted expert: yields waypoints, reading `station` (a SimStation) as it goes."""
