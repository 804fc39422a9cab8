"""Franka kinematics, the joint-velocity -> pose conversion and imagination's station poses."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vlaw.models.world_model.kinematics import (
    FRANKA_DH,
    end_effector_poses,
    franka_forward_kinematics,
    integrate_joint_velocities,
    pose_from_joints,
    poses_from_joint_velocities,
    station_tool_transform,
)

LOW = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
HIGH = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])


def _reference_pose(q, tool=True):
    """Independent FK: scipy rotations composed link by link (x-rotation, x-offset, z-rotation,
    z-offset), then scipy's as_euler('xyz')."""
    rot, pos = Rotation.identity(), np.zeros(3)
    for (a, d, alpha), theta in zip(FRANKA_DH, q, strict=True):
        rot = rot * Rotation.from_euler("x", alpha)
        pos = pos + rot.apply([a, 0.0, 0.0])
        rot = rot * Rotation.from_euler("z", theta)
        pos = pos + rot.apply([0.0, 0.0, d])
    pos = pos + rot.apply([0.0, 0.0, 0.107])
    if tool:
        rot = rot * Rotation.from_euler("z", -np.pi / 4)
        pos = pos + rot.apply([0.0, 0.0, 0.1034])
    return np.concatenate([pos, rot.as_euler("xyz")])


def test_zero_configuration_is_the_documented_flange_position():
    # Franka at q = 0: flange at (0.088, 0, 0.333 + 0.316 + 0.384 - 0.107) = (0.088, 0, 0.926).
    t = np.asarray(franka_forward_kinematics(jnp.zeros(7)))  # flange, as Ctrl-World / DROID
    np.testing.assert_allclose(t[:3, 3], [0.088, 0.0, 0.926], atol=1e-6)
    t = np.asarray(franka_forward_kinematics(jnp.zeros(7), include_tool=True))
    np.testing.assert_allclose(t[:3, 3], [0.088, 0.0, 0.926 - 0.1034], atol=1e-6)


def test_fk_matches_independent_computation():
    rng = np.random.default_rng(0)
    q = rng.uniform(LOW, HIGH, (16, 7))
    home = np.array([0.0, -np.pi / 5, 0.0, -4 * np.pi / 5, 0.0, 3 * np.pi / 5, 0.0])
    q = np.concatenate([q, home[None]])
    for tool in (False, True):
        ours = np.asarray(pose_from_joints(jnp.asarray(q), jnp.zeros((len(q), 1)), tool))
        ref = np.stack([_reference_pose(x, tool) for x in q])
        np.testing.assert_allclose(ours[:, :3], ref[:, :3], atol=2e-6)
        # Euler angles: compare as rotations (angle wrap at +-pi).
        ours_rot = Rotation.from_euler("xyz", ours[:, 3:6])
        diff = ours_rot.inv() * Rotation.from_euler("xyz", ref[:, 3:])
        assert np.max(diff.magnitude()) < 1e-5
        # And the angles themselves, away from the +-pi wrap.
        safe = np.all(np.abs(np.abs(ref[:, 3:]) - np.pi) > 1e-3, axis=1)
        np.testing.assert_allclose(ours[safe, 3:6], ref[safe, 3:], atol=2e-5)


def test_fk_matches_mujoco_panda():
    mujoco = pytest.importorskip("mujoco")
    from vlaw.sim import panda

    xml = (
        f"<mujoco><default>{panda.panda_defaults_xml()}</default>"
        f"<worldbody>{panda.panda_body_xml()}</worldbody></mujoco>"
    )
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    q = np.random.default_rng(1).uniform(LOW, HIGH)
    for i, name in enumerate(panda.ARM_JOINT_NAMES):
        data.qpos[model.joint(name).qposadr[0]] = q[i]
    mujoco.mj_kinematics(model, data)
    site = model.site(panda.TCP_SITE).id
    t = np.asarray(franka_forward_kinematics(jnp.asarray(q), include_tool=True))
    # The sim's TCP sits on the same -pi/4 tool frame, further along its z axis.
    expected = t[:3, 3] + (panda.TCP_OFFSET - 0.1034) * t[:3, 2]
    np.testing.assert_allclose(data.site_xpos[site], expected, atol=1e-5)
    np.testing.assert_allclose(data.site_xmat[site].reshape(3, 3), t[:3, :3], atol=1e-5)


