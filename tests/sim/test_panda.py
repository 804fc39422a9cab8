"""The Panda MJCF against Franka's published kinematics and limits, and the action handling."""

import mujoco
import numpy as np
import pytest

from vlaw.rollout.station import TaskSpec
from vlaw.sim import panda
from vlaw.sim.station import JOINT_DELTA_PER_UNIT, SimStation, euler_xyz_from_matrix
from vlaw.sim.tasks.stack import StackTask


@pytest.fixture(scope="module")
def station():
    return SimStation("stack")


def test_model_loads_primitives_only():
    model = StackTask.build_model()
    assert model.nmesh == 0 and model.ntex == 1  # primitives and the table texture only
    assert model.nu == 15  # 7 position servos, the gripper, 7 velocity servos
    assert [model.joint(n).type for n in panda.ARM_JOINT_NAMES] == [mujoco.mjtJoint.mjJNT_HINGE] * 7
    for name, low, high in zip(
        panda.ARM_JOINT_NAMES, panda.JOINT_POSITION_MIN, panda.JOINT_POSITION_MAX
    ):
        np.testing.assert_allclose(model.joint(name).range, [low, high], atol=1e-4)
    for name in ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left"):
        assert model.camera(name).id >= 0


@pytest.mark.parametrize(
    "joint_position",
    [
        np.zeros(7),
        panda.HOME_JOINT_POSITION,
        np.array([0.3, -0.5, 0.2, -2.0, 0.4, 1.8, 0.7]),
        np.array([-1.2, 0.9, -2.1, -0.8, 2.3, 3.1, -2.5]),
    ],
)
def test_forward_kinematics_matches_dh_table(station, joint_position):
    station.data.qpos[station.arm_qpos] = joint_position
    mujoco.mj_kinematics(station.model, station.data)
    position, rotation = station.tcp_pose()
    expected = panda.dh_forward_kinematics(joint_position)
    np.testing.assert_allclose(position, expected[:3, 3], atol=1e-6)
    np.testing.assert_allclose(rotation, expected[:3, :3], atol=1e-6)


def test_dh_table_known_pose():
    # At q = 0 the arm stands straight up: the flange is 0.333 + 0.316 + 0.384 m high minus
    # the 0.107 flange offset pointing down after joint 6, and 0.088 m forward.
    pose = panda.dh_forward_kinematics(np.zeros(7))
    np.testing.assert_allclose(
        pose[:3, 3], [0.088, 0.0, 0.333 + 0.316 + 0.384 - 0.107 - panda.TCP_OFFSET], atol=1e-9
    )


def test_euler_convention_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        roll, pitch, yaw = rng.uniform(-1.2, 1.2, 3)
        cx, sx, cy, sy, cz, sz = (
            np.cos(roll),
            np.sin(roll),
            np.cos(pitch),
            np.sin(pitch),
            np.cos(yaw),
            np.sin(yaw),
        )
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        np.testing.assert_allclose(euler_xyz_from_matrix(rz @ ry @ rx), [roll, pitch, yaw])


def test_joint_limits_hold_under_any_action(station):
    """Saturating and random actions never leave the position limits or exceed the speed."""
    station.reset(TaskSpec("stack", 0))
    rng = np.random.default_rng(1)
    actions = [np.r_[np.full(7, sign), 0.0] for sign in (1.0, -1.0) for _ in range(25)]
    actions += [np.r_[rng.uniform(-5, 5, 7), rng.uniform(-1, 2)] for _ in range(40)]
    for action in actions:
        before = station.joint_position
        record = station.apply_action(action)
        after = station.joint_position
        assert np.all(after >= panda.JOINT_POSITION_MIN - 2e-3)
        assert np.all(after <= panda.JOINT_POSITION_MAX + 2e-3)
        # Per-step displacement within the datasheet velocity limits (2% numerical slack).
        assert np.all(np.abs(after - before) <= panda.JOINT_VELOCITY_MAX / 15 * 1.02)
        assert np.all(np.abs(record.action_dict["joint_velocity"]) <= 1.0 + 1e-9)
        assert 0.0 <= record.action_dict["gripper_position"][0] <= 1.0


def test_velocity_command_is_realised(station):
    """A normalised velocity of 0.5 moves each joint about 0.1 rad per 15 Hz step."""
    station.reset(TaskSpec("stack", 0))
    action = np.r_[np.full(7, 0.5), 0.0]
    station.apply_action(action)  # the first step accelerates from rest
    before = station.joint_position
    station.apply_action(action)
    moved = station.joint_position - before
    np.testing.assert_allclose(moved, 0.5 * JOINT_DELTA_PER_UNIT, rtol=0.12)


def test_gripper_position_convention(station):
    station.reset(TaskSpec("stack", 0))
    assert station.observation().gripper_position[0] == pytest.approx(0.0, abs=0.02)
    for _ in range(6):
        station.apply_action(np.r_[np.zeros(7), 1.0])
    assert station.observation().gripper_position[0] == pytest.approx(1.0, abs=0.03)
