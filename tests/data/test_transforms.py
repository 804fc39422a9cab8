"""openpi's normalization formulas, resize-with-pad geometry, index helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vlaw.data import transforms
from vlaw.data.norm_stats import NormStats

STATS = NormStats(
    mean=np.array([1.0, -2.0, 0.5]),
    std=np.array([2.0, 0.5, 1.0]),
    q01=np.array([-1.0, 0.0, 2.0]),
    q99=np.array([3.0, 1.0, 4.0]),
)


def test_quantile_formula():
    x = np.array([[1.0, 0.5, 5.0]])
    expected = (x - STATS.q01) / (STATS.q99 - STATS.q01 + 1e-6) * 2 - 1
    np.testing.assert_allclose(transforms.normalize(x, STATS, use_quantiles=True), expected)
    assert transforms.normalize(x, STATS, use_quantiles=True)[0, 2] > 1  # not clipped
    np.testing.assert_allclose(
        transforms.unnormalize(expected, STATS, use_quantiles=True), x, rtol=1e-12
    )


def test_zscore_formula():
    x = np.array([[3.0, -1.0, 0.5]])
    expected = (x - STATS.mean) / (STATS.std + 1e-6)
    np.testing.assert_allclose(transforms.normalize(x, STATS, use_quantiles=False), expected)
    np.testing.assert_allclose(
        transforms.unnormalize(expected, STATS, use_quantiles=False), x, rtol=1e-12
    )


def test_stats_sliced_and_padded_like_openpi():
    short = np.array([[1.0, 0.5]])  # data narrower than the stats: stats are sliced
    np.testing.assert_allclose(
        transforms.normalize(short, STATS, use_quantiles=True),
        (short - STATS.q01[:2]) / (STATS.q99[:2] - STATS.q01[:2] + 1e-6) * 2 - 1,
    )
    padded = np.array([[0.0, 0.0, 0.0, 7.0]])  # a padded dim passes through (quantile)
    assert transforms.unnormalize(padded, STATS, use_quantiles=True)[0, 3] == 7.0
    # z-score pads mean/std with 0/1: the padded dim is scaled by (1 + 1e-6).
    z = transforms.unnormalize(padded, STATS, use_quantiles=False)
    assert z[0, 3] == pytest.approx(7.0 * (1 + 1e-6))


def test_jax_arrays_under_jit():
    x = jnp.ones((2, 5, 3))
    normalized = jax.jit(lambda v: transforms.normalize(v, STATS, use_quantiles=True))(x)
    back = jax.jit(lambda v: transforms.unnormalize(v, STATS, use_quantiles=True))(normalized)
    np.testing.assert_allclose(back, x, rtol=1e-5)


def test_resize_with_pad_geometry_and_pil_agreement():
    rng = np.random.default_rng(0)
    # A smooth image, so filters of the same family agree to a few grey levels.
    base = rng.integers(0, 256, (9, 16, 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(base).resize((320, 180), Image.BICUBIC))
    out = np.asarray(transforms.resize_with_pad(image[None], 224, 224))[0]
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # 180x320 -> 126x224 content, centred: 49 rows of black above and below.
    content_height = int(180 / (320 / 224))
    top = (224 - content_height) // 2
    assert content_height == 126 and top == 49
    assert not out[:top].any() and not out[top + content_height :].any()
    reference = np.asarray(Image.fromarray(image).resize((224, content_height), Image.BILINEAR))
    error = np.abs(out[top : top + content_height].astype(int) - reference)
    assert error.mean() < 1.5 and error.max() <= 12


def test_resize_with_pad_is_identity_at_target_size():
    image = np.zeros((2, 8, 8, 3), np.uint8)
    assert transforms.resize_with_pad(image, 8, 8).shape == (2, 8, 8, 3)


def test_chunk_indices():
    assert transforms.chunk_indices(5, 3).tolist() == [
        [0, 1, 2],
        [1, 2, 3],
        [2, 3, 4],
        [3, 4, 4],
        [4, 4, 4],
    ]