def test_zero_velocities_keep_the_pose_and_integration_is_0p2_rad_per_unit():
    q0 = jnp.asarray([[0.0, -np.pi / 5, 0.0, -4 * np.pi / 5, 0.0, 3 * np.pi / 5, 0.0]])
    g0 = jnp.asarray([[0.3]])
    still = poses_from_joint_velocities(q0, g0, jnp.zeros((1, 4, 7)), jnp.full((1, 4, 1), 0.3))
    assert still.shape == (1, 5, 7)
    np.testing.assert_allclose(np.asarray(still), np.repeat(np.asarray(still[:, :1]), 5, 1))
    # Joint 1 at velocity 1 for 3 steps turns the base by 0.6 rad: a pure yaw of the pose.
    vel = jnp.zeros((1, 3, 7)).at[:, :, 0].set(1.0)
    moved = poses_from_joint_velocities(q0, g0, vel, jnp.full((1, 3, 1), 0.9), gripper_max=0.8)
    expected = pose_from_joints(q0.at[:, 0].add(0.6), jnp.asarray([[0.8]]))
    np.testing.assert_allclose(np.asarray(moved[:, -1]), np.asarray(expected), atol=1e-5)
    start = np.asarray(moved[0, 0, :2])
    end = np.asarray(moved[0, -1, :2])
    angle = np.arctan2(end[1], end[0]) - np.arctan2(start[1], start[0])
    np.testing.assert_allclose(angle, 0.6, atol=1e-5)


def test_integration_clamps_to_the_franka_limits():
    joints = np.zeros((2, 7))
    joints[1, 3] = -3.05  # 0.02 rad above joint 4's lower limit
    velocities = np.zeros((2, 3, 7))
    velocities[0, :, 0] = 0.25  # 0.05 rad per step: within the 0.145 rad velocity limit
    velocities[0, :, 1] = 1.0  # 0.2 rad per step asked: clamped to 2.175 / 15
    velocities[1, :, 3] = -1.0  # into the position limit
    path = integrate_joint_velocities(joints, velocities)
    assert path.shape == (2, 4, 7) and path.dtype == np.float64
    np.testing.assert_array_equal(path[:, 0], joints)
    np.testing.assert_allclose(path[0, :, 0], [0.0, 0.05, 0.1, 0.15])
    np.testing.assert_allclose(np.diff(path[0, :, 1]), 2.175 / 15)
    np.testing.assert_allclose(path[1, 1:, 3], -3.0718)
    np.testing.assert_array_equal(path[:, :, [2, 4, 5, 6]], 0.0)


def test_station_poses_are_the_simulators_tcp_or_droids_flange():
    mujoco = pytest.importorskip("mujoco")
    from vlaw.sim import panda

    q = np.random.default_rng(2).uniform(LOW, HIGH, (4, 7))
    gripper = np.linspace(0.0, 1.0, 4)[:, None]
    flange = np.asarray(end_effector_poses(q, gripper, station_tool_transform(False)))
    np.testing.assert_allclose(flange, np.asarray(pose_from_joints(q, gripper)), atol=1e-6)
    poses = np.asarray(end_effector_poses(q, gripper, station_tool_transform(True)))
    np.testing.assert_array_equal(poses[:, 6:], gripper.astype(np.float32))
    xml = (
        f"<mujoco><default>{panda.panda_defaults_xml()}</default>"
        f"<worldbody>{panda.panda_body_xml()}</worldbody></mujoco>"
    )
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    site = model.site(panda.TCP_SITE).id
    for joints, pose in zip(q, poses, strict=True):
        for i, name in enumerate(panda.ARM_JOINT_NAMES):
            data.qpos[model.joint(name).qposadr[0]] = joints[i]
        mujoco.mj_kinematics(model, data)
        np.testing.assert_allclose(pose[:3], data.site_xpos[site], atol=1e-5)
        expected = Rotation.from_matrix(data.site_xmat[site].reshape(3, 3))
        assert (Rotation.from_euler("xyz", pose[3:6]).inv() * expected).magnitude() < 1e-5
