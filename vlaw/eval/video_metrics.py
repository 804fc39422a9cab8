"""Video metrics of VLAW Table 1: PSNR, SSIM, LPIPS, FID and FVD, batched and on device.

Definitions, each checked against the reference implementation that installs here (tests in
tests/eval/test_video_metrics.py; shared/research/reward_dsrl_metrics.md §4 holds the survey):

- PSNR = 10 log10(R² / MSE), MSE over all pixels and channels of one frame
  (scikit-image `peak_signal_noise_ratio` with `data_range=R`).
- SSIM of Wang et al. 2004: 11×11 Gaussian window (σ 1.5), K1 0.01, K2 0.03, population
  (co)variances, mean of the map over the positions where the window fits, computed per colour
  channel and averaged (scikit-image `structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=R, channel_axis=-1)`; its crop of 5 pixels removes
  exactly the reflect-padded border, so a VALID convolution gives the same numbers).
- LPIPS v0.1 of Zhang et al. 2018 (the `lpips` package), backbone and heads in
  `vlaw/models/metrics/lpips_net.py`.
- FID / FVD: the Fréchet distance between Gaussians fitted to features (pytorch-fid's
  `calculate_frechet_distance`), with the feature network passed in as a function:
  Inception-v3 pool3 for FID (`vlaw.models.metrics.inception.fid_features`), I3D's
  time-averaged Kinetics-400 logits for FVD (`vlaw.models.metrics.i3d.fvd_features`); bind
  their params and data range with functools.partial.
  Features run on device in fixed-size batches; the statistics and the distance in float64 on
  the host.

Video convention (not stated by VLAW; the survey's recommendation): frame metrics are computed per
frame and averaged over frames and clips; FID pools all frames of all clips; FVD treats each clip
as one sample.

Every function takes frames in [0, R] with R = `data_range` given explicitly (255 for uint8,
1.0 for float frames in [0, 1]); integer frames are cast to float32 before any arithmetic, so
uint8 subtraction never wraps. Layout: `[..., H, W, C]`, any leading batch axes (clips, frames).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vlaw.models.metrics import lpips_net

# Wang et al. 2004: window and stabilising constants.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _unit_range(frames: jax.Array, data_range: float) -> jax.Array:
    """Frames in [0, data_range] (any dtype) -> float32 in [0, 1].

    PSNR and SSIM are invariant to rescaling both images and the range together (SSIM's C1 and
    C2 scale with R²), so the metrics are computed at R = 1, which keeps E[x²] - E[x]² in float32
    well conditioned for uint8 frames too.
    """
    return jnp.asarray(frames).astype(jnp.float32) / jnp.float32(data_range)


def psnr(reference: jax.Array, prediction: jax.Array, data_range: float) -> jax.Array:
    """Peak signal-to-noise ratio in dB per frame.

    reference, prediction: [..., H, W, C] in [0, data_range]. Returns [...]. Identical frames give
    +inf, as in scikit-image; average per-frame values (mean of logs), not MSEs.
    """
    x, y = _unit_range(reference, data_range), _unit_range(prediction, data_range)
    mse = jnp.mean(jnp.square(x - y), axis=(-3, -2, -1))
    return -10.0 * jnp.log10(mse)


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps at offsets -(size // 2) .. size // 2."""
    offsets = np.arange(size, dtype=np.float64) - size // 2
    taps = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def _valid_gaussian_blur(images: jax.Array, taps: np.ndarray) -> jax.Array:
    """Separable Gaussian filter over H and W of [N, H, W, C], each channel on its own, VALID.

    HIGHEST precision: on GPUs XLA would otherwise run float32 convolutions in TF32, whose 10-bit
    mantissa moves SSIM in the third decimal.
    """
    channels = images.shape[-1]
    size = taps.shape[0]
    taps = jnp.asarray(taps, jnp.float32)
    # Depthwise kernels (HWIO with I = 1, O = C and feature_group_count = C).
    vertical = jnp.tile(taps.reshape(size, 1, 1, 1), (1, 1, 1, channels))
    horizontal = jnp.tile(taps.reshape(1, size, 1, 1), (1, 1, 1, channels))
    for kernel in (vertical, horizontal):
        images = jax.lax.conv_general_dilated(
            images,
            kernel,
            window_strides=(1, 1),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=channels,
            precision=jax.lax.Precision.HIGHEST,
        )
    return images


