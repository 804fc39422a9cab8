"""Headless tiled rendering: every camera of every station in one framebuffer, one read-back.

A `Renderer.render()` call has a fixed cost whatever the image size (shared/research/
environment_facts.md measured ~5 ms at default quality; benchmarks/RESULTS.md has ours), paid
per camera per station. So a batch of B stations with three cameras is drawn as a grid of B
rows x 3 columns of viewports into one offscreen buffer and read back once.

One OpenGL context serves scenes of different models because the scenes use only primitive
geoms and the same textures (the context holds nothing else that is model-specific); the
renderer checks that. Must run in a process that never imports TensorFlow (the two clash in LLVM).
"""

from collections.abc import Callable, Sequence

import mujoco
import numpy as np

from vlaw.data import droid

# Decorations drawn on top of a station's scene: (geom type, size (3,), pos (3,), mat (9,),
# rgba (4,)) tuples, e.g. marker strokes and pen traces that live in task state, not in the model.
Decoration = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
DecorationFn = Callable[[], Sequence[Decoration]]
MAX_SCENE_GEOMS = 2000


class TiledRenderer:
    """Renders `cameras` of B (model, data) pairs into (B, num_cameras, H, W, 3) uint8."""

    def __init__(
        self,
        models: Sequence[mujoco.MjModel],
        height: int,
        width: int,
        cameras: Sequence[str] = droid.CAMERA_NAMES,
    ):
        for model in models:
            same_textures = model.ntex == models[0].ntex and np.array_equal(
                model.tex_data, models[0].tex_data
            )
            if model.nmesh or model.nhfield or model.nskin or not same_textures:
                raise ValueError(
                    "tiled rendering needs primitive geoms and the same textures in every model"
                )
        self.height, self.width = height, width
        self.cameras = tuple(cameras)
        self.batch_size = len(models)
        self.buffer_width = width * len(self.cameras)
        self.buffer_height = height * self.batch_size
        first = models[0]
        first.vis.global_.offwidth = max(first.vis.global_.offwidth, self.buffer_width)
        first.vis.global_.offheight = max(first.vis.global_.offheight, self.buffer_height)
        self._gl = mujoco.GLContext(self.buffer_width, self.buffer_height)
        self._gl.make_current()
        self._context = mujoco.MjrContext(first, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._option = mujoco.MjvOption()
        self._scenes = []
        for model in models:
            scene = mujoco.MjvScene(model, maxgeom=MAX_SCENE_GEOMS)
            scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
            self._scenes.append(scene)
        self._camera_ids = [
            [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name) for name in self.cameras]
            for model in models
        ]
        for ids in self._camera_ids:
            if min(ids) < 0:
                raise ValueError(f"model lacks one of the cameras {self.cameras}")
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._pixels = np.zeros((self.buffer_height, self.buffer_width, 3), np.uint8)

    def render(
        self,
        models: Sequence[mujoco.MjModel],
        datas: Sequence[mujoco.MjData],
        decorations: Sequence[DecorationFn | None] | None = None,
        active: Sequence[bool] | None = None,
    ) -> np.ndarray:
        """(B, num_cameras, H, W, 3) uint8; stations with active=False are skipped (zeros)."""
        self._gl.make_current()
        for b, (model, data) in enumerate(zip(models, datas)):
            if active is not None and not active[b]:
                continue
            scene = self._scenes[b]
            extra = decorations[b]() if decorations is not None and decorations[b] else ()
            for c, camera_id in enumerate(self._camera_ids[b]):
                self._camera.fixedcamid = camera_id
                mujoco.mjv_updateScene(
                    model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, scene
                )
                add_decorations(scene, extra)
                # OpenGL's origin is the bottom-left corner: station b's row counts from the top.
                bottom = self.buffer_height - (b + 1) * self.height
                viewport = mujoco.MjrRect(c * self.width, bottom, self.width, self.height)
                mujoco.mjr_render(viewport, scene, self._context)
        full = mujoco.MjrRect(0, 0, self.buffer_width, self.buffer_height)
        mujoco.mjr_readPixels(self._pixels, None, full, self._context)
        tiles = np.flipud(self._pixels).reshape(
            self.batch_size, self.height, len(self.cameras), self.width, 3
        )
        return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3, 4))

    def close(self) -> None:
        self._context.free()
        self._gl.free()


def add_decorations(scene: mujoco.MjvScene, decorations: Sequence[Decoration]) -> None:
    for geom_type, size, pos, mat, rgba in decorations:
        if scene.ngeom >= scene.maxgeom:
            return  # a full scene drops extra marks rather than failing a rollout
        mujoco.mjv_initGeom(
            scene.geoms[scene.ngeom], geom_type, size, pos, mat, rgba.astype(np.float32)
        )
        scene.ngeom += 1


def flat_disc(center: np.ndarray, radius: float, rgba, height: float = 0.0006) -> Decoration:
    """A thin vertical-axis cylinder lying on a surface (an ink dot)."""
    return (
        int(mujoco.mjtGeom.mjGEOM_CYLINDER),
        np.array([radius, height, 0.0]),
        np.asarray(center, np.float64),
        np.eye(3).ravel(),
        np.asarray(rgba, np.float32),
    )
