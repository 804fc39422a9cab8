"""Import the feature networks of the video metrics (vlaw/eval) from their published weight files.

Files (BUILD.md, "Video-metric networks"):
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

import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from vlaw.eval import lpips_net

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


def _take(state: Mapping[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in state:
        raise KeyError(f"missing PyTorch key {key!r}")
    value = np.asarray(state[key], np.float32)
    if value.shape != shape:
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
