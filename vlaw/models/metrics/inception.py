"""Inception-v3 pool3 features for FID: the 2015-12-05 TF graph as pytorch-fid ports it.

FID (Heusel et al. 2017) embeds an image as the 2048-d global average pool after the last
Inception block of the TF Inception-v3 graph of 2015-12-05. pytorch-fid re-implements that graph
on torchvision's Inception-v3 with three TF-compatible patches, all kept here:
- the average-pool branches of the A, C and first E blocks divide by the number of real (not
  zero-padded) pixels (`count_include_pad=False`, TF's SAME average pooling);
- the last E block (Mixed_7c) uses a 3×3 max pool, not an average pool, in its pool branch;
- 1008 classes in the (unused) classifier.
Its weight file `pt_inception-2015-12-05-6726825d.pth` uses torchvision's names; the converter
(vlaw/convert/metric_nets.py) folds every inference batch norm (ε 1e-3) into its convolution, so
each unit here is conv + bias + ReLU. Parity with pytorch-fid's `InceptionV3`:
tests/eval/test_inception.py.

Input [N, H, W, 3] in [-1, 1], H, W >= 75; `fid_features` resizes to 299×299 first as
pytorch-fid does. Layout NHWC; unit names follow torchvision (`Mixed_6b/branch7x7_2`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

FID_SIZE = 299
POOL3_FEATURES = 2048

# Stem units: (name, channels, kernel, stride, padding).
STEM_UNITS = (
    ("Conv2d_1a_3x3", 32, (3, 3), 2, (0, 0)),
    ("Conv2d_2a_3x3", 32, (3, 3), 1, (0, 0)),
    ("Conv2d_2b_3x3", 64, (3, 3), 1, (1, 1)),
    "max_pool",
    ("Conv2d_3b_1x1", 80, (1, 1), 1, (0, 0)),
    ("Conv2d_4a_3x3", 192, (3, 3), 1, (0, 0)),
    "max_pool",
)
# Blocks: (name, kind, argument): A's pool-branch channels, C's 7×7 bottleneck channels.
BLOCKS = (
    ("Mixed_5b", "A", 32),
    ("Mixed_5c", "A", 64),
    ("Mixed_5d", "A", 64),
    ("Mixed_6a", "B", None),
    ("Mixed_6b", "C", 128),
    ("Mixed_6c", "C", 160),
    ("Mixed_6d", "C", 160),
    ("Mixed_6e", "C", 192),
    ("Mixed_7a", "D", None),
    ("Mixed_7b", "E", "avg"),
    ("Mixed_7c", "E", "max"),  # pytorch-fid's FIDInceptionE_2: max pool in the pool branch
)


def block_units(kind: str, argument) -> tuple[tuple[str, int, tuple[int, int], int, tuple], ...]:
    """Conv units of one block: (name, out channels, kernel, stride, padding), torchvision names."""
    if kind == "A":
        return (
            ("branch1x1", 64, (1, 1), 1, (0, 0)),
            ("branch5x5_1", 48, (1, 1), 1, (0, 0)),
            ("branch5x5_2", 64, (5, 5), 1, (2, 2)),
            ("branch3x3dbl_1", 64, (1, 1), 1, (0, 0)),
            ("branch3x3dbl_2", 96, (3, 3), 1, (1, 1)),
            ("branch3x3dbl_3", 96, (3, 3), 1, (1, 1)),
            ("branch_pool", argument, (1, 1), 1, (0, 0)),
        )
    if kind == "B":
        return (
            ("branch3x3", 384, (3, 3), 2, (0, 0)),
            ("branch3x3dbl_1", 64, (1, 1), 1, (0, 0)),
            ("branch3x3dbl_2", 96, (3, 3), 1, (1, 1)),
            ("branch3x3dbl_3", 96, (3, 3), 2, (0, 0)),
        )
    if kind == "C":
        c7 = argument
        return (
            ("branch1x1", 192, (1, 1), 1, (0, 0)),
            ("branch7x7_1", c7, (1, 1), 1, (0, 0)),
            ("branch7x7_2", c7, (1, 7), 1, (0, 3)),
            ("branch7x7_3", 192, (7, 1), 1, (3, 0)),
            ("branch7x7dbl_1", c7, (1, 1), 1, (0, 0)),
            ("branch7x7dbl_2", c7, (7, 1), 1, (3, 0)),
            ("branch7x7dbl_3", c7, (1, 7), 1, (0, 3)),
            ("branch7x7dbl_4", c7, (7, 1), 1, (3, 0)),
            ("branch7x7dbl_5", 192, (1, 7), 1, (0, 3)),
            ("branch_pool", 192, (1, 1), 1, (0, 0)),
        )
    if kind == "D":
        return (
            ("branch3x3_1", 192, (1, 1), 1, (0, 0)),
            ("branch3x3_2", 320, (3, 3), 2, (0, 0)),
            ("branch7x7x3_1", 192, (1, 1), 1, (0, 0)),
            ("branch7x7x3_2", 192, (1, 7), 1, (0, 3)),
            ("branch7x7x3_3", 192, (7, 1), 1, (3, 0)),
            ("branch7x7x3_4", 192, (3, 3), 2, (0, 0)),
        )
    return (
        ("branch1x1", 320, (1, 1), 1, (0, 0)),
        ("branch3x3_1", 384, (1, 1), 1, (0, 0)),
        ("branch3x3_2a", 384, (1, 3), 1, (0, 1)),
        ("branch3x3_2b", 384, (3, 1), 1, (1, 0)),
        ("branch3x3dbl_1", 448, (1, 1), 1, (0, 0)),
        ("branch3x3dbl_2", 384, (3, 3), 1, (1, 1)),
        ("branch3x3dbl_3a", 384, (1, 3), 1, (0, 1)),
        ("branch3x3dbl_3b", 384, (3, 1), 1, (1, 0)),
        ("branch_pool", 192, (1, 1), 1, (0, 0)),
    )


class ConvUnit(nn.Module):
    """Conv (batch norm folded into kernel and bias) + ReLU, explicit symmetric padding."""

    channels: int
    kernel: tuple[int, int]
    stride: int
    padding: tuple[int, int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad_h, pad_w = self.padding
        x = nn.Conv(
            self.channels,
            self.kernel,
            strides=(self.stride, self.stride),
            padding=((pad_h, pad_h), (pad_w, pad_w)),
            precision=jax.lax.Precision.HIGHEST,
        )(x)
        return nn.relu(x)


def _max_pool_3x3(x: jax.Array, stride: int, padding: int = 0) -> jax.Array:
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (3, 3), (stride, stride), pad)


def _avg_pool_3x3_real_pixels(x: jax.Array) -> jax.Array:
    """3×3 / 1 average pool, padding 1, averaging only the pixels inside the image."""
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


class InceptionBlock(nn.Module):
    """One Mixed block; the branches concatenated along channels in torchvision's order."""

    kind: str
    argument: int | str | None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        unit = {
            name: ConvUnit(channels, kernel, stride, padding, name=name)
            for name, channels, kernel, stride, padding in block_units(self.kind, self.argument)
        }
        if self.kind == "A":
            branches = [
                unit["branch1x1"](x),
                unit["branch5x5_2"](unit["branch5x5_1"](x)),
                unit["branch3x3dbl_3"](unit["branch3x3dbl_2"](unit["branch3x3dbl_1"](x))),
                unit["branch_pool"](_avg_pool_3x3_real_pixels(x)),
            ]
        elif self.kind == "B":
            branches = [
                unit["branch3x3"](x),
                unit["branch3x3dbl_3"](unit["branch3x3dbl_2"](unit["branch3x3dbl_1"](x))),
                _max_pool_3x3(x, 2),
            ]
        elif self.kind == "C":
            seven = unit["branch7x7_3"](unit["branch7x7_2"](unit["branch7x7_1"](x)))
            double = x
            for index in range(1, 6):
                double = unit[f"branch7x7dbl_{index}"](double)
            branches = [
                unit["branch1x1"](x),
                seven,
                double,
                unit["branch_pool"](_avg_pool_3x3_real_pixels(x)),
            ]
        elif self.kind == "D":
            seven = x
            for index in range(1, 5):
                seven = unit[f"branch7x7x3_{index}"](seven)
            branches = [
                unit["branch3x3_2"](unit["branch3x3_1"](x)),
                seven,
                _max_pool_3x3(x, 2),
            ]
        else:
            three = unit["branch3x3_1"](x)
            double = unit["branch3x3dbl_2"](unit["branch3x3dbl_1"](x))
            pooled = (
                _max_pool_3x3(x, 1, padding=1)
                if self.argument == "max"
                else _avg_pool_3x3_real_pixels(x)
            )
            branches = [
                unit["branch1x1"](x),
                unit["branch3x3_2a"](three),
                unit["branch3x3_2b"](three),
                unit["branch3x3dbl_3a"](double),
                unit["branch3x3dbl_3b"](double),
                unit["branch_pool"](pooled),
            ]
        return jnp.concatenate(branches, axis=-1)


