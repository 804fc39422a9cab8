"""The Stable Video Diffusion spatio-temporal UNet (Ctrl-World's denoiser) in Flax Linen.

Written here from diffusers 0.42.1 `UNetSpatioTemporalConditionModel` (read, not copied:
`models/unets/unet_spatio_temporal_condition.py`, `unet_3d_blocks.py`, `resnet.py`,
`transformers/transformer_temporal.py`, `attention.py`) and shared/research/ctrl_world.md §2, §6.
Ctrl-World (Robert-gyj/Ctrl-World @ 4c713d1) uses this UNet unchanged except that the
cross-attention context is given per frame (`frame_level_cond`); here the context is always
per frame, shape (B, F, L, D), which covers both SVD (L=1 image token repeated over frames) and
Ctrl-World (one action+text token per frame).

Layout: NHWC. Public shapes: `sample` (B, F, H, W, C_in) with C_in = 4 noisy + 4 condition
latent channels, `timesteps` (B,) = c_noise = ln(sigma)/4 (a float, not an integer step),
`context` (B, F, L, cross_attention_dim), `added_time_ids` (B, 3) = [fps, motion_bucket_id,
noise_aug_strength]; output (B, F, H, W, C_out). Internally spatial layers see (B*F, H, W, C)
flattened sample-major (index b*F + f, as `sample.flatten(0, 1)` in diffusers) and temporal
layers (B, F, H, W, C).

Facts the parity test pins down (every one changes the output if wrong):
- GroupNorm has 32 groups everywhere. eps: resnets of cross-attention down blocks 1e-6, of the
  plain down block and the mid block 1e-5, of every up block 1e-6 (diffusers' `get_up_block`
  does not forward the UNet's 1e-5), `conv_norm_out` 1e-5, transformer `norm` 1e-6.
- Temporal resnets normalise a (B, F, H, W, C) tensor, so their GroupNorm statistics span all
  frames of a sample (PyTorch's GroupNorm on (B, C, F, H, W)); Flax's GroupNorm reduces over all
  non-batch axes, which is the same.
- Temporal convs are (3, 1, 1) kernels zero-padded by one frame at both ends.
- Transformer LayerNorms use eps 1e-5 (PyTorch default, not Flax's 1e-6); GEGLU uses the exact
  erf GELU and splits its projection into (hidden, gate) in that order.
- Attention: q/k/v without bias, out projection with bias, head dim = channels / heads (64 in
  SVD: heads 5/10/20/20), no mask; temporal attention is non-causal over all frames, history
  frames included. The temporal blocks' cross-attention sees only frame 0's context.
- AlphaBlender `learned_with_images` (image_only_indicator is all zeros in SVD): out =
  s * spatial + (1 - s) * temporal with s = sigmoid(mix_factor), mix_factor initialised 0.5.
- The frame positional embedding (sinusoid of the frame index 0..F-1 through
  `time_pos_embed`) is added only to the temporal transformer's input.
- Downsample: 3x3 stride-2 conv with symmetric padding 1 (Flax 'SAME' would pad (0, 1)).
  Upsample: nearest neighbour to the next skip's size (x2 when sizes are even) then 3x3 conv.
- Skip connections: `concat([h, skip])`, h first; conv_in's output is the first skip.
- Sinusoids are diffusers' `Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)`:
  [cos, sin] with frequencies exp(-ln(1e4) k / (dim/2)).

Parameter names mirror the diffusers state-dict keys with list indices joined by '_'
(`down_blocks.0.resnets.1.spatial_res_block.conv1.weight` is
`down_blocks_0/resnets_1/spatial_res_block/conv1/kernel`), which is all `vlaw/convert` needs.
Logical axes on parameters: "embed" (input features / channels), "mlp" (output features of
convs and MLPs), "heads" (attention features), "norm" (norm scales and biases), None for
kernel taps and blend scalars. Blocks are heterogeneous (channel counts change per level), so
there is no `nn.scan`; `remat_policy` wraps every resnet and transformer block instead.
Sharding caveat: jax 0.10.2's SPMD partitioner (CPU, at least) returns wrong values for the
transformer blocks' spatial -> temporal token re-layout when a batch shard holds ONE example
and weights are split over both fsdp and tensor; two or more examples per shard are exact
(tests/models/world_model/test_sharding_bug.py has the pure-JAX reproduction).

Sizes (derived from the definitions, checked by the parameter-count test for `paper`): SVD
img2vid is 1,524,623,082 parameters in 1,428 tensors.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlaw.models.layers import (
    MixFactor,
    Resample,
    SpatioTemporalResBlock,
    config_preset,
    conv,
    dense,
    dot_product_attention,
    group_norm,
    layer_norm,
    nearest_resize,
    remat,
)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """SVD UNet hyper-parameters; the defaults are SVD img2vid's (and Ctrl-World's)."""

    in_channels: int = 8  # 4 noisy latent channels + 4 condition-image latent channels
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    # Down levels with transformers (CrossAttnDownBlockSpatioTemporal); the up path mirrors it.
    cross_attention_levels: tuple[bool, ...] = (True, True, True, False)
    num_attention_heads: tuple[int, ...] = (5, 10, 20, 20)  # head dim 64 at every level
    layers_per_block: int = 2  # up blocks have one more
    transformer_layers_per_block: int = 1
    cross_attention_dim: int = 1024
    addition_time_embed_dim: int = 256  # per added id; 3 ids -> 768 into add_embedding
    num_added_ids: int = 3
    dtype: str = "float32"  # activations
    param_dtype: str = "float32"  # master weights
    remat_policy: str = "none"  # a jax.checkpoint_policies name, or "none"

    @classmethod
    def preset(cls, name: str, **overrides) -> UNetConfig:
        """`tiny` (tests, <5M params), `sim` (CPU-trainable), `paper` (SVD img2vid)."""
        presets = {
            "tiny": dict(
                block_out_channels=(32, 64),
                layers_per_block=1,
                cross_attention_levels=(True, False),
                num_attention_heads=(2, 4),
                cross_attention_dim=32,
                addition_time_embed_dim=16,
            ),
            "sim": dict(  # ~50 GFLOP per forward of 4 x 11 frames of 3 x (8x8): CPU-trainable
                block_out_channels=(32, 64, 128),
                cross_attention_levels=(True, True, False),
                num_attention_heads=(1, 2, 4),
                cross_attention_dim=256,
                addition_time_embed_dim=64,
            ),
            "paper": {},
        }
        return config_preset(cls, presets, name, overrides)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """diffusers `Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)`: (N,) -> (N, dim).

    Always float32: the arguments reach ~1e3 for frame indices and added ids (motion bucket 127).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """diffusers `TimestepEmbedding`: linear_1 -> SiLU -> linear_2 (no post-activation)."""

    hidden: int
    out: int
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = dense(self.hidden, ("embed", "mlp"), "linear_1", self.dtype, self.param_dtype)(x)
        x = nn.silu(x)
        return dense(self.out, ("mlp", "embed"), "linear_2", self.dtype, self.param_dtype)(x)


