"""The pixel-space "VAE" (`VAEConfig.pixel_codec`): lossless, parameter-free, same interface."""

import jax
import numpy as np
import pytest

from vlaw.models.world_model.vae import (
    TemporalVAE,
    VAEConfig,
    decode_latents,
    depth_to_space,
    encode_latents,
    space_to_depth,
)


def test_space_to_depth_packs_each_block_on_channels_and_inverts():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    packed = np.asarray(space_to_depth(x, 2))
    assert packed.shape == (2, 2, 3, 12)
    # Block (row 1, col 2) of image 1 holds pixels rows 2-3, cols 4-5, row-major, RGB inner.
    block = x[1, 2:4, 4:6].reshape(-1)
    np.testing.assert_array_equal(packed[1, 1, 2], block)
    np.testing.assert_array_equal(np.asarray(depth_to_space(packed, 2)), x)


def test_pixel_codec_has_no_parameters_and_round_trips_exactly():
    cfg = VAEConfig.pixel_codec(2, scaling_factor=2.5)
    assert cfg.latent_channels == 12 and cfg.downsample_factor == 2
    vae = TemporalVAE(cfg)
    variables = vae.init(jax.random.key(0), np.zeros((1, 8, 16, 3), np.float32))
    assert jax.tree.leaves(variables) == []
    pixels = jax.random.uniform(jax.random.key(1), (2, 5, 8, 16, 3), minval=-1.0, maxval=1.0)
    latents = encode_latents(vae, {}, pixels, jax.random.key(2))  # a "posterior sample"
    assert latents.shape == (2, 5, 4, 8, 12)
    np.testing.assert_allclose(
        np.asarray(latents),
        2.5 * np.asarray(space_to_depth(pixels.reshape(10, 8, 16, 3), 2)).reshape(latents.shape),
        atol=1e-5,
    )
    decoded = decode_latents(vae, {}, latents, chunk_size=3)
    np.testing.assert_allclose(np.asarray(decoded), np.asarray(pixels), atol=1e-5)


def test_pixel_codec_channels_must_match_the_patch():
    with pytest.raises(ValueError, match="latent_channels"):
        VAEConfig(kind="pixels", pixel_patch=2, latent_channels=4)
    with pytest.raises(ValueError, match="kind"):
        VAEConfig(kind="wavelet")