class InceptionPool3(nn.Module):
    """FID's Inception-v3 up to pool3: [N, H, W, 3] in [-1, 1] -> [N, 2048]."""

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32)
        for entry in STEM_UNITS:
            if entry == "max_pool":
                x = _max_pool_3x3(x, 2)
            else:
                name, channels, kernel, stride, padding = entry
                x = ConvUnit(channels, kernel, stride, padding, name=name)(x)
        for name, kind, argument in BLOCKS:
            x = InceptionBlock(kind, argument, name=name)(x)
        return jnp.mean(x, axis=(1, 2))


def fid_features(params: dict, images: jax.Array, data_range: float) -> jax.Array:
    """FID embedding of frames: [N, H, W, 3] in [0, data_range] -> [N, 2048] pool3 features.

    pytorch-fid's input path: bilinear resize to 299×299 with half-pixel centres and no
    antialiasing (`F.interpolate(mode='bilinear', align_corners=False)`), then 2x - 1.
    """
    images = jnp.asarray(images).astype(jnp.float32) / jnp.float32(data_range)
    count, _, _, channels = images.shape
    resized = jax.image.resize(
        images, (count, FID_SIZE, FID_SIZE, channels), method="linear", antialias=False
    )
    return InceptionPool3().apply(params, 2.0 * resized - 1.0)
