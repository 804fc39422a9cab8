"""Pose maps: where the gripper is in each camera's image, as extra UNet input channels.

Not Ctrl-World's (its poses reach the UNet only as one cross-attention token per frame; off at
paper). A small world model trained from scratch on a few thousand clips has to learn from that
token alone how a 7-d pose maps to pixels of three cameras, and at sim it did not: after 600
steps its mean prediction was the current frame again, the arm left where it was
(benchmarks/RESULTS.md, "What limits imagination at sim"). With a calibrated camera the
mapping is known, so each frame also gets, per view, a Gaussian blob on the UNet's grid at the
tool centre point's projection (channel 0) and the same blob signed by the gripper's
normalised opening (channel 1); "draw the arm where the blob is" is then a local, convolutional
job. Views without a fixed camera (the wrist camera moves with the hand) get zeros. Measured at
sim (benchmarks/RESULTS.md, "Pose maps"): no gain at 600 steps of 4 clips, with or without
them the mean prediction ghosts the arm between its old and new pose; off by default.

Cameras are 3x4 matrices (`CtrlWorldConfig.view_cameras`, row-major) taking a base-frame point
(x, y, z, 1) to (u d, v d, d): d the depth, (u, v) the image position as fractions of width
and height from the top-left corner (`vlaw.data.cameras.camera_projections` for the simulated
station).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

POSE_MAP_CHANNELS = 2  # the blob, the blob x normalised gripper opening
MIN_DEPTH = 1e-3  # metres: points at or behind a camera's plane are not drawn


def denormalize_positions(poses: jax.Array, low, high) -> jax.Array:
    """Bound-normalised poses (..., 7) -> base-frame xyz (..., 3), the inverse of
    `ctrl_world.normalize_poses` on the position (exact inside the bounds)."""
    low, high = jnp.asarray(low[:3], jnp.float32), jnp.asarray(high[:3], jnp.float32)
    return low + (poses[..., :3].astype(jnp.float32) + 1.0) / 2.0 * (high - low)


def project(points: jax.Array, camera) -> tuple[jax.Array, jax.Array]:
    """Base-frame points (..., 3), one camera (12 floats) -> ((..., 2) image fractions (u, v),
    (...,) bool in front of the camera)."""
    matrix = jnp.asarray(camera, jnp.float32).reshape(3, 4)
    homogeneous = points @ matrix[:, :3].T + matrix[:, 3]
    depth = homogeneous[..., 2]
    visible = depth > MIN_DEPTH
    safe = jnp.where(visible, depth, 1.0)
    return homogeneous[..., :2] / safe[..., None], visible


def blob(uv: jax.Array, visible: jax.Array, grid: tuple[int, int], sigma: float) -> jax.Array:
    """Image fractions (..., 2) -> Gaussian (..., h, w) on an h x w grid of cells (sigma in
    cells), zero where not visible."""
    h, w = grid
    rows = jnp.arange(h, dtype=jnp.float32)[:, None]
    cols = jnp.arange(w, dtype=jnp.float32)[None, :]
    # Cell i's centre lies at fraction (i + 0.5) / h.
    row = (uv[..., 1] * h - 0.5)[..., None, None]
    col = (uv[..., 0] * w - 0.5)[..., None, None]
    squared = (rows - row) ** 2 + (cols - col) ** 2
    return jnp.exp(-squared / (2.0 * sigma**2)) * visible[..., None, None]


def pose_maps(poses: jax.Array, config) -> jax.Array:
    """Normalised poses (B, T, 7) -> maps (B, T, V*h, w, POSE_MAP_CHANNELS), the views stacked
    along height as `ctrl_world.stack_views` stacks frames. `config`: a CtrlWorldConfig with
    `view_cameras` set."""
    h, w = config.view_latent_shape
    positions = denormalize_positions(poses, config.pose_low, config.pose_high)
    gripper = poses[..., 6].astype(jnp.float32)[..., None, None]
    views = []
    for camera in config.view_cameras:
        if camera is None:
            views.append(jnp.zeros((*poses.shape[:2], h, w, POSE_MAP_CHANNELS), jnp.float32))
            continue
        uv, visible = project(positions, camera)
        g = blob(uv, visible, (h, w), config.pose_map_sigma)
        views.append(jnp.stack([g, g * gripper], axis=-1))
    return jnp.concatenate(views, axis=2)
