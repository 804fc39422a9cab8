"""The Franka Emika Panda's published kinematics and limits, in one place (numpy only).

Everything that models, simulates or commands the arm reads these numbers from here: the
simulator's MJCF (vlaw/sim/panda.py), the world model's kinematics and its Franka-like velocity
integration (vlaw/models/world_model/kinematics.py), and a controller for a real arm. This
module imports nothing of vlaw, so none of them depends on another through it.

Kinematics: Franka's modified (Craig) Denavit-Hartenberg table (frankaemika.github.io/docs,
"Robot and interface specifications"), one row (a_{i-1}, d_i, alpha_{i-1}) per joint i, with
T_i = RotX(alpha_{i-1}) TransX(a_{i-1}) RotZ(q_i) TransZ(d_i), then the flange d = 0.107 m
along z7.

Limits: the datasheet's joint position, velocity and torque limits
(shared/research/droid_rlds.md §3.5).
"""

import numpy as np

# (a_{i-1} m, d_i m, alpha_{i-1} rad) of joints 1..7.
DH_ROWS = (
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -np.pi / 2),
    (0.0, 0.316, np.pi / 2),
    (0.0825, 0.0, np.pi / 2),
    (-0.0825, 0.384, -np.pi / 2),
    (0.0, 0.0, np.pi / 2),
    (0.088, 0.0, np.pi / 2),
)
DH_A = tuple(row[0] for row in DH_ROWS)
DH_D = tuple(row[1] for row in DH_ROWS)
DH_ALPHA = tuple(row[2] for row in DH_ROWS)
FLANGE_D = 0.107  # flange along z7, metres

# The hand sits rotated -45 deg about the flange's z axis (Franka Hand, and the simulator's).
HAND_YAW = -np.pi / 4
FRANKA_HAND_TCP_D = 0.1034  # flange -> Franka Hand's fingertip centre, metres
# flange -> the point between the simulator's fingertips (a Robotiq 2F-85-like gripper, as on
# DROID's arms: about 15 cm); the frame a simulated station records as `cartesian_position`.
TCP_OFFSET = 0.150

JOINT_POSITION_MIN = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
JOINT_POSITION_MAX = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
JOINT_VELOCITY_MAX = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])  # rad/s
JOINT_TORQUE_MAX = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])  # N m
# DROID's reset pose (droid/robot_env.py `reset_joints`).
HOME_JOINT_POSITION = np.array([0.0, -np.pi / 5, 0.0, -4 * np.pi / 5, 0.0, 3 * np.pi / 5, 0.0])
