"""The simulated station's exterior cameras: where they stand, and where a point appears in them.

One home for the geometry that two layers use: the station places its MuJoCo cameras with it
(`vlaw.sim.scene`), and the world model's pose maps project the gripper into the same cameras
(`vlaw.agents.world_model`, `vlaw.models.world_model.pose_maps`). Frames: the robot base frame
(DROID's `cartesian_position` frame); MuJoCo cameras look along their -z with +y up.
"""

import numpy as np

from vlaw.data import droid

# DROID's exterior ZED cameras stand to the left and right of the table looking at the
# workspace; which one is "1" is not semantic in DROID (droid_rlds.md §1.4). (eye, target).
EXTERIOR_CAMERAS = {
    "exterior_image_1_left": ((1.0, 0.55, 0.55), (0.42, 0.0, 0.05)),
    "exterior_image_2_left": ((1.0, -0.55, 0.55), (0.42, 0.0, 0.05)),
}
CAMERA_FOVY = 50.0  # degrees, spanning the image's height (MuJoCo's `fovy`)


def lookat_axes(eye, target, up=(0.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """(right, camera up) unit vectors of a camera at `eye` looking at `target`: MJCF's
    `xyaxes`."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, float))
    right /= np.linalg.norm(right)
    return right, np.cross(right, forward)


def camera_projections(aspect: float = 1.0) -> tuple[tuple[float, ...] | None, ...]:
    """Per camera of `droid.CAMERA_NAMES`, the 3x4 matrix (row-major, 12 floats) taking a base-
    frame point (x, y, z, 1) to (u d, v d, d): d its depth in front of the camera, (u, v) where
    it appears as fractions of the image's width (left to right) and height (top to bottom).
    None for the wrist camera, which moves with the hand. `aspect` = image height / width
    (pixels are square)."""
    scale = 1.0 / (2.0 * np.tan(np.deg2rad(CAMERA_FOVY) / 2.0))  # fovy spans the height
    intrinsics = np.array([[aspect * scale, 0.0, 0.5], [0.0, -scale, 0.5], [0.0, 0.0, 1.0]])
    projections = []
    for name in droid.CAMERA_NAMES:
        if name not in EXTERIOR_CAMERAS:
            projections.append(None)
            continue
        eye, target = (np.asarray(p, float) for p in EXTERIOR_CAMERAS[name])
        right, up = lookat_axes(eye, target)
        # Rows: the camera's x (right), y (up) and depth (its -z) of a point relative to the eye.
        rotation = np.stack([right, up, np.cross(up, right)])
        extrinsics = np.concatenate([rotation, -(rotation @ eye)[:, None]], axis=1)
        projections.append(tuple(float(v) for v in (intrinsics @ extrinsics).ravel()))
    return tuple(projections)
