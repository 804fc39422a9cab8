"""FID's Inception-v3 against pytorch-fid 0.3's `InceptionV3` on CPU torch.

The reference is pytorch-fid's own wrapper and its TF-compatible blocks (`FIDInceptionA/C/E_1/
E_2`: average pools over real pixels only, a max pool in Mixed_7c), built by its
`fid_inception_v3()`. Their torchvision base classes come from conftest.py's stand-in, written from
the published Inception-v3 architecture. The weight download is replaced by random weights and
batch-norm statistics in the layout of `pt_inception-2015-12-05-6726825d.pth` (torchvision names),
which the converter reads.
"""

import jax
import numpy as np
import pytest
import torch

from vlaw.convert import metric_nets
from vlaw.models.metrics import inception


def _randomise(state, seed):
    """He-scaled conv weights and random batch-norm parameters and statistics."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            out[key] = value
        elif key.endswith("conv.weight"):
            fan_in = value[0].numel()
            out[key] = torch.randn(value.shape, generator=generator) * (2.0 / fan_in) ** 0.5
        elif key.endswith(("bn.weight", "running_var")):
            out[key] = 0.5 + torch.rand(value.shape, generator=generator)
        else:  # bn.bias, running_mean, fc.*
            out[key] = 0.1 * torch.randn(value.shape, generator=generator)
    return out


@pytest.fixture(scope="module")
def reference_and_state(pytorch_fid_inception, monkeypatch_module):
    built = []
    original = pytorch_fid_inception._inception_v3

    def build_and_remember(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    # fid_inception_v3 builds the network, swaps in the FID blocks, then loads the downloaded
    # file: serve random weights for the patched network instead of downloading.
    monkeypatch_module.setattr(pytorch_fid_inception, "_inception_v3", build_and_remember)
    monkeypatch_module.setattr(
        pytorch_fid_inception,
        "load_state_dict_from_url",
        lambda *args, **kwargs: _randomise(built[-1].state_dict(), seed=0),
    )
    reference = pytorch_fid_inception.InceptionV3(resize_input=False, normalize_input=True)
    return reference.eval(), built[-1].state_dict()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_pool3_matches_pytorch_fid_with_random_weights(reference_and_state):
    reference, state = reference_and_state
    # 75×75: the smallest input Inception-v3 takes (pool3 over 1×1 after Mixed_7a).
    images = np.random.default_rng(1).uniform(0.0, 1.0, (2, 75, 75, 3)).astype(np.float32)
    with torch.no_grad():
        (expected,) = reference(torch.from_numpy(images).permute(0, 3, 1, 2))
    expected = expected.numpy().reshape(2, 2048)
    params = metric_nets.inception_params(state)
    got = jax.jit(inception.InceptionPool3().apply)(params, 2.0 * images - 1.0)
    assert got.shape == (2, inception.POOL3_FEATURES)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_converter_names_misshaped_units(reference_and_state):
    _, state = reference_and_state
    misshaped = dict(state)
    misshaped["Mixed_6c.branch7x7_2.conv.weight"] = torch.zeros(160, 160, 7, 1)
    with pytest.raises(ValueError, match="Mixed_6c.branch7x7_2.conv.weight"):
        metric_nets.inception_params(misshaped)
    state = dict(state)
    del state["Mixed_7c.branch_pool.bn.running_var"]
    with pytest.raises(KeyError, match="Mixed_7c.branch_pool.bn.running_var"):
        metric_nets.inception_params(state)


@pytest.mark.slow
def test_fid_features_resize_like_pytorch_fid(pytorch_fid_inception, reference_and_state):
    """192×320 frames resized to 299² inside pytorch-fid's wrapper and in `fid_features`."""
    _, state = reference_and_state
    wrapper = pytorch_fid_inception.InceptionV3(resize_input=True, normalize_input=True).eval()
    images = np.random.default_rng(2).uniform(0.0, 1.0, (1, 192, 320, 3)).astype(np.float32)
    with torch.no_grad():
        (expected,) = wrapper(torch.from_numpy(images).permute(0, 3, 1, 2))
    expected = expected.numpy().reshape(1, 2048)
    got = inception.fid_features(metric_nets.inception_params(state), images * 255.0, 255.0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