class Attention(nn.Module):
    """diffusers `Attention` as SVD uses it: (N, T, C), context (N, S, Dc) or None -> (N, T, C)."""

    heads: int
    head_dim: int
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        context = x if context is None else context
        inner = self.heads * self.head_dim
        n, t, c = x.shape

        def project(name, y):
            y = dense(inner, ("embed", "heads"), name, d, p, use_bias=False)(y)
            return y.reshape(y.shape[0], y.shape[1], self.heads, self.head_dim)

        q, k, v = project("to_q", x), project("to_k", context), project("to_v", context)
        o = dot_product_attention(q, k, v).reshape(n, t, inner)
        return dense(c, ("heads", "embed"), "to_out_0", d, p)(o)


class GEGLU(nn.Module):
    """proj -> (hidden, gate) halves -> hidden * gelu(gate) with the exact erf GELU."""

    out: int
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = dense(2 * self.out, ("embed", "mlp"), "proj", self.dtype, self.param_dtype)(x)
        hidden, gate = jnp.split(h, 2, axis=-1)
        return hidden * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """GEGLU MLP with 4x width: keys `net.0.proj`, `net.2` (net.1 is a Dropout)."""

    out: int
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = GEGLU(4 * x.shape[-1], self.dtype, self.param_dtype, name="net_0")(x)
        return dense(self.out, ("mlp", "embed"), "net_2", self.dtype, self.param_dtype)(h)


class BasicTransformerBlock(nn.Module):
    """Spatial block: self-attention over H*W tokens of a frame, cross-attention, GEGLU MLP."""

    heads: int
    head_dim: int
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        d, p, c = self.dtype, self.param_dtype, x.shape[-1]
        x = x + Attention(self.heads, self.head_dim, d, p, name="attn1")(
            layer_norm("norm1", d, p)(x)
        )
        x = x + Attention(self.heads, self.head_dim, d, p, name="attn2")(
            layer_norm("norm2", d, p)(x), context
        )
        return x + FeedForward(c, d, p, name="ff")(layer_norm("norm3", d, p)(x))


