"""SVD's latent VAE (`AutoencoderKLTemporalDecoder`): a 2D KL-f8 encoder and a temporal decoder.

Written here from diffusers 0.42.1 (`models/autoencoders/autoencoder_kl_temporal_decoder.py`,
`autoencoders/vae.py`, `unets/unet_3d_blocks.py` `MidBlockTemporalDecoder` /
`UpBlockTemporalDecoder`) and shared/research/ctrl_world.md §3, §6. Layout NHWC.

- `encode(x)`: pixels (N, H, W, 3) in [-1, 1] -> (mean, logvar), each (N, H/8, W/8, 4) for the
  paper sizes (one factor 2 per level but the last). Per frame, purely 2D. `.mode()` is the
  mean; `.sample()` is mean + exp(logvar/2) * eps with logvar clipped to [-30, 20].
- `decode(z, num_frames)`: latents (B*F, h, w, 4), sample-major, -> pixels (B*F, H, W, 3). The
  decoder mixes frames (temporal resnets and a final (3, 1, 1) `time_conv_out`), so the output
  depends on which frames are decoded together: `decode_latents` reproduces the chunking of the
  references (SVD: one chunk; Ctrl-World: `decode_chunk_size = 7` per view).
- Diffusion latents are `scaling_factor * z` (0.18215); SVD's condition image is the unscaled
  `mode()`; Ctrl-World trains on `sample() * 0.18215` (ctrl_world.md §1.2, §3.1).

Facts that differ from the UNet (each checked by the parity test): GroupNorm eps 1e-6
everywhere except the decoder's temporal resnets (1e-5); encoder downsampling pads (0, 1) on
the right/bottom only, then a stride-2 conv without padding; the mid-block attentions are one
head of the full width (scale 1/sqrt(C)) with a GroupNorm inside, biased q/k/v/out and the
residual added inside; decoder blends are `learned` with `switch_spatial_to_temporal_mix`:
out = (1 - s) * spatial + s * temporal, s = sigmoid(mix_factor), mix_factor initialised 0;
decoder resnets have no time embedding. There is no `post_quant_conv`.

Sizes: the SVD VAE is 97,742,847 parameters in 374 tensors (encoder 34,163,592, quant_conv
72, decoder 63,579,183; checked by the parameter-count test).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlaw.models.layers import (
    Resample,
    ResnetBlock2D,
    SpatioTemporalResBlock,
    config_preset,
    conv,
    dense,
    dot_product_attention,
    group_norm,
    nearest_resize,
    remat,
)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Defaults are `stabilityai/stable-video-diffusion-img2vid` `vae/config.json`."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    # Decoder up blocks have one more. Must be 2: diffusers' MidBlockTemporalDecoder builds
    # `layers_per_block` resnets but runs only resnets 0 and 1 around its one attention.
    layers_per_block: int = 2
    latent_channels: int = 4
    scaling_factor: float = 0.18215
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat_policy: str = "none"
    # "kl": the autoencoder above. "pixels": no network, a lossless space-to-depth of
    # `pixel_patch` x `pixel_patch` pixel blocks into 3 * pixel_patch**2 channels, so the
    # diffusion runs on the pixels themselves with the UNet's grid unchanged (see
    # `pixel_codec`).
    kind: str = "kl"
    pixel_patch: int = 1

    def __post_init__(self):
        if self.kind not in ("kl", "pixels"):
            raise ValueError(f"VAEConfig.kind={self.kind!r}; choose 'kl' or 'pixels'")
        if self.kind == "pixels" and self.latent_channels != 3 * self.pixel_patch**2:
            raise ValueError(
                f"a pixel codec of patch {self.pixel_patch} has {3 * self.pixel_patch**2} "
                f"channels, not latent_channels={self.latent_channels}; use `pixel_codec`"
            )

    @classmethod
    def pixel_codec(cls, patch: int, **overrides) -> VAEConfig:
        """The pixel-space "VAE": `patch`x`patch` blocks -> channels, no parameters."""
        return cls(kind="pixels", pixel_patch=patch, latent_channels=3 * patch**2, **overrides)

    @classmethod
    def preset(cls, name: str, **overrides) -> VAEConfig:
        """`tiny` (tests), `sim` (small, trained on sim frames, factor 4), `paper` (SVD)."""
        presets = {
            "tiny": dict(block_out_channels=(32, 64)),
            "sim": dict(block_out_channels=(32, 64, 128)),
            "paper": {},
        }
        return config_preset(cls, presets, name, overrides)

    @property
    def downsample_factor(self) -> int:
        if self.kind == "pixels":
            return self.pixel_patch
        return 2 ** (len(self.block_out_channels) - 1)


class SpatialSelfAttention(nn.Module):
    """diffusers `Attention(heads=1, norm_num_groups=32, bias=True, residual_connection=True)`.

    (N, H, W, C) -> same: GroupNorm, one head over the H*W tokens, out projection, + input.
    """

    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        n, h, w, c = x.shape
        tokens = group_norm(1e-6, "group_norm", d, p)(x).reshape(n, h * w, 1, c)
        q, k, v = (
            dense(c, ("embed", "heads"), name, d, p)(tokens) for name in ("to_q", "to_k", "to_v")
        )
        o = dot_product_attention(q, k, v).reshape(n, h * w, c)
        return x + dense(c, ("heads", "embed"), "to_out_0", d, p)(o).reshape(n, h, w, c)


class _EncoderDownBlock(nn.Module):
    """One encoder level: `num_layers` 2D resnets (no time embedding), then the downsampler."""

    out: int
    num_layers: int
    add_downsample: bool
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        for j in range(self.num_layers):
            x = ResnetBlock2D(self.out, 1e-6, self.dtype, self.param_dtype, name=f"resnets_{j}")(x)
        if self.add_downsample:
            # Right/bottom zero pad then stride 2 (diffusers Downsample2D with padding=0).
            pad = ((0, 1), (0, 1))
            x = Resample(self.out, 2, pad, self.dtype, self.param_dtype, name="downsamplers_0")(x)
        return x


class _EncoderMidBlock(nn.Module):
    """resnets_0 -> one-head self-attention over the whole latent grid -> resnets_1."""

    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        d, p, c = self.dtype, self.param_dtype, x.shape[-1]
        x = ResnetBlock2D(c, 1e-6, d, p, name="resnets_0")(x)
        x = SpatialSelfAttention(d, p, name="attentions_0")(x)
        return ResnetBlock2D(c, 1e-6, d, p, name="resnets_1")(x)


class Encoder(nn.Module):
    """(N, H, W, 3) -> moments before quant_conv (N, h, w, 2 * latent_channels)."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        d, p = cfg.dtype, cfg.param_dtype
        x = conv(cfg.block_out_channels[0], "conv_in", d, p)(x.astype(d))
        levels = len(cfg.block_out_channels)
        for i, out in enumerate(cfg.block_out_channels):
            x = _EncoderDownBlock(
                out, cfg.layers_per_block, i < levels - 1, d, p, name=f"down_blocks_{i}"
            )(x)
        x = _EncoderMidBlock(d, p, name="mid_block")(x)
        x = nn.silu(group_norm(1e-6, "conv_norm_out", d, p)(x))
        return conv(2 * cfg.latent_channels, "conv_out", d, p)(x)


