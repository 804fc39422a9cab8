"""Array transforms shared by the data pipelines and the models: normalization (openpi's exact
formulas), resize-with-pad, and the index arithmetic of action chunks and frame windows.

Everything here works on numpy arrays; `normalize`/`unnormalize` and `resize_with_pad` also
accept jax arrays (and trace under jit), so the policy can apply them on device. No TensorFlow.
"""

from typing import Any

import numpy as np

from vlaw.data.norm_stats import NormStats

# openpi's epsilon in both normalizations (openpi.md §3.3).
NORM_EPSILON = 1e-6


def _array_module(x: Any):
    if isinstance(x, np.ndarray | np.generic | float | int):
        return np
    import jax.numpy as jnp

    return jnp


# --------------------------------------------------------------------------------------------
# Normalization (openpi src/openpi/transforms.py semantics, see shared/research/openpi.md §3.3).


def normalize(x, stats: NormStats, *, use_quantiles: bool):
    """Normalizes the last axis of `x` (..., D) with `stats` (vectors of length >= D).

    Quantile (pi0.5, pi0-FAST): (x - q01) / (q99 - q01 + 1e-6) * 2 - 1, NOT clipped.
    Z-score (pi0):              (x - mean) / (std + 1e-6).
    Statistics are sliced to the data's last dimension, as openpi does.
    """
    dim = x.shape[-1]
    if use_quantiles:
        if stats.q01 is None or stats.q99 is None:
            raise ValueError("quantile normalization needs q01 and q99 in the norm stats")
        q01, q99 = stats.q01[..., :dim], stats.q99[..., :dim]
        return (x - q01) / (q99 - q01 + NORM_EPSILON) * 2.0 - 1.0
    mean, std = stats.mean[..., :dim], stats.std[..., :dim]
    return (x - mean) / (std + NORM_EPSILON)


def unnormalize(x, stats: NormStats, *, use_quantiles: bool):
    """Inverts `normalize` on the last axis of `x` (..., D).

    Quantile: (x + 1) / 2 * (q99 - q01 + 1e-6) + q01 on the first len(q01) dims; any further
    (padding) dims pass through unchanged. Z-score: x * (std + 1e-6) + mean, with mean and std
    padded by 0 and 1 to D (openpi's padding; padded dims come out scaled by 1 + 1e-6).
    """
    xp = _array_module(x)
    dim = x.shape[-1]
    if use_quantiles:
        if stats.q01 is None or stats.q99 is None:
            raise ValueError("quantile unnormalization needs q01 and q99 in the norm stats")
        stat_dim = min(dim, stats.q01.shape[-1])
        q01, q99 = stats.q01[..., :stat_dim], stats.q99[..., :stat_dim]
        head = (x[..., :stat_dim] + 1.0) / 2.0 * (q99 - q01 + NORM_EPSILON) + q01
        if stat_dim == dim:
            return head
        return xp.concatenate([head, x[..., stat_dim:]], axis=-1)
    mean = _pad_last(stats.mean[..., :dim], dim, 0.0)
    std = _pad_last(stats.std[..., :dim], dim, 1.0)
    return x * (std + NORM_EPSILON) + mean


def _pad_last(vector: np.ndarray, dim: int, value: float) -> np.ndarray:
    missing = dim - vector.shape[-1]
    if missing <= 0:
        return vector
    widths = [(0, 0)] * (vector.ndim - 1) + [(0, missing)]
    return np.pad(vector, widths, constant_values=value)


# --------------------------------------------------------------------------------------------
# Images.