class TemporalBasicTransformerBlock(nn.Module):
    """Temporal block: (B*F, HW, C) -> sequences (B*HW, F, C), ff_in, self/cross-attn, MLP."""

    heads: int
    head_dim: int
    num_frames: int
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, time_context: jax.Array) -> jax.Array:
        d, p, f = self.dtype, self.param_dtype, self.num_frames
        bf, s, c = x.shape
        b = bf // f
        x = x.reshape(b, f, s, c).transpose(0, 2, 1, 3).reshape(b * s, f, c)
        # ff_in keeps the width (time_mix_inner_dim == dim), so diffusers adds its residual.
        x = x + FeedForward(c, d, p, name="ff_in")(layer_norm("norm_in", d, p)(x))
        x = x + Attention(self.heads, self.head_dim, d, p, name="attn1")(
            layer_norm("norm1", d, p)(x)
        )
        x = x + Attention(self.heads, self.head_dim, d, p, name="attn2")(
            layer_norm("norm2", d, p)(x), time_context
        )
        x = x + FeedForward(c, d, p, name="ff")(layer_norm("norm3", d, p)(x))
        return x.reshape(b, s, f, c).transpose(0, 2, 1, 3).reshape(bf, s, c)


class TransformerSpatioTemporal(nn.Module):
    """diffusers `TransformerSpatioTemporalModel`: (B*F, H, W, C), context (B*F, L, D) -> same.

    The temporal branch gets the frame positional embedding added to its input and frame 0's
    context for its cross-attention; the result is blended, projected out and added to the
    block input (residual taken before the GroupNorm).
    """

    heads: int
    num_frames: int
    num_layers: int = 1
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        d, p, f = self.dtype, self.param_dtype, self.num_frames
        bf, hh, ww, c = x.shape
        b = bf // f
        head_dim = c // self.heads
        inner = self.heads * head_dim
        residual = x
        h = group_norm(1e-6, "norm", d, p)(x).reshape(bf, hh * ww, c)
        h = dense(inner, ("embed", "mlp"), "proj_in", d, p)(h)

        frame_pos = timestep_embedding(jnp.arange(f), c).astype(h.dtype)
        frame_pos = TimestepEmbedding(4 * c, c, d, p, name="time_pos_embed")(frame_pos)
        frame_pos = jnp.tile(frame_pos, (b, 1))[:, None, :]  # (B*F, 1, C), sample-major

        ctx0 = context.reshape(b, f, *context.shape[1:])[:, 0]  # frame 0's context (B, L, D)
        time_context = jnp.broadcast_to(ctx0[:, None], (b, hh * ww, *ctx0.shape[1:]))
        time_context = time_context.reshape(b * hh * ww, *ctx0.shape[1:])

        # One blend factor for the whole transformer, reused after every layer (diffusers keeps
        # a single `time_mixer` per TransformerSpatioTemporalModel, not one per layer).
        s = MixFactor(0.5, name="time_mixer")().astype(h.dtype)
        for i in range(self.num_layers):
            h = BasicTransformerBlock(self.heads, head_dim, d, p, name=f"transformer_blocks_{i}")(
                h, context
            )
            h_mix = TemporalBasicTransformerBlock(
                self.heads, head_dim, f, d, p, name=f"temporal_transformer_blocks_{i}"
            )(h + frame_pos, time_context)
            h = s * h + (1.0 - s) * h_mix
        h = dense(c, ("mlp", "embed"), "proj_out", d, p)(h)
        return h.reshape(bf, hh, ww, c) + residual


class _BlockOptions(nn.Module):
    """Fields shared by the UNet's down, mid and up blocks."""

    out: int
    heads: int
    has_attn: bool
    num_frames: int
    num_layers: int
    transformer_layers: int = 1
    remat_policy: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def resnet(self, eps: float, name: str):
        cls = remat(SpatioTemporalResBlock, self.remat_policy)
        return cls(
            self.out, self.num_frames, eps, eps, 0.5, False, self.dtype, self.param_dtype, name=name
        )

    def transformer(self, name: str):
        cls = remat(TransformerSpatioTemporal, self.remat_policy)
        return cls(
            self.heads,
            self.num_frames,
            self.transformer_layers,
            self.dtype,
            self.param_dtype,
            name=name,
        )


class DownBlock(_BlockOptions):
    """(Cross-attention) down block: returns the output and its skip tensors, in order."""

    add_downsample: bool = True

    @nn.compact
    def __call__(self, x, emb, ctx):
        # diffusers hard-codes eps 1e-6 in CrossAttnDownBlockSpatioTemporal, 1e-5 otherwise.
        eps = 1e-6 if self.has_attn else 1e-5
        skips = []
        for j in range(self.num_layers):
            x = self.resnet(eps, f"resnets_{j}")(x, emb)
            if self.has_attn:
                x = self.transformer(f"attentions_{j}")(x, ctx)
            skips.append(x)
        if self.add_downsample:
            x = Resample(self.out, 2, None, self.dtype, self.param_dtype, name="downsamplers_0")(x)
            skips.append(x)
        return x, skips