def ssim(reference: jax.Array, prediction: jax.Array, data_range: float) -> jax.Array:
    """Structural similarity (Wang et al. 2004) per frame, mean over the map and the channels.

    reference, prediction: [..., H, W, C] in [0, data_range] with H, W >= 11. Returns [...].
    """
    x, y = _unit_range(reference, data_range), _unit_range(prediction, data_range)
    batch_shape, (height, width, channels) = x.shape[:-3], x.shape[-3:]
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs frames of at least {SSIM_WINDOW}² pixels, got {height}×{width}"
        )
    x = x.reshape(-1, height, width, channels)
    y = y.reshape(-1, height, width, channels)
    # One filter pass over the five local moments, stacked along channels.
    moments = jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1)
    blurred = _valid_gaussian_blur(moments, gaussian_window_1d())
    mu_x, mu_y, e_xx, e_yy, e_xy = jnp.split(blurred, 5, axis=-1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K·R)² at R = 1
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    per_channel = jnp.mean(ssim_map, axis=(1, 2))
    return jnp.mean(per_channel, axis=-1).reshape(batch_shape)


def lpips(
    params: dict,
    reference: jax.Array,
    prediction: jax.Array,
    data_range: float,
    backbone: str = "alex",
) -> jax.Array:
    """LPIPS v0.1 distance per frame (lower is closer).

    params: `vlaw.convert.metric_nets.lpips_params(backbone, ...)`. reference, prediction:
    [..., H, W, 3] RGB in [0, data_range], mapped to [-1, 1] as the `lpips` package expects; no
    resizing (AlexNet needs H, W >= 63 to reach its last tap, VGG16 >= 16). Returns [...].
    """
    x = 2.0 * _unit_range(reference, data_range) - 1.0
    y = 2.0 * _unit_range(prediction, data_range) - 1.0
    batch_shape, image_shape = x.shape[:-3], x.shape[-3:]
    distance = lpips_net.Lpips(backbone).apply(
        params, x.reshape(-1, *image_shape), y.reshape(-1, *image_shape)
    )
    return distance.reshape(batch_shape)


# ----------------------------------------------------------------------------------------------
# Fréchet distance (FID, FVD)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (N - 1, as `np.cov`) of [N, D] features, float64 on host."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need [N >= 2, D] features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """d² = ‖μ1 - μ2‖² + Tr Σ1 + Tr Σ2 - 2 Tr (Σ1 Σ2)^½ between two Gaussians, float64 on host.

    Tr (Σ1 Σ2)^½ is the sum of square roots of the eigenvalues of Σ1^½ Σ2 Σ1^½, which is
    similar to Σ1 Σ2 but symmetric PSD, so `eigh` applies and no complex parts or singular
    products arise (pytorch-fid calls `scipy.linalg.sqrtm` on the non-symmetric product and
    retries with 1e-6 on the diagonals when that fails). Agreement with pytorch-fid is tested.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shape mismatch: {mu1.shape} {mu2.shape} {sigma1.shape} {sigma2.shape}")
    sqrt_sigma1 = _psd_sqrt(sigma1)
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    middle = 0.5 * (middle + middle.T)  # symmetric up to rounding; eigh reads one triangle
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


FeatureFn = Callable[[jax.Array], jax.Array]


def batched_features(feature_fn: FeatureFn, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Apply `feature_fn` ([B, ...] -> [B, D], on device) in batches; [N, D] float64 on host.

    The last batch is padded to `batch_size` (repeating its last element) so a jitted
    `feature_fn` compiles once; the padding rows are dropped.
    """
    inputs = np.asarray(inputs)
    count = inputs.shape[0]
    outputs = []
    for start in range(0, count, batch_size):
        batch = inputs[start : start + batch_size]
        real = batch.shape[0]
        if real < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real, axis=0)])
        outputs.append(np.asarray(feature_fn(jnp.asarray(batch)), np.float64)[:real])
    return np.concatenate(outputs, axis=0)


def fid(
    feature_fn: FeatureFn,
    reference_videos: np.ndarray,
    predicted_videos: np.ndarray,
    batch_size: int = 64,
) -> float:
    """Fréchet Inception distance over all frames of all clips.

    videos: [B, T, H, W, C] (or [N, H, W, C] images) as `feature_fn` expects them; `feature_fn`
    maps [n, H, W, C] frames to [n, D] (Inception-v3 pool3 for the standard FID).
    """
    features = []
    for videos in (reference_videos, predicted_videos):
        frames = np.asarray(videos)
        frames = frames.reshape(-1, *frames.shape[-3:])
        features.append(feature_statistics(batched_features(feature_fn, frames, batch_size)))
    (mu1, sigma1), (mu2, sigma2) = features
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def fvd(
    feature_fn: FeatureFn,
    reference_videos: np.ndarray,
    predicted_videos: np.ndarray,
    batch_size: int = 16,
) -> float:
    """Fréchet video distance: one feature vector per clip.

    videos: [B, T, H, W, C]; `feature_fn` maps [n, T, H, W, C] clips to [n, D] (I3D's 400
    time-averaged Kinetics logits for the standard FVD).
    """
    (mu1, sigma1), (mu2, sigma2) = (
        feature_statistics(batched_features(feature_fn, np.asarray(videos), batch_size))
        for videos in (reference_videos, predicted_videos)
    )
    return frechet_distance(mu1, sigma1, mu2, sigma2)