def resize_with_pad(images, height: int, width: int):
    """Resizes (..., H, W, C) uint8 images to (..., height, width, C) keeping the aspect ratio,
    centring them on black (zero) padding: openpi's `image_tools.resize_with_pad` geometry.

    openpi resizes with PIL's bilinear filter, which widens its support when downscaling
    (anti-aliasing); `jax.image.resize(method="linear", antialias=True)` is the same filter
    family, so results match PIL up to a few grey levels of rounding. Runs on numpy or jax
    input (jit-able: all sizes are static); returns the same array type family (jax).
    """
    import jax
    import jax.numpy as jnp

    cur_height, cur_width = images.shape[-3], images.shape[-2]
    if (cur_height, cur_width) == (height, width):
        return jnp.asarray(images)
    ratio = max(cur_width / width, cur_height / height)
    resized_height = int(cur_height / ratio)
    resized_width = int(cur_width / ratio)
    batch_shape = images.shape[:-3]
    channels = images.shape[-1]
    resized = jax.image.resize(
        jnp.asarray(images, jnp.float32),
        (*batch_shape, resized_height, resized_width, channels),
        method="linear",
        antialias=True,
    )
    resized = jnp.clip(jnp.round(resized), 0, 255).astype(jnp.uint8)
    pad_top = max(0, (height - resized_height) // 2)
    pad_left = max(0, (width - resized_width) // 2)
    widths = [(0, 0)] * len(batch_shape) + [
        (pad_top, height - resized_height - pad_top),
        (pad_left, width - resized_width - pad_left),
        (0, 0),
    ]
    return jnp.pad(resized, widths)


# --------------------------------------------------------------------------------------------
# Index arithmetic of chunks and windows (numpy; the tf.data windows use these).


def chunk_indices(num_steps: int, horizon: int, starts: np.ndarray | None = None) -> np.ndarray:
    """(len(starts), horizon) step indices start..start+horizon-1, clipped to the last step.

    openpi's convention: chunks that run past the end repeat the final step's action.
    `starts` defaults to every step (0..num_steps-1).
    """
    starts = np.arange(num_steps) if starts is None else np.asarray(starts)
    return np.minimum(starts[:, None] + np.arange(horizon)[None, :], num_steps - 1)


def chunk_actions(actions: np.ndarray, horizon: int) -> np.ndarray:
    """(T, D) actions -> (T, horizon, D) chunks, end chunks repeating the final action."""
    return actions[chunk_indices(actions.shape[0], horizon)]


def uniform_frame_indices(num_steps: int, num_frames: int) -> np.ndarray:
    """`linspace(0, T-1, num_frames).round()`: the reward model's frame sampling (App. C).

    numpy rounds halves to even, which is what "round" means in the paper's numpy sampling.
    """
    return np.round(np.linspace(0, num_steps - 1, num_frames)).astype(np.int64)


def world_model_indices(
    num_steps: int,
    *,
    num_history: int,
    num_future: int,
    frame_stride: int,
    history_spacing: int | np.ndarray,
    starts: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Step indices of Ctrl-World windows, one window per current step t (default: every step).

    Frames are `frame_stride` robot steps apart (15 Hz -> 5 Hz for stride 3). With
    `s = frame_stride`, `k = history_spacing` (in world-model frames; Ctrl-World trains with 4
    or 8, ctrl_world.md §1.3) and everything clipped into [0, T-1]:
      history: t - (num_history - i) * k * s for i = 0..num_history-1 (oldest first)
      future:  t + j * s for j = 0..num_future-1 (j = 0 is the current frame)
      actions: t .. t + (num_future - 1) * s - 1 (the raw 15 Hz actions between the frames)
    `history_spacing` may be one value per window ((N,) array); 0 makes every history frame
    the current frame (Ctrl-World's 15 % "no history" training case).

    Returns {"history": (N, num_history), "future": (N, num_future),
             "actions": (N, (num_future - 1) * frame_stride)} int64 arrays.
    """
    starts = np.arange(num_steps) if starts is None else np.asarray(starts)
    last = num_steps - 1
    spacing = np.broadcast_to(np.asarray(history_spacing), starts.shape)[:, None]
    history_offsets = -(num_history - np.arange(num_history))[None, :] * spacing * frame_stride
    future_offsets = np.arange(num_future)[None, :] * frame_stride
    action_offsets = np.arange((num_future - 1) * frame_stride)[None, :]
    clip = lambda offsets: np.clip(starts[:, None] + offsets, 0, last)
    return {
        "history": clip(history_offsets),
        "future": clip(future_offsets),
        "actions": clip(action_offsets),
    }
