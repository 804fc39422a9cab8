"""Blocks shared across the models. Attention goes through `dot_product_attention` only.

On GPU the cuDNN fused kernel is used (measured on one H100: 594 vs 112 TFLOP/s for XLA's
default at B8 T4096 H16 D128 bf16, shared/research/device_measurements.md); on CPU and TPU the
XLA path. cuDNN needs fp16/bf16 inputs and head_dim <= 128 (a multiple of 8), so other cases
fall back to XLA rather than failing.

The world model's UNet and VAE share the rest of this file: PyTorch-initialised dense/conv
layers and norms carrying logical axis names, diffusers' resnets (2D, temporal and their
learned blend), its resampling conv and nearest-neighbour resize. Their parameter names are
diffusers' state-dict keys (see `vlaw/models/world_model/unet.py`), which the converter and the
parity tests rely on, so renaming a module here renames checkpoint keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _cudnn_supported(query: jax.Array, bias: jax.Array | None) -> bool:
    if jax.default_backend() != "gpu":
        return False
    if query.dtype not in (jnp.bfloat16, jnp.float16):
        return False
    head_dim = query.shape[-1]
    return head_dim <= 128 and head_dim % 8 == 0 and bias is None


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    implementation: str | None = None,
) -> jax.Array:
    """Multi-head attention, the one wrapper every model uses.

    Shapes: query (B, T, N, D), key/value (B, S, K, D) with N a multiple of K (grouped-query
    attention repeats K heads), mask broadcastable to (B, N, T, S) with True = attend, bias
    likewise (added to the logits). Returns (B, T, N, D) in the query's dtype.

    `is_causal` and the per-example `*_seq_lengths` (B,) int32 express causal and padding masks
    natively, which cuDNN applies without materialising a (B, N, T, S) mask; prefer them to
    `mask` where they suffice.

    `implementation` forces "xla" or "cudnn"; None picks cuDNN where it is supported.
    """
    if implementation is None:
        implementation = "cudnn" if _cudnn_supported(query, bias) else "xla"
    return jax.nn.dot_product_attention(
        query,
        key,
        value,
        bias=bias,
        mask=mask,
        scale=scale,
        is_causal=is_causal,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        implementation=implementation,
    )


def config_preset(cls, presets: dict[str, dict], name: str, overrides: dict):
    """`cls` built from the fields of its preset `name` in `presets`, then `overrides`."""
    if name not in presets:
        raise ValueError(f"unknown {cls.__name__} preset {name!r}; choose one of {sorted(presets)}")
    return cls(**{**presets[name], **overrides})


def remat_policy(name: str | None):
    """The `jax.checkpoint_policies` entry a config names (`train.remat_policy`).

    "none" (or None) disables rematerialisation (returns None: callers then skip `nn.remat`);
    any other name must be an attribute of `jax.checkpoint_policies`, e.g.
    "nothing_saveable" (recompute everything: least memory) or
    "dots_with_no_batch_dims_saveable" (keep matmul outputs: less recompute).
    """
    if name in ("none", None):
        return None
    policy = getattr(jax.checkpoint_policies, name, None)
    if policy is None:
        raise ValueError(f"unknown remat policy {name!r}: not in jax.checkpoint_policies")
    return policy


# torch.nn.Linear / Conv default init (kaiming_uniform with a=sqrt(5) -> U(+-1/sqrt(fan_in))).
_TORCH_LIKE_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def dense(features: int, axes: tuple, name: str, dtype, param_dtype, use_bias: bool = True):
    """nn.Dense with logical axis names on the kernel (and the bias on the output axis)."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(_TORCH_LIKE_INIT, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[-1],)),
        name=name,
    )


