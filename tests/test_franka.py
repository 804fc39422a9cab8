"""vlaw.franka is the one source of the Panda's numbers: numpy only, and read by the simulator
and the world model's kinematics alike."""

import subprocess
import sys

import numpy as np

from vlaw import franka
from vlaw.models.world_model import kinematics
from vlaw.sim import panda


def test_franka_imports_nothing_of_vlaw():
    code = (
        "import sys, vlaw.franka; "
        "print(sorted(m for m in sys.modules if m.startswith('vlaw.') and m != 'vlaw.franka'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_simulator_and_kinematics_read_the_same_numbers():
    assert panda.JOINT_POSITION_MIN is franka.JOINT_POSITION_MIN
    assert panda.JOINT_VELOCITY_MAX is franka.JOINT_VELOCITY_MAX
    assert panda.TCP_OFFSET == franka.TCP_OFFSET and panda.HAND_YAW == franka.HAND_YAW
    assert kinematics.franka is franka
    # The world model reads the same DH table and tool frame (no copy left to drift).
    np.testing.assert_allclose(kinematics.FRANKA_DH, franka.DH_ROWS)
    assert kinematics.FLANGE_D == franka.FLANGE_D
    assert kinematics.TOOL_D == franka.FRANKA_HAND_TCP_D
    assert kinematics.TOOL_ROTATION == franka.HAND_YAW


def test_limits_are_ordered_and_home_is_inside_them():
    assert np.all(franka.JOINT_POSITION_MIN < franka.JOINT_POSITION_MAX)
    assert np.all(franka.JOINT_POSITION_MIN < franka.HOME_JOINT_POSITION)
    assert np.all(franka.HOME_JOINT_POSITION < franka.JOINT_POSITION_MAX)
    assert np.all(franka.JOINT_VELOCITY_MAX > 0) and np.all(franka.JOINT_TORQUE_MAX > 0)
