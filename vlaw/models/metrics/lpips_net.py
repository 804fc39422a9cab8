"""LPIPS v0.1 (Zhang et al. 2018) as a Flax module: ImageNet backbone taps + learned linear heads.

The pipeline of the `lpips` package (version 0.1, `lpips.LPIPS.forward`), re-derived and checked
against it in tests/eval/test_lpips_net.py on random backbone weights and the shipped heads:

1. inputs in [-1, 1] are shifted and scaled per RGB channel, (x - shift) / scale, which maps them
   to ImageNet-normalised values;
2. the backbone's ReLU outputs at five taps (AlexNet: relu1..relu5; VGG16: relu1_2, relu2_2,
   relu3_3, relu4_3, relu5_3);
3. per tap, every spatial feature vector is divided by its L2 norm over channels (+ 1e-10);
4. the squared difference of the two images' normalised features goes through a 1×1 linear head
   C_k -> 1 without bias (non-negative weights, the `lin{k}` of the paper), is averaged over H and
   W, and the five taps are summed.

Layers are named after their index in torchvision's `features` Sequential (`features_3` is
`features.3`), so the converter (vlaw/convert/metric_nets.py) is a renaming. Layout NHWC.
Convolutions run at HIGHEST precision: on GPUs XLA would otherwise use TF32 for float32 convs.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# (x - shift) / scale per RGB channel (lpips.ScalingLayer).
INPUT_SHIFT = (-0.030, -0.088, -0.188)
INPUT_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

# Backbone stages: the features between two taps. ("conv", torchvision index, channels, kernel,
# stride, padding) is a convolution followed by ReLU; ("pool", window, stride) a VALID max pool.
BACKBONE_STAGES = {
    "alex": (
        (("conv", 0, 64, 11, 4, 2),),
        (("pool", 3, 2), ("conv", 3, 192, 5, 1, 2)),
        (("pool", 3, 2), ("conv", 6, 384, 3, 1, 1)),
        (("conv", 8, 256, 3, 1, 1),),
        (("conv", 10, 256, 3, 1, 1),),
    ),
    "vgg": (
        (("conv", 0, 64, 3, 1, 1), ("conv", 2, 64, 3, 1, 1)),
        (("pool", 2, 2), ("conv", 5, 128, 3, 1, 1), ("conv", 7, 128, 3, 1, 1)),
        (("pool", 2, 2),) + tuple(("conv", index, 256, 3, 1, 1) for index in (10, 12, 14)),
        (("pool", 2, 2),) + tuple(("conv", index, 512, 3, 1, 1) for index in (17, 19, 21)),
        (("pool", 2, 2),) + tuple(("conv", index, 512, 3, 1, 1) for index in (24, 26, 28)),
    ),
}


def tap_channels(backbone: str) -> tuple[int, ...]:
    """Channels of the five taps ([64, 192, 384, 256, 256] for AlexNet)."""
    return tuple(
        [op for op in stage if op[0] == "conv"][-1][2] for stage in BACKBONE_STAGES[backbone]
    )


class LpipsBackbone(nn.Module):
    """The ImageNet trunk up to its last tap: [N, H, W, 3] -> five [N, h_k, w_k, C_k] maps."""

    backbone: str = "alex"

    @nn.compact
    def __call__(self, images: jax.Array) -> list[jax.Array]:
        taps = []
        hidden = images
        for stage in BACKBONE_STAGES[self.backbone]:
            for op in stage:
                if op[0] == "pool":
                    _, window, stride = op
                    hidden = nn.max_pool(hidden, (window, window), (stride, stride), "VALID")
                else:
                    _, index, channels, kernel, stride, padding = op
                    hidden = nn.Conv(
                        channels,
                        (kernel, kernel),
                        strides=(stride, stride),
                        padding=((padding, padding), (padding, padding)),
                        precision=jax.lax.Precision.HIGHEST,
                        name=f"features_{index}",
                    )(hidden)
                    hidden = nn.relu(hidden)
            taps.append(hidden)
        return taps


def _unit_normalise(features: jax.Array) -> jax.Array:
    """Divide each spatial feature vector by its L2 norm over channels (lpips.normalize_tensor)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(features), axis=-1, keepdims=True))
    return features / (norm + NORM_EPS)


class Lpips(nn.Module):
    """LPIPS distance of image pairs: two [N, H, W, 3] in [-1, 1] -> [N] (lower is closer)."""

    backbone: str = "alex"

    @nn.compact
    def __call__(self, first: jax.Array, second: jax.Array) -> jax.Array:
        shift = jnp.asarray(INPUT_SHIFT, jnp.float32)
        scale = jnp.asarray(INPUT_SCALE, jnp.float32)
        # One backbone pass over both images (shared weights, one compiled graph).
        both = (jnp.concatenate([first, second], axis=0).astype(jnp.float32) - shift) / scale
        trunk = LpipsBackbone(self.backbone, name="backbone")
        distance = jnp.zeros(first.shape[0], jnp.float32)
        for index, features in enumerate(trunk(both)):
            feats_first, feats_second = jnp.split(_unit_normalise(features), 2, axis=0)
            # The 1×1 conv head is a Dense over channels; its kernel is (C_k, 1).
            head = nn.Dense(
                1, use_bias=False, precision=jax.lax.Precision.HIGHEST, name=f"lin{index}"
            )
            per_position = head(jnp.square(feats_first - feats_second))[..., 0]
            distance = distance + jnp.mean(per_position, axis=(1, 2))
        return distance