def conv(
    features: int,
    name: str,
    dtype,
    param_dtype,
    kernel: Sequence[int] = (3, 3),
    stride: int = 1,
    padding=None,
):
    """nn.Conv with PyTorch-style explicit padding (default: k//2 on every side)."""
    if padding is None:
        padding = tuple((k // 2, k // 2) for k in kernel)
    axes = (None,) * len(kernel) + ("embed", "mlp")
    return nn.Conv(
        features,
        kernel_size=tuple(kernel),
        strides=stride,
        padding=padding,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(_TORCH_LIKE_INIT, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
        name=name,
    )


def _norm_options(eps: float, name: str, dtype, param_dtype) -> dict:
    """What GroupNorm and LayerNorm share: PyTorch's two-pass variance (matches it to float32
    rounding), scale 1 and bias 0 on the "norm" axis."""
    return dict(
        epsilon=eps,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
        name=name,
    )


def group_norm(eps: float, name: str, dtype, param_dtype):
    """32-group GroupNorm, as every diffusers norm of the UNet and VAE."""
    return nn.GroupNorm(num_groups=32, **_norm_options(eps, name, dtype, param_dtype))


def layer_norm(name: str, dtype, param_dtype, eps: float = 1e-5):
    """LayerNorm at PyTorch's default eps 1e-5 (Flax's is 1e-6)."""
    return nn.LayerNorm(**_norm_options(eps, name, dtype, param_dtype))


def remat(module_cls, policy_name: str | None):
    """`module_cls` wrapped in nn.remat with the policy `remat_policy` names ("none": as is)."""
    policy = remat_policy(policy_name)
    return module_cls if policy is None else nn.remat(module_cls, policy=policy)


class MixFactor(nn.Module):
    """AlphaBlender's learned scalar `mix_factor` (shape (1,)); returns sigmoid(mix_factor)."""

    init_value: float

    @nn.compact
    def __call__(self) -> jax.Array:
        init = nn.with_logical_partitioning(nn.initializers.constant(self.init_value), (None,))
        return jax.nn.sigmoid(self.param("mix_factor", init, (1,), jnp.float32))


class ResnetBlock2D(nn.Module):
    """Pre-norm resnet: (N, H, W, Cin), temb (N, T) or None -> (N, H, W, out)."""

    out: int
    eps: float
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        h = conv(self.out, "conv1", d, p)(nn.silu(group_norm(self.eps, "norm1", d, p)(x)))
        if temb is not None:
            proj = dense(self.out, ("embed", "mlp"), "time_emb_proj", d, p)(nn.silu(temb))
            h = h + proj[:, None, None, :]
        h = conv(self.out, "conv2", d, p)(nn.silu(group_norm(self.eps, "norm2", d, p)(h)))
        if x.shape[-1] != self.out:
            x = conv(self.out, "conv_shortcut", d, p, kernel=(1, 1))(x)
        return x + h


class TemporalResnetBlock(nn.Module):
    """Resnet over time only: (B, F, H, W, C), temb (B, F, T) or None -> same shape.

    GroupNorm statistics span frames (the tensor is normalised whole per sample); convs are
    (3, 1, 1) zero-padded by one frame on both ends.
    """

    eps: float
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        d, p, c = self.dtype, self.param_dtype, x.shape[-1]
        h = group_norm(self.eps, "norm1", d, p)(x)
        h = conv(c, "conv1", d, p, kernel=(3, 1, 1))(nn.silu(h))
        if temb is not None:
            proj = dense(c, ("embed", "mlp"), "time_emb_proj", d, p)(nn.silu(temb))
            h = h + proj[:, :, None, None, :]
        h = group_norm(self.eps, "norm2", d, p)(h)
        h = conv(c, "conv2", d, p, kernel=(3, 1, 1))(nn.silu(h))
        return x + h


class SpatioTemporalResBlock(nn.Module):
    """Spatial resnet, temporal resnet, learned blend: (B*F, H, W, Cin) -> (B*F, H, W, out).

    `learned_with_images` (UNet): out = s * spatial + (1 - s) * temporal, s = sigmoid(mix).
    `switch_mix` (VAE decoder's `switch_spatial_to_temporal_mix`): s is replaced by 1 - s.
    """

    out: int
    num_frames: int
    eps: float
    temporal_eps: float
    merge_factor: float = 0.5
    switch_mix: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        spatial = ResnetBlock2D(self.out, self.eps, d, p, name="spatial_res_block")(x, temb)
        bf, hh, ww, c = spatial.shape
        b = bf // self.num_frames
        spatial = spatial.reshape(b, self.num_frames, hh, ww, c)
        temb_f = None if temb is None else temb.reshape(b, self.num_frames, -1)
        temporal = TemporalResnetBlock(self.temporal_eps, d, p, name="temporal_res_block")(
            spatial, temb_f
        )
        s = MixFactor(self.merge_factor, name="time_mixer")().astype(spatial.dtype)
        if self.switch_mix:
            s = 1.0 - s
        return (s * spatial + (1.0 - s) * temporal).reshape(bf, hh, ww, c)


def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """PyTorch `F.interpolate(mode="nearest")` on NHWC: out[i] = in[floor(i * in / out)]."""
    rows = jnp.floor(jnp.arange(size[0]) * (x.shape[1] / size[0])).astype(jnp.int32)
    cols = jnp.floor(jnp.arange(size[1]) * (x.shape[2] / size[1])).astype(jnp.int32)
    return x[:, rows][:, :, cols]


class Resample(nn.Module):
    """Holds the 3x3 `conv` of diffusers' Downsample2D (stride 2) / Upsample2D (stride 1).

    `padding` None is PyTorch's symmetric padding 1; the VAE encoder passes ((0, 1), (0, 1)).
    """

    out: int
    stride: int
    padding: tuple | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        return conv(
            self.out, "conv", self.dtype, self.param_dtype, stride=self.stride, padding=self.padding
        )(x)