class MidBlock(_BlockOptions):
    """resnets_0 -> attentions_0 -> resnets_1, all at eps 1e-5."""

    @nn.compact
    def __call__(self, x, emb, ctx):
        x = self.resnet(1e-5, "resnets_0")(x, emb)
        x = self.transformer("attentions_0")(x, ctx)
        return self.resnet(1e-5, "resnets_1")(x, emb)


class UpBlock(_BlockOptions):
    """Up block: each resnet consumes one skip (popped from the end); eps 1e-6."""

    @nn.compact
    def __call__(self, x, emb, ctx, skips: tuple, upsample_size=None):
        """`skips`: this block's num_layers skip tensors in push order (the last is used first)."""
        for j in range(self.num_layers):
            x = jnp.concatenate([x, skips[-1 - j]], axis=-1)
            x = self.resnet(1e-6, f"resnets_{j}")(x, emb)
            if self.has_attn:
                x = self.transformer(f"attentions_{j}")(x, ctx)
        if upsample_size is not None:
            x = nearest_resize(x, upsample_size)
            x = Resample(self.out, 1, None, self.dtype, self.param_dtype, name="upsamplers_0")(x)
        return x


class UNetSpatioTemporal(nn.Module):
    """The SVD UNet. See the module docstring for shapes; returns float32 (B, F, H, W, C_out)."""

    config: UNetConfig

    @nn.compact
    def __call__(
        self,
        sample: jax.Array,
        timesteps: jax.Array,
        context: jax.Array,
        added_time_ids: jax.Array,
    ) -> jax.Array:
        cfg = self.config
        d, p = cfg.dtype, cfg.param_dtype
        b, f, hh, ww, _ = sample.shape
        levels = len(cfg.block_out_channels)
        common = dict(
            num_frames=f,
            transformer_layers=cfg.transformer_layers_per_block,
            remat_policy=cfg.remat_policy,
            dtype=d,
            param_dtype=p,
        )

        # Time and added-id embeddings, one per sample, repeated over its frames.
        t_emb = timestep_embedding(jnp.broadcast_to(timesteps, (b,)), cfg.block_out_channels[0])
        emb = TimestepEmbedding(
            cfg.time_embed_dim, cfg.time_embed_dim, d, p, name="time_embedding"
        )(t_emb.astype(d))
        ids = timestep_embedding(added_time_ids.reshape(-1), cfg.addition_time_embed_dim)
        ids = ids.reshape(b, cfg.num_added_ids * cfg.addition_time_embed_dim).astype(d)
        emb = emb + TimestepEmbedding(
            cfg.time_embed_dim, cfg.time_embed_dim, d, p, name="add_embedding"
        )(ids)
        emb = jnp.repeat(emb, f, axis=0)  # (B*F, T), sample-major like repeat_interleave
        ctx = context.astype(d).reshape(b * f, *context.shape[2:])  # (B*F, L, D)

        x = sample.astype(d).reshape(b * f, hh, ww, sample.shape[-1])
        x = conv(cfg.block_out_channels[0], "conv_in", d, p)(x)
        skips = [x]
        for i, out in enumerate(cfg.block_out_channels):
            x, level_skips = DownBlock(
                out,
                cfg.num_attention_heads[i],
                cfg.cross_attention_levels[i],
                num_layers=cfg.layers_per_block,
                add_downsample=i < levels - 1,
                name=f"down_blocks_{i}",
                **common,
            )(x, emb, ctx)
            skips.extend(level_skips)

        x = MidBlock(
            cfg.block_out_channels[-1],
            cfg.num_attention_heads[-1],
            True,
            num_layers=1,
            name="mid_block",
            **common,
        )(x, emb, ctx)

        for i in range(levels):
            level = levels - 1 - i
            n = cfg.layers_per_block + 1
            block_skips, skips = tuple(skips[-n:]), skips[:-n]
            # The skip consumed first by the next block fixes the upsampled size (diffusers
            # forwards it when sizes are odd; otherwise it is exactly x2 anyway).
            up_size = skips[-1].shape[1:3] if i < levels - 1 else None
            x = UpBlock(
                cfg.block_out_channels[level],
                cfg.num_attention_heads[level],
                cfg.cross_attention_levels[level],
                num_layers=n,
                name=f"up_blocks_{i}",
                **common,
            )(x, emb, ctx, block_skips, up_size)

        x = nn.silu(group_norm(1e-5, "conv_norm_out", d, p)(x))
        x = conv(cfg.out_channels, "conv_out", d, p)(x)
        return x.reshape(b, f, hh, ww, cfg.out_channels).astype(jnp.float32)
