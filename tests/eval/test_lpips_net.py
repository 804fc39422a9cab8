"""LPIPS against the `lpips` package (0.1.4) on CPU torch.

The reference is the package's own `lpips.LPIPS` module (scaling layer, unit normalisation,
linear heads loaded from the weight files inside its wheel, spatial average, sum over taps). Its
backbone comes from torchvision, which does not import beside torch 2.13; conftest.py's stand-in
supplies the AlexNet / VGG16 trunks built from torch.nn layers after the published architectures,
randomly initialised (`pnet_rand=True`). The same random trunk weights and the shipped heads are
converted to Flax and both sides see identical inputs.
"""

import os

import jax
import numpy as np
import pytest
import torch

from vlaw.convert import metric_nets
from vlaw.eval import video_metrics as vm
from vlaw.models.metrics import lpips_net

# Smallest sizes that reach every tap: AlexNet's stride 4 and two 3/2 pools, VGG16's four pools.
IMAGE_SIZE = {"alex": (64, 72), "vgg": (32, 40)}


def _reference(lpips_package, backbone):
    torch.manual_seed(0)
    return lpips_package.LPIPS(net=backbone, pnet_rand=True, verbose=False)


def _images(seed, count, height, width):
    rng = np.random.default_rng(seed)
    first = rng.uniform(0.0, 1.0, (count, height, width, 3)).astype(np.float32)
    second = np.clip(first + rng.normal(0, 0.2, first.shape), 0, 1).astype(np.float32)
    return first, second


@pytest.mark.parametrize("backbone", ["alex", pytest.param("vgg", marks=pytest.mark.slow)])
def test_lpips_matches_the_lpips_package(lpips_package, backbone):
    reference = _reference(lpips_package, backbone)
    params = metric_nets.lpips_params(backbone, reference.state_dict(), reference.state_dict())
    first, second = _images(0, 3, *IMAGE_SIZE[backbone])
    with torch.no_grad():
        expected = reference(
            torch.from_numpy(first).permute(0, 3, 1, 2),
            torch.from_numpy(second).permute(0, 3, 1, 2),
            normalize=True,  # [0, 1] -> [-1, 1]
        ).numpy()
    assert expected.shape == (3, 1, 1, 1)
    # uint8-style range and leading clip/frame axes: [1, 3, H, W, 3] at data range 255.
    lpips_uint8_range = jax.jit(lambda p, x, y: vm.lpips(p, x, y, 255.0, backbone))
    got = lpips_uint8_range(params, first[None] * 255.0, second[None] * 255.0)
    assert got.shape == (1, 3)
    np.testing.assert_allclose(np.asarray(got)[0], expected.reshape(3), rtol=1e-4)
    same = lpips_uint8_range(params, first[None] * 255.0, first[None] * 255.0)
    np.testing.assert_allclose(same, 0.0, atol=1e-6)


def test_converter_reads_torchvision_backbone_and_wheel_heads(lpips_package):
    """The two files BUILD.md names: a torchvision-layout trunk and the wheel's head file."""
    reference = _reference(lpips_package, "alex")
    torchvision_layout = {
        f"features.{key.split('.')[2]}.{key.split('.')[3]}": value
        for key, value in reference.state_dict().items()
        if key.startswith("net.slice")
    }
    torchvision_layout["classifier.1.weight"] = torch.zeros(4096, 9216)  # ignored
    heads_file = os.path.join(os.path.dirname(lpips_package.__file__), "weights/v0.1/alex.pth")
    heads = metric_nets.load_torch_state_dict(heads_file)
    params = metric_nets.lpips_params("alex", torchvision_layout, heads)
    whole = metric_nets.lpips_params("alex", reference.state_dict(), reference.state_dict())
    jax.tree.map(np.testing.assert_array_equal, params, whole)
    assert lpips_net.tap_channels("alex") == (64, 192, 384, 256, 256)
    assert all(np.all(params["params"][f"lin{k}"]["kernel"] >= 0) for k in range(5))

    del torchvision_layout["features.8.bias"]
    with pytest.raises(KeyError, match="features.8.bias"):
        metric_nets.lpips_params("alex", torchvision_layout, heads)
    with pytest.raises(ValueError, match="features.0.weight"):
        metric_nets.lpips_params("vgg", reference.state_dict(), heads)
