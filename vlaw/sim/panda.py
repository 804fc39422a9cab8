"""A Franka Emika Panda with a Robotiq-2F-85-like parallel gripper, as MJCF written from the
published kinematics (no meshes: capsules, cylinders and boxes).

The arm's numbers (Franka's modified DH table, the flange, joint position, velocity and torque
limits, DROID's reset pose, the hand's yaw and this gripper's TCP offset) come from vlaw/franka.py
and are re-exported here. In MJCF each link is a body whose frame is the DH transform
T_i = RotX(alpha_{i-1}) TransX(a_{i-1}) RotZ(q_i) TransZ(d_i) at q_i = 0, with a hinge about its
own z axis, so MuJoCo's forward kinematics and `dh_forward_kinematics` below must agree
(tests/sim/test_panda.py checks it).

DROID's normalised joint velocity 1 means 0.2 rad per 15 Hz step; the station clamps every
per-step delta to the datasheet velocity limit times the step length.
"""

import numpy as np

from vlaw.data import cameras
from vlaw.franka import (  # noqa: F401  (re-exported: the simulator's arm is this Franka)
    DH_A,
    DH_ALPHA,
    DH_D,
    FLANGE_D,
    HAND_YAW,
    HOME_JOINT_POSITION,
    JOINT_POSITION_MAX,
    JOINT_POSITION_MIN,
    JOINT_TORQUE_MAX,
    JOINT_VELOCITY_MAX,
    TCP_OFFSET,
)

GRIPPER_STROKE = 0.085  # 2F-85: 85 mm between the pads when open
FINGER_TRAVEL = GRIPPER_STROKE / 2  # each finger slides this far
GRIPPER_FORCE = 70.0  # N, the finger actuator's force limit (2F-85: 20-235 N)

# Servo gains of the joint-position controller that tracks the commanded joint targets.
# The arm is gravity-compensated (`gravcomp`), as Franka's controller is, so the servo only
# has to follow the command and push on the world.
JOINT_KP = (900.0, 900.0, 800.0, 800.0, 250.0, 250.0, 120.0)
JOINT_KV = (250.0, 250.0, 200.0, 200.0, 50.0, 50.0, 25.0)
LINK_RADIUS = (0.06, 0.06, 0.055, 0.055, 0.05, 0.045, 0.04)

