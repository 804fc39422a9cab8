"""Qwen3-VL's vision encoder (transformers `Qwen3VLVisionModel`) as Flax Linen modules.

Facts this file relies on (checked against transformers 5.24 `models/qwen3_vl` and
shared/research/reward_dsrl_metrics.md §1.2-1.3, 1.6):

- A video of T frames (T padded to even by repeating the last frame) becomes T/2 *temporal
  patches*, each cut into (H/p) x (W/p) patches of 3 x 2 x p x p pixels (p = 16 at paper size).
  Within a temporal patch the patches are listed in *spatial-merge-block order*: 2x2 blocks in
  raster order, and the four patches of a block in raster order inside it, so that any four
  consecutive patches form one merged LLM token. Each patch row is flattened as (C, t, y, x),
  which makes the Conv3d patch embedding a plain matmul.
- A learned 48x48 (paper) absolute position table, bilinearly resampled with align_corners to
  each frame's patch grid, is added to the patch embeddings (the same table for every temporal
  patch).
- Attention never crosses temporal patches (each is its own full-attention segment), so a
  video of shape (B, T/2, N) is run as B*T/2 independent images: no mask is needed.
- 2D rotary embedding: half of the head dims rotate with the patch row, half with the column.
- DeepStack: after the blocks listed in `deepstack_layers`, a post-shuffle-norm merger turns
  the hidden states into LLM-width features that the language model adds to its first layers.

Layers are `nn.scan`ned. The DeepStack taps cut the stack into *stages* (a new stage starts
after every tapped block), each stage one scan, so the taps never have to ride along in the
scan carry or be stacked for every layer. Parameter names: `patch_embed`, `pos_embed`,
`stage_{s}/block/...` (leading `layers` axis), `merger`, `deepstack_merger_{k}`.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlaw.models.layers import dot_product_attention


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """Sizes of the vision tower (field names follow transformers' `Qwen3VLVisionConfig`)."""

    depth: int = 24
    hidden_size: int = 1024
    num_heads: int = 16
    intermediate_size: int = 4096
    out_hidden_size: int = 2560  # = the language model's width
    # 0-based blocks whose outputs are tapped. The tap of block `deepstack_layers[k]` goes
    # through `deepstack_merger_{k}`, but the taps reach the language model in block order
    # (text layer i gets the i-th tapped block), as transformers does for an unsorted list.
    deepstack_layers: tuple[int, ...] = (5, 11, 17)
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    num_position_embeddings: int = 2304  # a square grid (48 x 48)
    in_channels: int = 3
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def stages(self) -> tuple[tuple[int, int], ...]:
        """(first block, number of blocks) per scanned stage; a stage ends at every tap."""
        cuts = sorted({i + 1 for i in self.deepstack_layers} | {0, self.depth})
        return tuple((a, b - a) for a, b in zip(cuts[:-1], cuts[1:]))


_NORMAL = nn.initializers.normal(0.02)  # transformers' initializer_range for Qwen3-VL


def _init(axes: tuple[str | None, ...], base=_NORMAL):
    """An initializer whose parameter carries logical axis names (for sharding rules)."""
    return nn.with_logical_partitioning(base, axes)


# --------------------------------------------------------------------------------------------
# Host-side geometry (numpy; the grid is static, so these are constants under jit)
# --------------------------------------------------------------------------------------------


def merge_block_rows_cols(grid_h: int, grid_w: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) in patch units of each patch of one frame, listed in merge-block order.

    Shapes: returns two int arrays of shape (grid_h * grid_w,).
    """
    i = np.arange(grid_h * grid_w)
    blocks_w = grid_w // merge
    row = (i // (merge * merge * blocks_w)) * merge + (i // merge) % merge
    col = ((i // (merge * merge)) % blocks_w) * merge + i % merge
    return row, col


def position_embedding_taps(
    grid_h: int, grid_w: int, side: int, merge: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear (align_corners=True) taps that resample a side x side table to a frame's grid.

    Shapes: indices (grid_h * grid_w, 4) into the flattened table, weights (grid_h * grid_w, 4),
    rows in merge-block order.
    """
    row, col = merge_block_rows_cols(grid_h, grid_w, merge)

    def axis_taps(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        src = index.astype(np.float32) * np.float32(side - 1) / np.float32(max(size - 1, 1))
        floor = np.floor(src)
        taps = floor.astype(np.int64)[:, None] + np.arange(2)
        weights = np.clip(1.0 - np.abs(src[:, None] - taps), 0.0, None).astype(np.float32)
        return np.clip(taps, 0, side - 1), weights

    row_taps, row_w = axis_taps(row, grid_h)
    col_taps, col_w = axis_taps(col, grid_w)
    indices = (row_taps[:, :, None] * side + col_taps[:, None, :]).reshape(-1, 4)
    weights = (row_w[:, :, None] * col_w[:, None, :]).reshape(-1, 4)
    return indices, weights


def vision_rope(grid_h: int, grid_w: int, config: VisionConfig) -> tuple[jax.Array, jax.Array]:
    """cos/sin of the 2D (axial) rotary embedding for one frame, in float32.

    Shapes: (grid_h * grid_w, head_dim) each. The first quarter of the angles follow the row,
    the second quarter the column, and the half is repeated (the `rotate_half` convention).
    """
    spatial = config.head_dim // 2
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, spatial, 2, dtype=np.float32) / spatial))
    row, col = merge_block_rows_cols(grid_h, grid_w, config.spatial_merge_size)
    angles = np.concatenate([row[:, None] * inv_freq, col[:, None] * inv_freq], axis=-1)
    angles = jnp.asarray(np.concatenate([angles, angles], axis=-1), jnp.float32)
    return jnp.cos(angles), jnp.sin(angles)


