"""PSNR, SSIM and the Fréchet distance against their reference implementations.

References: scikit-image 0.26 (`peak_signal_noise_ratio`, `structural_similarity` with Wang et
al.'s settings) and pytorch-fid 0.3's `calculate_frechet_distance` (imported with the torchvision
stand-in of conftest.py; the function itself is pure NumPy/SciPy), fed the same statistics.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlaw.eval import video_metrics as vm

skimage_metrics = pytest.importorskip("skimage.metrics")


def _video_pair(rng, shape, dtype):
    """A reference clip batch and a noisy prediction of it, in the dtype's natural range."""
    reference = rng.uniform(0.0, 1.0, shape)
    prediction = np.clip(reference + rng.normal(0.0, 0.1, shape), 0.0, 1.0)
    if dtype == np.uint8:
        return (
            np.round(reference * 255).astype(np.uint8),
            np.round(prediction * 255).astype(np.uint8),
            255.0,
        )
    return reference.astype(dtype), prediction.astype(dtype), 1.0


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_psnr_and_ssim_match_scikit_image_per_frame(dtype):
    reference, prediction, data_range = _video_pair(
        np.random.default_rng(0), (2, 3, 24, 32, 3), dtype
    )
    psnr = np.asarray(vm.psnr(reference, prediction, data_range))
    ssim = np.asarray(vm.ssim(reference, prediction, data_range))
    assert psnr.shape == ssim.shape == (2, 3)
    for clip in range(2):
        for frame in range(3):
            x, y = reference[clip, frame], prediction[clip, frame]
            expected_psnr = skimage_metrics.peak_signal_noise_ratio(x, y, data_range=data_range)
            expected_ssim = skimage_metrics.structural_similarity(
                x,
                y,
                data_range=data_range,
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            np.testing.assert_allclose(psnr[clip, frame], expected_psnr, rtol=1e-5)
            np.testing.assert_allclose(ssim[clip, frame], expected_ssim, atol=2e-6)


def test_ssim_of_grayscale_and_identical_frames():
    rng = np.random.default_rng(1)
    image = rng.uniform(0.0, 2.0, (20, 25, 1))  # data range 2, e.g. frames in [0, 2]
    other = np.clip(image + rng.normal(0.0, 0.3, image.shape), 0.0, 2.0)
    expected = skimage_metrics.structural_similarity(
        image[..., 0],
        other[..., 0],
        data_range=2.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    np.testing.assert_allclose(vm.ssim(image, other, 2.0), expected, atol=2e-6)
    np.testing.assert_allclose(vm.ssim(image, image, 2.0), 1.0, atol=1e-6)
    assert np.isinf(vm.psnr(image, image, 2.0))
    with pytest.raises(ValueError, match="11"):
        vm.ssim(image[:10], other[:10], 2.0)


def test_frame_metrics_jit_and_order_with_noise():
    rng = np.random.default_rng(2)
    reference = rng.uniform(0.0, 1.0, (1, 2, 16, 16, 3)).astype(np.float32)
    noisy = [np.clip(reference + rng.normal(0, s, reference.shape), 0, 1) for s in (0.02, 0.2)]
    metrics = jax.jit(lambda x, y: (vm.psnr(x, y, 1.0), vm.ssim(x, y, 1.0)))
    (psnr_low, ssim_low), (psnr_high, ssim_high) = (metrics(reference, n) for n in noisy)
    assert jnp.all(psnr_low > psnr_high) and jnp.all(ssim_low > ssim_high)


@pytest.mark.parametrize("samples,dims", [(400, 16), (50, 64)])  # full rank, rank deficient
def test_frechet_distance_matches_pytorch_fid(pytorch_fid_score, samples, dims):
    rng = np.random.default_rng(3)
    mixing = rng.normal(size=(dims, dims)) / np.sqrt(dims)
    first = rng.normal(size=(samples, dims)) @ mixing
    second = 0.8 * rng.normal(size=(samples, dims)) @ mixing + 0.3
    (mu1, sigma1), (mu2, sigma2) = vm.feature_statistics(first), vm.feature_statistics(second)
    np.testing.assert_allclose(sigma1, np.cov(first, rowvar=False))
    expected = pytorch_fid_score.calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
    np.testing.assert_allclose(vm.frechet_distance(mu1, sigma1, mu2, sigma2), expected, rtol=1e-6)


def _mean_colour_features(frames):
    """A stand-in feature network: per-channel means and standard deviations, [n, ..] -> [n, 6]."""
    axes = tuple(range(1, frames.ndim - 1))
    return jnp.concatenate([frames.mean(axis=axes), frames.std(axis=axes)], axis=-1)


def test_fid_and_fvd_zero_for_identical_sets_and_rising_with_noise():
    rng = np.random.default_rng(4)
    videos = rng.uniform(0.0, 1.0, (12, 3, 8, 8, 3)) * rng.uniform(0.2, 1.0, (12, 1, 1, 1, 3))
    noisy = [np.clip(videos + rng.normal(0, s, videos.shape), 0, 1) for s in (0.05, 0.2, 0.5)]
    feature_fn = jax.jit(_mean_colour_features)
    for distance, batch_size in ((vm.fid, 8), (vm.fvd, 5)):  # batch sizes not dividing N
        assert abs(distance(feature_fn, videos, videos, batch_size)) < 1e-10
        scores = [distance(feature_fn, videos, n, batch_size) for n in noisy]
        assert 0 < scores[0] < scores[1] < scores[2], (distance.__name__, scores)


def test_batched_features_drops_padding():
    inputs = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    calls = []

    def feature_fn(batch):
        calls.append(batch.shape)
        return batch * 2

    np.testing.assert_array_equal(vm.batched_features(feature_fn, inputs, 3), inputs * 2)
    assert calls == [(3, 2)] * 3