ARM_JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINT_NAMES = ("finger_left", "finger_right")
TCP_SITE = "tcp"
WRIST_CAMERA = "wrist_image_left"


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _link_offset(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame i in frame i-1 at q_i = 0: (position (3,), rotation (3, 3))."""
    rotation = _rot_x(DH_ALPHA[i])
    position = np.array([DH_A[i], 0.0, 0.0]) + rotation @ np.array([0.0, 0.0, DH_D[i]])
    return position, rotation


def dh_forward_kinematics(joint_position: np.ndarray) -> np.ndarray:
    """Pose of the tool centre point in the base frame from the DH table: (4, 4).

    joint_position: (7,) radians.
    """
    transform = np.eye(4)
    for i, angle in enumerate(np.asarray(joint_position, dtype=np.float64)):
        link = np.eye(4)
        link[:3, :3] = _rot_x(DH_ALPHA[i])
        link[:3, 3] = [DH_A[i], 0.0, 0.0]
        joint = np.eye(4)
        joint[:3, :3] = _rot_z(angle)
        joint[:3, 3] = [0.0, 0.0, DH_D[i]]
        transform = transform @ link @ joint
    tool = np.eye(4)
    tool[:3, :3] = _rot_z(HAND_YAW)
    tool[:3, 3] = [0.0, 0.0, FLANGE_D + TCP_OFFSET]
    return transform @ tool


def _vec(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _quat_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix (MJCF's quaternion order)."""
    m = rotation
    w = np.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2
    y = np.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2
    z = np.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2
    x = np.copysign(x, m[2, 1] - m[1, 2])
    y = np.copysign(y, m[0, 2] - m[2, 0])
    z = np.copysign(z, m[1, 0] - m[0, 1])
    return np.array([w, x, y, z])


def lookat_xyaxes(eye, target, up=(0.0, 0.0, 1.0)) -> str:
    """MJCF `xyaxes` of a camera at `eye` looking at `target` (cameras look along -z)."""
    return _vec(np.concatenate(cameras.lookat_axes(eye, target, up)))


def _link_geoms(i: int) -> str:
    """Capsules along link i: from the joint axis to the next frame's origin, plus a joint hub."""
    radius = LINK_RADIUS[i]
    # The link runs from this frame's origin to the next frame's origin (or the flange).
    if i + 1 < 7:
        next_origin, _ = _link_offset(i + 1)
    else:
        next_origin = np.array([0.0, 0.0, FLANGE_D])
    geoms = [
        f'<geom class="arm" type="cylinder" size="{radius:.3f} {radius * 1.1:.3f}" '
        f'rgba="0.92 0.92 0.94 1"/>'
    ]
    if np.linalg.norm(next_origin) > 1e-6:
        geoms.append(
            f'<geom class="arm" type="capsule" size="{radius * 0.95:.3f}" '
            f'fromto="0 0 0 {_vec(next_origin)}" rgba="0.95 0.95 0.97 1"/>'
        )
    return "\n".join(geoms)


def _gripper_xml() -> str:
    """Hand + two sliding fingers + TCP site + wrist camera, in the hand frame (z: approach)."""
    camera_eye = (0.085, 0.0, 0.03)
    camera_axes = lookat_xyaxes(camera_eye, (0.0, 0.0, TCP_OFFSET + 0.06), up=(-1.0, 0.0, 0.0))
    pad = "0.011 0.006 0.024"  # half-extents: width, thickness (slide axis), length
    finger_travel = f"0 {FINGER_TRAVEL:.4f}"
    return f"""
      <body name="hand" pos="0 0 {FLANGE_D}" quat="{_vec(_quat_from_matrix(_rot_z(HAND_YAW)))}"
            gravcomp="1">
        <geom class="arm" type="cylinder" size="0.04 0.012" pos="0 0 0.012"
              rgba="0.15 0.15 0.16 1"/>
        <geom class="hand" type="box" size="0.03 0.06 0.035" pos="0 0 0.06"
              rgba="0.18 0.18 0.2 1"/>
        <site name="{TCP_SITE}" pos="0 0 {TCP_OFFSET}" size="0.005" rgba="1 0 0 0"/>
        <camera name="{WRIST_CAMERA}" pos="{_vec(camera_eye)}" xyaxes="{camera_axes}"
                fovy="80"/>
        <geom class="hand" type="box" size="0.02 0.015 0.008" pos="0.045 0 0.03"
              rgba="0.1 0.1 0.1 1"/>
        <body name="finger_left" pos="0 0 0" gravcomp="1">
          <joint name="finger_left" type="slide" axis="0 1 0" range="{finger_travel}"
                 class="finger"/>
          <geom class="hand" type="box" size="0.011 0.005 0.025" pos="0 0.011 0.11"
                rgba="0.2 0.2 0.22 1"/>
          <geom name="pad_left" class="pad" type="box" size="{pad}"
                pos="0 0.006 {TCP_OFFSET - 0.01:.4f}"/>
        </body>
        <body name="finger_right" pos="0 0 0" gravcomp="1">
          <joint name="finger_right" type="slide" axis="0 -1 0" range="{finger_travel}"
                 class="finger"/>
          <geom class="hand" type="box" size="0.011 0.005 0.025" pos="0 -0.011 0.11"
                rgba="0.2 0.2 0.22 1"/>
          <geom name="pad_right" class="pad" type="box" size="{pad}"
                pos="0 -0.006 {TCP_OFFSET - 0.01:.4f}"/>
        </body>
      </body>"""


def panda_defaults_xml() -> str:
    """`<default>` classes used by the arm (goes inside the model's <default>)."""
    return """
    <default class="arm">
      <geom contype="2" conaffinity="0" density="800" group="1"/>
      <joint armature="0.1" damping="1.0" limited="true"/>
    </default>
    <default class="hand">
      <geom contype="2" conaffinity="0" density="400" group="1"/>
    </default>
    <default class="pad">
      <geom contype="2" conaffinity="0" density="400" friction="1.5 0.02 0.002" condim="4"
            solref="0.01 1" rgba="0.08 0.08 0.08 1" group="1"/>
    </default>
    <default class="finger">
      <joint armature="0.01" damping="2.0" limited="true"/>
    </default>"""


def panda_body_xml(base_position=(0.0, 0.0, 0.0)) -> str:
    """The arm as nested bodies (goes inside <worldbody>)."""
    opening = []
    closing = []
    for i in range(7):
        position, rotation = _link_offset(i)
        limits = f"{JOINT_POSITION_MIN[i]:.4f} {JOINT_POSITION_MAX[i]:.4f}"
        opening.append(
            f'<body name="panda_link{i + 1}" pos="{_vec(position)}" '
            f'quat="{_vec(_quat_from_matrix(rotation))}" gravcomp="1">\n'
            f'<joint name="{ARM_JOINT_NAMES[i]}" class="arm" axis="0 0 1" range="{limits}"/>\n'
            f"{_link_geoms(i)}"
        )
        closing.append("</body>")
    base = (
        f'<body name="panda_link0" pos="{_vec(base_position)}">\n'
        '<geom class="arm" type="cylinder" size="0.07 0.07" pos="0 0 0.07" '
        'rgba="0.92 0.92 0.94 1"/>\n'
        '<geom class="arm" type="capsule" fromto="0 0 0.1 0 0 0.2" size="0.065" '
        'rgba="0.95 0.95 0.97 1"/>\n'
    )
    return base + "\n".join(opening) + _gripper_xml() + "\n".join(closing) + "</body>"


def panda_actuators_xml() -> str:
    """Actuators, in ctrl order: 7 joint position servos (torque-limited), the gripper servo,
    7 joint velocity servos (ctrl = the commanded joint velocity)."""
    lines = []
    for i, name in enumerate(ARM_JOINT_NAMES):
        torque = JOINT_TORQUE_MAX[i]
        lines.append(
            f'<position name="{name}" joint="{name}" kp="{JOINT_KP[i]}" '
            f'ctrlrange="{JOINT_POSITION_MIN[i]:.4f} {JOINT_POSITION_MAX[i]:.4f}" '
            f'forcerange="{-torque} {torque}" forcelimited="true"/>'
        )
    # The gripper command is the finger opening per side, applied through a tendon that
    # averages the two fingers, so both push equally (the 2F-85's linkage is symmetric too);
    # the equality below keeps them in step.
    lines.append(
        f'<position name="gripper" tendon="gripper" kp="2000" kv="40" '
        f'ctrlrange="0 {FINGER_TRAVEL:.4f}" forcerange="{-2 * GRIPPER_FORCE} {2 * GRIPPER_FORCE}" '
        f'forcelimited="true"/>'
    )
    # Velocity feedback on the error to the commanded joint velocity (the servos' D term with
    # feed-forward): damping the absolute velocity instead would make the arm lag its command.
    for i, name in enumerate(ARM_JOINT_NAMES):
        lines.append(
            f'<velocity name="{name}_velocity" joint="{name}" kv="{JOINT_KV[i]}" '
            f'ctrlrange="{-JOINT_VELOCITY_MAX[i]:.3f} {JOINT_VELOCITY_MAX[i]:.3f}"/>'
        )
    return "\n".join(lines)


def panda_tendon_xml() -> str:
    return (
        '<fixed name="gripper"><joint joint="finger_left" coef="0.5"/>'
        '<joint joint="finger_right" coef="0.5"/></fixed>'
    )


def panda_equality_xml() -> str:
    return '<joint joint1="finger_right" joint2="finger_left" polycoef="0 1 0 0 0"/>'


def gripper_opening_from_position(gripper_position: float) -> float:
    """Per-finger opening (m) for DROID's gripper_position (0 open ... 1 closed)."""
    return FINGER_TRAVEL * (1.0 - float(np.clip(gripper_position, 0.0, 1.0)))


def gripper_position_from_opening(finger_opening: float) -> float:
    return float(np.clip(1.0 - finger_opening / FINGER_TRAVEL, 0.0, 1.0))
