"""SVD VAE: parity with diffusers' AutoencoderKLTemporalDecoder on a tiny random config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlaw.convert.ctrl_world import convert_vae, param_shapes
from vlaw.models.world_model.vae import TemporalVAE, VAEConfig, decode_latents, encode_latents

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny():
    cfg = VAEConfig.preset("tiny")
    torch.manual_seed(0)
    model = diffusers.AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(cfg.block_out_channels),
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
    ).eval()
    with torch.no_grad():  # norms, blends and biases away from their init values
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cfg, model, convert_vae(model.state_dict(), cfg)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_encode_matches_diffusers(tiny):
    cfg, model, params = tiny
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 12, 3)).astype(np.float32)
    with torch.no_grad():
        dist = model.encode(_nchw(x)).latent_dist
    with jax.default_matmul_precision("highest"):
        mean, logvar = TemporalVAE(cfg).apply(
            {"params": params}, jnp.asarray(x), method=TemporalVAE.encode
        )
    ref_mean = dist.mean.numpy().transpose(0, 2, 3, 1)
    err = np.abs(np.asarray(mean) - ref_mean).max()
    print(f"VAE encode parity: max abs err {err:.2e}")
    assert mean.shape == (2, 8, 6, 4)
    assert err < 1e-4
    assert np.abs(np.asarray(logvar) - dist.logvar.numpy().transpose(0, 2, 3, 1)).max() < 1e-4
    # encode_latents in mode: scaled mean.
    lat = encode_latents(TemporalVAE(cfg), params, jnp.asarray(x)[None])
    np.testing.assert_allclose(np.asarray(lat)[0], ref_mean * cfg.scaling_factor, atol=1e-4)


def test_decode_matches_diffusers_with_chunks(tiny):
    cfg, model, params = tiny
    b, f = 1, 4
    z = np.random.default_rng(1).standard_normal((b, f, 6, 4, 4)).astype(np.float32)
    chunk = 2  # two chunks of 2 frames: the temporal layers only mix inside a chunk
    with torch.no_grad():
        flat = _nchw(z.reshape(b * f, 6, 4, 4))
        ref = torch.cat(
            [
                model.decode(flat[i : i + chunk], num_frames=len(flat[i : i + chunk])).sample
                for i in range(0, b * f, chunk)
            ]
        ).numpy()
    ref = ref.transpose(0, 2, 3, 1).reshape(b, f, 12, 8, 3)
    with jax.default_matmul_precision("highest"):
        out = decode_latents(TemporalVAE(cfg), params, jnp.asarray(z) * cfg.scaling_factor, chunk)
    err = np.abs(np.asarray(out) - ref).max()
    print(f"VAE decode parity (chunk {chunk}): max abs err {err:.2e}")
    assert out.shape == (b, f, 12, 8, 3)
    assert err < 1e-4
    # Decoding the same frames in one chunk differs: the frames do interact.
    whole = decode_latents(TemporalVAE(cfg), params, jnp.asarray(z) * cfg.scaling_factor, f)
    assert np.abs(np.asarray(whole) - ref).max() > 1e-3


def test_paper_vae_matches_svd_count():
    cfg = VAEConfig.preset("paper")
    shapes = param_shapes(TemporalVAE(cfg), jnp.zeros((1, 8, 8, 3)))
    leaves = jax.tree_util.tree_leaves(shapes)
    # ctrl_world.md §3.3: 97,742,847 parameters in 374 tensors.
    assert (sum(int(np.prod(x.shape)) for x in leaves), len(leaves)) == (97_742_847, 374)


def test_decode_views_decodes_each_camera_separately(tiny):
    from vlaw.models.world_model.ctrl_world import decode_views, stack_views

    cfg, _, params = tiny
    vae = TemporalVAE(cfg)
    views = jax.random.normal(jax.random.key(0), (1, 2, 3, 2, 2, 4))  # (B, F, V, h, w, 4)
    stacked = stack_views(views)  # (1, 2, 6, 2, 4)
    out = decode_views(vae, params, stacked, num_views=3, chunk_size=2)
    assert out.shape == (1, 3, 2, 4, 4, 3)
    alone = decode_latents(vae, params, views[:, :, 1], chunk_size=2)
    np.testing.assert_allclose(np.asarray(out[:, 1]), np.asarray(alone), atol=1e-5)
