"""Pose maps: the gripper drawn on the UNet's grid where each calibrated camera sees it."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model import pose_maps as pm

# A camera seeing x as u and y as v at depth 1 (image fractions), and one facing away.
FLAT = (1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 0, 1.0)
BEHIND = (1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 0, -1.0)


def _config(cameras, **overrides):
    """tiny with unit pose bounds, so normalised position p maps to xyz (p + 1) / 2."""
    return cw.CtrlWorldConfig.preset(
        "tiny",
        pose_low=(0.0,) * 7,
        pose_high=(1.0,) * 7,
        view_cameras=cameras,
        view_latent_shape=(8, 8),
        **overrides,
    )


def _poses(xyz, gripper):
    """Normalised poses (1, 1, 7) of a base-frame xyz and a gripper opening in [0, 1]."""
    pose = np.zeros(7, np.float32)
    pose[:3] = 2.0 * np.asarray(xyz) - 1.0
    pose[6] = 2.0 * gripper - 1.0
    return jnp.asarray(pose)[None, None]


def test_blob_peaks_on_the_cell_the_point_projects_to():
    cfg = _config((FLAT, None, BEHIND))
    # u = 0.6875 is column 5's centre ((5 + 0.5) / 8); v = 0.3125 row 2's.
    maps = np.asarray(pm.pose_maps(_poses((0.6875, 0.3125, 0.5), gripper=1.0), cfg))
    assert maps.shape == (1, 1, 3 * 8, 8, pm.POSE_MAP_CHANNELS)
    first = maps[0, 0, :8, :, 0]
    assert np.unravel_index(first.argmax(), first.shape) == (2, 5)
    assert first[2, 5] == pytest.approx(1.0)
    assert first[2, 6] == pytest.approx(np.exp(-0.5 / cfg.pose_map_sigma**2), rel=1e-5)
    # No fixed camera, and a point behind the camera: nothing drawn.
    assert not maps[0, 0, 8:].any()
    # The second channel is the blob signed by the normalised gripper opening.
    np.testing.assert_allclose(maps[0, 0, :8, :, 1], first)
    closed = np.asarray(pm.pose_maps(_poses((0.6875, 0.3125, 0.5), gripper=0.0), cfg))
    np.testing.assert_allclose(closed[0, 0, :8, :, 1], -first)
    # Sub-cell positions survive on the grid: a quarter cell right shifts the mass right.
    shifted = np.asarray(pm.pose_maps(_poses((0.6875 + 0.25 / 8, 0.3125, 0.5), 1.0), cfg))
    assert shifted[0, 0, 2, 6, 0] > first[2, 6] and shifted[0, 0, 2, 4, 0] < first[2, 4]


def test_positions_survive_the_pose_normalisation():
    """The maps read xyz back from the poses the model is given: `denormalize_positions` must
    invert `ctrl_world.normalize_poses` on the position, under the sim station's bounds."""
    low, high, center = cw.POSE_NORMALIZATIONS["sim"]
    cfg = cw.CtrlWorldConfig.preset("tiny", pose_low=low, pose_high=high, pose_angle_center=center)
    xyz = np.array([[0.45, -0.2, 0.05], [0.62, 0.25, 0.3]], np.float32)
    poses = np.concatenate([xyz, np.tile([[np.pi, 0.0, 0.5, 0.7]], (2, 1))], axis=1)
    normalised = cw.normalize_poses(jnp.asarray(poses, jnp.float32), cfg)
    back = pm.denormalize_positions(normalised, cfg.pose_low, cfg.pose_high)
    np.testing.assert_allclose(np.asarray(back), xyz, atol=1e-5)


def test_camera_count_must_match_the_views():
    with pytest.raises(ValueError, match="2 view_cameras for 3 views"):
        _config((FLAT, None))


@pytest.mark.slow  # a tiny UNet's init and two forwards: ~50 s on 2 CPU cores, off by default
def test_a_model_with_pose_maps_sees_where_the_gripper_is():
    """The maps enter the UNet as channels: moving the gripper changes the network's output
    even with the context (the pose tokens) held fixed; leaving them out is an error."""
    base = _config((FLAT, FLAT, None))
    cfg = dataclasses.replace(
        base, unet=dataclasses.replace(base.unet, in_channels=base.unet.in_channels + 2)
    )
    model = cw.CtrlWorld(cfg)
    params = nn.unbox(cw.init_params(model, jax.random.key(0)))
    h, w = cfg.num_views * cfg.view_latent_shape[0], cfg.view_latent_shape[1]
    x = jax.random.normal(jax.random.key(1), (1, cfg.num_frames, h, w, 4))
    condition = jax.random.normal(jax.random.key(2), (1, h, w, 4))
    poses = jnp.zeros((1, cfg.num_frames, 7))
    context = model.apply({"params": params}, poses, None, method="context")
    ids = cw.added_time_ids(cfg, 1, 0.0)

    def output(xyz):
        moved = poses.at[..., :3].set(2.0 * jnp.asarray(xyz) - 1.0)
        maps = pm.pose_maps(moved, cfg)
        return np.asarray(
            model.apply({"params": params}, x, condition, jnp.zeros((1,)), context, ids, maps)
        )

    # Random init: the pose-map channels' weights are live from the start.
    assert np.abs(output((0.2, 0.3, 0.5)) - output((0.7, 0.6, 0.5))).max() > 1e-4
    with pytest.raises(ValueError, match="pass `maps`"):
        model.apply({"params": params}, x, condition, jnp.zeros((1,)), context, ids)
