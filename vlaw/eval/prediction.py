"""The world model's held-out prediction check (run by the `train_world_model` phase).

Check. After training, one chunk is predicted for `eval_windows` windows of the held-out
episodes (history and current frame given, `predict` with the config's sampler) and decoded;
the summary reports the PSNR of the predicted future frames against the true ones, beside the
copy-the-current-frame baseline and the VAE's own reconstruction PSNR (the ceiling), and the
prediction's and the copy's PSNR over the moving pixels alone (`psnr_where_it_moves`), where
copying cannot score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vlaw.agents.world_model import HISTORY_SPACING
from vlaw.data import droid, rlds_read, transforms
from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model.vae import TemporalVAE, encode_latents


def psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of uint8-range images (any shape), over all pixels."""
    mse = np.mean(np.square(prediction.astype(np.float64) - target.astype(np.float64)))
    return float(10.0 * np.log10(255.0**2 / max(mse, 1e-10)))


def evaluation_windows(
    config, episodes: Sequence[tuple[str, int]], dataset_dir: str, num_windows: int, image_size
) -> dict[str, Any]:
    """`num_windows` evenly spaced windows of the held-out episodes (history spacing 4):
    frames (N, T, V, H, W, 3) uint8 at the model's pixel size, poses (N, T, 7), instructions."""
    w = config.world_model
    layout = rlds_read.open_dataset(dataset_dir)
    wanted = {(str(p), int(i)) for p, i in episodes}
    shards = sorted({p for p, _ in episodes})
    frames, poses, instructions = [], [], []
    for raw in rlds_read.iter_raw_episodes(layout, shards):
        if (str(raw["shard_path"]), int(raw["record_index"])) not in wanted:
            continue
        episode = rlds_read.episode_from_raw(raw, layout)
        per_episode = max(1, -(-num_windows // len(episodes)))
        starts = np.linspace(0, episode.num_steps - 1, per_episode + 2)[1:-1].round().astype(int)
        idx = transforms.world_model_indices(
            episode.num_steps,
            num_history=int(w.num_history),
            num_future=int(w.num_future),
            frame_stride=int(w.frame_stride),
            history_spacing=HISTORY_SPACING[0],
            starts=starts,
        )
        steps = np.concatenate([idx["history"], idx["future"]], axis=1)  # (N, T)
        cams = np.stack([episode.observation[f"observation/{n}"] for n in droid.CAMERA_NAMES], 1)
        frames.append(resize_frames(cams, image_size)[steps])
        poses.append(droid.world_model_poses(episode.observation)[steps])
        instructions += [episode.instruction] * len(starts)
    return {
        "frames": np.concatenate(frames)[:num_windows],
        "poses": np.concatenate(poses)[:num_windows],
        "instructions": instructions[:num_windows],
    }


def resize_frames(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., h, w, 3) uint8, antialiased (as the training pipeline)."""
    if images.shape[-3:-1] == tuple(size):
        return images
    out = jax.image.resize(
        jnp.asarray(images, jnp.float32), (*images.shape[:-3], *size, 3), "linear", antialias=True
    )
    return np.asarray(jnp.clip(jnp.round(out), 0, 255)).astype(np.uint8)


# Grey levels a pixel's truth must differ from the current frame by to count as moving. Most
# of a robot clip holds still, so PSNR over every pixel rewards copying; at sim about a fifth of
# the predicted pixels move by more than this.
MOVING_THRESHOLD = 10


def psnr_where_it_moves(
    prediction: np.ndarray,
    target: np.ndarray,
    current: np.ndarray,
    threshold: int = MOVING_THRESHOLD,
) -> float | None:
    """PSNR in dB over the pixels whose target differs from `current` (broadcast against it) by
    more than `threshold` grey levels in some channel; None when nothing moves."""
    target = target.astype(np.int16)
    moving = np.any(np.abs(target - current.astype(np.int16)) > threshold, axis=-1)
    if not moving.any():
        return None
    return psnr(prediction[moving], target[moving])


def predict_windows(
    model: cw.CtrlWorld, vae: TemporalVAE, params, windows_: dict[str, Any], text, seed: int
) -> dict[str, np.ndarray]:
    """One chunk per window from its history and current frame, decoded to uint8 frames
    (N, F - 1, V, H, W, 3): "predicted", "truth", "reconstructed" (the codec's ceiling) and
    "current" (the current frame, (N, 1, V, H, W, 3))."""
    cfg = model.config
    th = cfg.num_history
    frames = jnp.asarray(windows_["frames"])  # (N, T, V, H, W, 3)
    pixels = frames.astype(jnp.float32) / 127.5 - 1.0
    encode = jax.jit(lambda p, x: cw.stack_views(encode_latents(vae, p, x)))
    decode = jax.jit(lambda p, z: cw.decode_views(vae, p, z, cfg.num_views, cfg.decode_chunk_size))
    latents = encode(params["vae"], pixels)  # posterior mode, (N, T, V*h, w, 4)
    poses = cw.normalize_poses(jnp.asarray(windows_["poses"]), cfg)
    text_embeds = jnp.asarray(text(windows_["instructions"]))
    chunk = cw.predict(
        model,
        params["world_model"],
        latents[:, :th],
        latents[:, th],
        poses,
        text_embeds,
        jax.random.PRNGKey(seed),
    )

    def to_uint8(latent_frames):
        views = jnp.moveaxis(decode(params["vae"], latent_frames), 1, 2)  # (N, F, V, H, W, 3)
        return np.asarray(jnp.clip(jnp.round((views + 1.0) * 127.5), 0, 255)).astype(np.uint8)

    return {
        "predicted": to_uint8(chunk)[:, 1:],
        "truth": np.asarray(frames[:, th + 1 :]),
        "reconstructed": to_uint8(latents[:, th:])[:, 1:],
        "current": np.asarray(frames[:, th : th + 1]),
    }


def evaluate_prediction(
    model: cw.CtrlWorld, vae: TemporalVAE, params, windows_: dict[str, Any], text, seed: int
) -> dict[str, float]:
    """`predict_windows` scored: PSNR of the predicted future frames vs the truth, beside
    copying the current frame and the VAE's reconstruction, over every pixel and over the
    pixels that move (None where none does)."""
    out = predict_windows(model, vae, params, windows_, text, seed)
    truth, current = out["truth"], out["current"]
    copied = np.broadcast_to(current, truth.shape)
    return {
        "psnr_prediction": psnr(out["predicted"], truth),
        "psnr_copy_current_frame": psnr(copied, truth),
        "psnr_vae_reconstruction": psnr(out["reconstructed"], truth),
        "psnr_prediction_moving": psnr_where_it_moves(out["predicted"], truth, current),
        "psnr_copy_moving": psnr_where_it_moves(copied, truth, current),
        "num_windows": int(truth.shape[0]),
    }