def rotate_half(x: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotary embedding in float32 (as the reference does), cast back to x's dtype.

    Shapes: x (..., T, N, D); cos/sin broadcastable to (..., T, 1, D).
    """
    xf = x.astype(jnp.float32)
    return (xf * cos + rotate_half(xf) * sin).astype(x.dtype)


# --------------------------------------------------------------------------------------------
# Pixels to patches
# --------------------------------------------------------------------------------------------


def resized_frame_size(height: int, width: int, factor: int = 32) -> tuple[int, int]:
    """The processor's `smart_resize` rounding of a frame to multiples of patch x merge.

    Only the rounding part: a 16-frame clip at robot-camera resolutions is far inside the
    processor's total pixel budget, so its min/max-pixels rescaling never triggers for us.
    """
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    return max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)


def normalize_frames(frames: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
    """uint8 frames -> floats in [-1, 1] (rescale 1/255, mean = std = 0.5), resized if asked.

    Shapes: (..., T, H, W, 3) -> (..., T, h, w, 3) float32. Resizing is bicubic (jax.image),
    close to but not bit-equal with torchvision's; like the processor (which resizes uint8
    frames) the result is rounded and clamped back to 0..255 before normalising. The model
    sees this preprocessing both in fine-tuning and in labelling.
    """
    x = frames.astype(jnp.float32)
    if size is not None and tuple(x.shape[-3:-1]) != tuple(size):
        x = jax.image.resize(x, (*x.shape[:-3], *size, x.shape[-1]), method="cubic")
        x = jnp.clip(jnp.round(x), 0.0, 255.0)
    return (x / 255.0 - 0.5) / 0.5


def patchify_video(frames: jax.Array, config: VisionConfig) -> jax.Array:
    """Cut a normalised video into the ViT's patch rows (the processor's `patchify`).

    Shapes: frames (B, T, H, W, C) with H, W multiples of patch x merge ->
    (B, ceil(T/2), (H/p) * (W/p), C * 2 * p * p), patches in merge-block order, each row
    flattened as (C, t, y, x).
    """
    b, t, h, w, c = frames.shape
    tp, p, m = config.temporal_patch_size, config.patch_size, config.spatial_merge_size
    if h % (p * m) or w % (p * m):
        raise ValueError(f"frame size {h}x{w} is not a multiple of patch*merge = {p * m}")
    if pad := -t % tp:  # the processor repeats the last frame
        frames = jnp.concatenate([frames, jnp.repeat(frames[:, -1:], pad, axis=1)], axis=1)
        t += pad
    gh, gw = h // p, w // p
    x = frames.reshape(b, t // tp, tp, gh // m, m, p, gw // m, m, p, c)
    # -> (B, gt, block_row, block_col, in_row, in_col, C, t, y, x)
    x = x.transpose(0, 1, 3, 6, 4, 7, 9, 2, 5, 8)
    return x.reshape(b, t // tp, gh * gw, c * tp * p * p)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class VisionBlock(nn.Module):
    """Pre-norm ViT block: x += attn(LN(x)); x += MLP(LN(x)). Shapes: (G, N, D) -> (G, N, D)."""

    config: VisionConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, cos, sin):
        cfg = self.config
        heads, head_dim = cfg.num_heads, cfg.head_dim
        norm = dict(
            epsilon=cfg.norm_eps,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            use_fast_variance=False,
            scale_init=_init(("embed",), nn.initializers.ones),
            bias_init=_init(("embed",), nn.initializers.zeros),
        )
        h = nn.LayerNorm(name="norm1", **norm)(x)
        # q, k and v as one (D -> 3, heads, head_dim) matmul, the checkpoint's fused `qkv`.
        qkv = nn.DenseGeneral(
            (3, heads, head_dim),
            kernel_init=_init(("embed", None, "heads", "head_dim")),
            bias_init=_init((None, "heads", "head_dim"), nn.initializers.zeros),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="qkv",
        )(h)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = apply_rope(q, cos[:, None, :], sin[:, None, :])
        k = apply_rope(k, cos[:, None, :], sin[:, None, :])
        attn = dot_product_attention(q, k, v, scale=head_dim**-0.5)
        attn = nn.DenseGeneral(
            cfg.hidden_size,
            axis=(-2, -1),
            kernel_init=_init(("heads", "head_dim", "embed")),
            bias_init=_init(("embed",), nn.initializers.zeros),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )(attn)
        x = x + attn
        h = nn.LayerNorm(name="norm2", **norm)(x)
        h = nn.Dense(
            cfg.intermediate_size,
            kernel_init=_init(("embed", "mlp")),
            bias_init=_init(("mlp",), nn.initializers.zeros),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="linear_fc1",
        )(h)
        h = jax.nn.gelu(h, approximate=True)  # gelu_pytorch_tanh
        h = nn.Dense(
            cfg.hidden_size,
            kernel_init=_init(("mlp", "embed")),
            bias_init=_init(("embed",), nn.initializers.zeros),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="linear_fc2",
        )(h)
        return x + h


class _ScannedVisionBlock(nn.Module):
    """Adapter giving `VisionBlock` the (carry, x) -> (carry, y) signature of `nn.scan`."""

    config: VisionConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat_policy: str | None = None

    @nn.compact
    def __call__(self, x, _, cos, sin):
        block = VisionBlock
        if self.remat_policy is not None:
            block = nn.remat(
                block, prevent_cse=False, policy=getattr(jax.checkpoint_policies, self.remat_policy)
            )
        x = block(self.config, self.dtype, self.param_dtype, name="block")(x, cos, sin)
        return x, None


class PatchMerger(nn.Module):
    """Merge each 2x2 block of patches into one LLM-width token.

    Shapes: (G, N, D) -> (G, N/4, out). `postshuffle_norm` (DeepStack mergers) normalises the
    concatenated 4D vector; the final merger normalises each patch before concatenation.
    """

    config: VisionConfig
    postshuffle_norm: bool
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        g, n, d = x.shape
        merged = d * cfg.spatial_merge_size**2
        norm = nn.LayerNorm(
            epsilon=cfg.norm_eps,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            use_fast_variance=False,
            scale_init=_init(("mlp" if self.postshuffle_norm else "embed",), nn.initializers.ones),
            bias_init=_init(("mlp" if self.postshuffle_norm else "embed",), nn.initializers.zeros),
            name="norm",
        )
        if self.postshuffle_norm:
            x = norm(x.reshape(g, n // cfg.spatial_merge_size**2, merged))
        else:
            x = norm(x).reshape(g, n // cfg.spatial_merge_size**2, merged)
        x = nn.Dense(
            merged,
            kernel_init=_init((None, "mlp")),
            bias_init=_init(("mlp",), nn.initializers.zeros),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="linear_fc1",
        )(x)
        x = jax.nn.gelu(x, approximate=False)  # nn.GELU(): the exact erf form here
        return nn.Dense(
            cfg.out_hidden_size,
            kernel_init=_init(("mlp", "embed")),
            bias_init=_init(("embed",), nn.initializers.zeros),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="linear_fc2",
        )(x)


class VisionEncoder(nn.Module):
    """Qwen3-VL ViT: patches -> merged LLM tokens plus DeepStack features.

    Shapes: patches (B, Tg, gh * gw, patch_dim) from `patchify_video` with the frame's patch
    grid (gh, gw) given statically -> tokens (B, Tg * gh * gw / 4, out_hidden_size) and
    deepstack (K, B, Tg * gh * gw / 4, out_hidden_size), K = len(deepstack_layers), in the
    tapped blocks' order (not the list's). Tokens are ordered (temporal patch, merged row,
    merged column), the LLM's placeholder order.
    """

    config: VisionConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat_policy: str | None = None

    @nn.compact
    def __call__(self, patches: jax.Array, grid_hw: tuple[int, int]):
        cfg = self.config
        b, tg, n, _ = patches.shape
        gh, gw = grid_hw
        if gh * gw != n:
            raise ValueError(f"grid {gh}x{gw} does not match {n} patches per frame")
        x = nn.Dense(
            cfg.hidden_size,
            kernel_init=_init((None, "embed")),
            bias_init=_init(("embed",), nn.initializers.zeros),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="patch_embed",
        )(patches)
        table = self.param(
            "pos_embed",
            _init((None, "embed")),
            (cfg.num_position_embeddings, cfg.hidden_size),
            self.param_dtype,
        )
        side = math.isqrt(cfg.num_position_embeddings)
        idx, w = position_embedding_taps(gh, gw, side, cfg.spatial_merge_size)
        pos = jnp.einsum("nk,nkd->nd", jnp.asarray(w), table[jnp.asarray(idx)])
        x = (x + pos.astype(x.dtype)).reshape(b * tg, n, cfg.hidden_size)

        cos, sin = vision_rope(gh, gw, cfg)
        taps = []
        for s, (first, length) in enumerate(cfg.stages):
            stage = nn.scan(
                _ScannedVisionBlock,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(0, nn.broadcast, nn.broadcast),
                length=length,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = stage(cfg, self.dtype, self.param_dtype, self.remat_policy, name=f"stage_{s}")(
                x, jnp.arange(length), cos, sin
            )
            last = first + length - 1
            if last in cfg.deepstack_layers:
                k = cfg.deepstack_layers.index(last)
                merger = PatchMerger(
                    cfg, True, self.dtype, self.param_dtype, name=f"deepstack_merger_{k}"
                )
                taps.append(merger(x).reshape(b, -1, cfg.out_hidden_size))
        tokens = PatchMerger(cfg, False, self.dtype, self.param_dtype, name="merger")(x)
        out_tokens = tokens.reshape(b, -1, cfg.out_hidden_size)
        if not taps:
            return out_tokens, jnp.zeros((0, *out_tokens.shape), out_tokens.dtype)
        # Block order, whatever the order of `deepstack_layers` (see its note in VisionConfig).
        return out_tokens, jnp.stack(taps)