class _DecoderBlock(nn.Module):
    """Spatio-temporal resnets (no time embedding), optional mid attention / upsampler."""

    out: int
    num_layers: int
    num_frames: int
    mid: bool = False
    add_upsample: bool = False
    remat_policy: str = "none"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def _resnet(self, name):
        cls = remat(SpatioTemporalResBlock, self.remat_policy)
        return cls(
            self.out,
            self.num_frames,
            eps=1e-6,
            temporal_eps=1e-5,
            merge_factor=0.0,
            switch_mix=True,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, x):
        if self.mid:
            if self.num_layers != 2:
                raise ValueError(
                    "the temporal decoder's mid block needs layers_per_block == 2"
                )  # resnets_0 -> attentions_0 -> resnets_1
            x = self._resnet("resnets_0")(x)
            x = SpatialSelfAttention(self.dtype, self.param_dtype, name="attentions_0")(x)
            return self._resnet("resnets_1")(x)
        for j in range(self.num_layers):
            x = self._resnet(f"resnets_{j}")(x)
        if self.add_upsample:
            x = nearest_resize(x, (2 * x.shape[1], 2 * x.shape[2]))
            x = Resample(self.out, 1, None, self.dtype, self.param_dtype, name="upsamplers_0")(x)
        return x


class TemporalDecoder(nn.Module):
    """(B*F, h, w, latent) -> (B*F, H, W, 3); frames of a sample are mixed (see module doc)."""

    config: VAEConfig

    @nn.compact
    def __call__(self, z: jax.Array, num_frames: int) -> jax.Array:
        cfg, f = self.config, num_frames
        d, p = cfg.dtype, cfg.param_dtype
        common = dict(num_frames=f, remat_policy=cfg.remat_policy, dtype=d, param_dtype=p)
        top = cfg.block_out_channels[-1]
        x = conv(top, "conv_in", d, p)(z.astype(d))
        x = _DecoderBlock(top, cfg.layers_per_block, mid=True, name="mid_block", **common)(x)
        levels = len(cfg.block_out_channels)
        for i, out in enumerate(reversed(cfg.block_out_channels)):
            x = _DecoderBlock(
                out,
                cfg.layers_per_block + 1,
                add_upsample=i < levels - 1,
                name=f"up_blocks_{i}",
                **common,
            )(x)
        x = nn.silu(group_norm(1e-6, "conv_norm_out", d, p)(x))
        x = conv(cfg.out_channels, "conv_out", d, p)(x)
        bf, hh, ww, c = x.shape
        x = x.reshape(bf // f, f, hh, ww, c)
        x = conv(c, "time_conv_out", d, p, kernel=(3, 1, 1))(x)
        return x.reshape(bf, hh, ww, c)


def space_to_depth(x: jax.Array, patch: int) -> jax.Array:
    """(N, H, W, C) -> (N, H/p, W/p, p*p*C), each p x p block's pixels row-major on channels."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // patch, w // patch, patch * patch * c)


def depth_to_space(x: jax.Array, patch: int) -> jax.Array:
    """The inverse of `space_to_depth`."""
    n, h, w, pc = x.shape
    c = pc // (patch * patch)
    x = x.reshape(n, h, w, patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * patch, w * patch, c)


class TemporalVAE(nn.Module):
    """Encoder + quant_conv + temporal decoder. `__call__` (used by init) encodes and decodes.

    With `config.kind == "pixels"` it has no parameters: `encode` is `space_to_depth` with a
    posterior of log-variance -30 (std 3e-7, so a "sample" is the pixels), `decode` its inverse.
    """

    config: VAEConfig

    def setup(self):
        cfg = self.config
        if cfg.kind == "pixels":
            return
        self.encoder = Encoder(cfg)
        self.decoder = TemporalDecoder(cfg)
        self.quant_conv = conv(
            2 * cfg.latent_channels, "quant_conv", cfg.dtype, cfg.param_dtype, kernel=(1, 1)
        )

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Pixels (N, H, W, 3) in [-1, 1] -> (mean, logvar) (N, h, w, latent) in float32."""
        if self.config.kind == "pixels":
            mean = space_to_depth(x.astype(jnp.float32), self.config.pixel_patch)
            return mean, jnp.full_like(mean, -30.0)
        moments = self.quant_conv(self.encoder(x)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jax.Array, num_frames: int) -> jax.Array:
        """Unscaled latents (B*F, h, w, latent) -> pixels (B*F, H, W, 3) in float32."""
        if self.config.kind == "pixels":
            return depth_to_space(z.astype(jnp.float32), self.config.pixel_patch)
        return self.decoder(z, num_frames).astype(jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        mean, _ = self.encode(x)
        return self.decode(mean, num_frames=1)


def encode_latents(
    vae: TemporalVAE, params, pixels: jax.Array, rng: jax.Array | None = None
) -> jax.Array:
    """Pixels (..., H, W, 3) -> diffusion latents (..., h, w, 4) = scaling_factor * z.

    z is the posterior mean (`mode()`) when `rng` is None, else a sample (what Ctrl-World stores
    for training).
    """
    lead = pixels.shape[:-3]
    flat = pixels.reshape(-1, *pixels.shape[-3:])
    mean, logvar = vae.apply({"params": params}, flat, method=TemporalVAE.encode)
    z = mean
    if rng is not None:
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    z = z * vae.config.scaling_factor
    return z.reshape(*lead, *z.shape[1:])


def decode_latents(vae: TemporalVAE, params, latents: jax.Array, chunk_size: int) -> jax.Array:
    """Diffusion latents (B, F, h, w, 4) -> pixels (B, F, H, W, 3), frames decoded in chunks.

    Each sample's frames are split into consecutive chunks of `chunk_size` (the last may be
    shorter) and each chunk is decoded with num_frames = its length, like diffusers'
    `decode_latents(decode_chunk_size)` for one video. (diffusers chunks the flattened B*F axis,
    which can mix two videos in a chunk when B > 1; vlaw never does.)
    """
    b, f = latents.shape[:2]
    z = latents / vae.config.scaling_factor
    chunks = []
    for start in range(0, f, chunk_size):
        part = z[:, start : start + chunk_size]
        n = part.shape[1]
        out = vae.apply(
            {"params": params},
            part.reshape(b * n, *part.shape[2:]),
            n,
            method=TemporalVAE.decode,
        )
        chunks.append(out.reshape(b, n, *out.shape[1:]))
    return jnp.concatenate(chunks, axis=1)
