"""`vlaw.losses.diffusion_loss` and `edm_preconditioning` (paper Eq. 1, Ctrl-World's EDM)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from vlaw.losses import diffusion_loss, edm_preconditioning

B, NH, T, H, W, C = 2, 2, 5, 4, 3, 4


def _latents(seed=0):
    return jax.random.normal(jax.random.key(seed), (B, T, H, W, C))


def test_imports_with_jax_only():
    code = (
        "import sys, vlaw.losses as L; L.diffusion_loss; "
        "bad = [m for m in ('flax', 'torch', 'tensorflow') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_preconditioning_identities():
    c_skip, c_out, c_in, c_noise = edm_preconditioning(jnp.asarray([1e-4, 1.0, 700.0]))
    # sigma -> 0: the denoiser c_skip x + c_out F returns its input whatever F is.
    assert abs(float(c_skip[0]) - 1.0) < 1e-7 and abs(float(c_out[0])) < 1e-3
    np.testing.assert_allclose(np.asarray(c_skip[1:]), [0.5, 1 / (700.0**2 + 1)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(c_out[1:]), [-(0.5**0.5), -700 / 700.0007], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(c_in[1]), 0.5**0.5, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(c_noise), 0.25 * np.log([1e-4, 1.0, 700.0]), rtol=1e-6)
    # c_skip^2 + c_out^2 * ... : the v-target identity c_skip + c_out^2 = 1 (sigma_data = 1).
    np.testing.assert_allclose(np.asarray(c_skip + c_out**2), 1.0, rtol=1e-6)


def _oracle(latents, delta):
    """A network whose denoised x0 is exactly latents + delta (per example) on future frames."""

    def network(model_input, condition, c_noise):
        sigma = jnp.exp(4.0 * c_noise)
        c_skip, c_out, c_in, _ = edm_preconditioning(sigma)
        bc = lambda v: v[:, None, None, None, None]  # noqa: E731
        noisy = model_input / bc(c_in)
        target = latents + bc(delta)
        out = (target - bc(c_skip) * noisy) / bc(c_out)
        # Garbage on the memory frames: the loss must not look at them.
        return out.at[:, :NH].set(1e3)

    return network


def test_weighting_on_a_hand_computed_case():
    latents = _latents()
    # p_std = 0 and p_mean = 0 -> sigma = 1 exactly -> lambda = (1 + 1) / 1 = 2.
    kw = dict(num_history=NH, p_mean=0.0, p_std=0.0)
    delta = jnp.asarray([0.5, 1.0])
    loss, metrics = diffusion_loss(_oracle(latents, delta), latents, jax.random.key(1), **kw)
    # Per example lambda * delta^2 = [0.5, 2.0]; plain mean 1.25.
    np.testing.assert_allclose(float(loss), 1.25, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["loss_weight_mean"]), 2.0, rtol=1e-6)
    weighted, _ = diffusion_loss(
        _oracle(latents, delta), latents, jax.random.key(1), weights=jnp.asarray([1.0, 3.0]), **kw
    )
    np.testing.assert_allclose(float(weighted), (0.5 + 3 * 2.0) / 4, rtol=1e-4)
    perfect, _ = diffusion_loss(
        _oracle(latents, jnp.zeros(2)), latents, jax.random.key(2), num_history=NH
    )
    assert float(perfect) < 1e-6


def test_network_inputs_history_and_condition():
    latents = _latents(3)
    seen = {}

    def network(model_input, condition, c_noise):
        seen.update(model_input=model_input, condition=condition, c_noise=c_noise)
        return jnp.zeros_like(model_input)

    diffusion_loss(
        network,
        latents,
        jax.random.key(0),
        num_history=NH,
        history_sigma_std=0.0,
        condition_sigma_max=0.0,
        condition_scale=1 / 0.18215,
    )
    # Without augmentation, memory frames enter clean and unscaled, the condition is the
    # current frame (first of the chunk) in unscaled VAE units.
    np.testing.assert_allclose(np.asarray(seen["model_input"][:, :NH]), np.asarray(latents[:, :NH]))
    np.testing.assert_allclose(
        np.asarray(seen["condition"]), np.asarray(latents[:, NH]) / 0.18215, rtol=1e-6
    )
    assert seen["c_noise"].shape == (B,)
    # Future frames enter as c_in (x0 + sigma eps): variance (1 + sigma^2) c_in^2 ~ O(1).
    assert float(jnp.std(seen["model_input"][:, NH:])) < 3.0


def test_an_explicit_condition_replaces_the_current_frame():
    """Residual diffusion: the diffused variable is not the frames, the condition still is."""
    latents = _latents(3)
    current = _latents(4)[:, NH]
    seen = {}

    def network(model_input, condition, c_noise):
        seen["condition"] = condition
        return jnp.zeros_like(model_input)

    diffusion_loss(
        network,
        latents,
        jax.random.key(0),
        num_history=NH,
        condition_sigma_max=0.0,
        condition_scale=2.0,
        condition=current,
    )
    np.testing.assert_allclose(np.asarray(seen["condition"]), 2.0 * np.asarray(current), rtol=1e-6)


def test_gradient_is_finite_and_matches_finite_differences():
    latents = _latents(4)
    rng = jax.random.key(5)

    def loss_of(a):
        network = lambda x, cond, c: a[0] * x + a[1] * cond[:, None]  # noqa: E731
        return diffusion_loss(network, latents, rng, num_history=NH)[0]

    a = jnp.asarray([0.3, -0.2])
    grad = jax.grad(loss_of)(a)
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).sum()) > 0
    h = 1e-2
    for i in range(2):
        e = jnp.zeros(2).at[i].set(h)
        fd = (loss_of(a + e) - loss_of(a - e)) / (2 * h)  # exact for a quadratic, up to rounding
        np.testing.assert_allclose(float(grad[i]), float(fd), rtol=2e-2, atol=1e-3)
