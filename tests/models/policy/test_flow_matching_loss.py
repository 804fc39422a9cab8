"""`vlaw.losses.flow_matching_loss`: weights, masks, gradients and openpi's time convention."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from vlaw.losses import flow_matching_loss

B, H, A = 4, 3, 5


def _actions(seed=0, shape=(B, H, A)):
    return jax.random.normal(jax.random.key(seed), shape)


def _velocity(x_t, t):
    # Per-example and deterministic, so each example's loss depends on its own inputs only.
    return 0.5 * x_t + t[:, None, None]


def test_imports_alone():
    code = (
        "import sys, vlaw.losses\n"
        "assert 'flax' not in sys.modules and 'vlaw.models' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_zero_weight_examples_drop_out_exactly():
    rng, actions = jax.random.key(1), _actions()
    # One compiled function for all the calls below (eager dispatch is slow on a busy CPU).
    loss_fn = jax.jit(lambda a, w: flow_matching_loss(_velocity, a, rng, weights=w))
    per_example = [loss_fn(actions, jnp.eye(B)[i])[0] for i in range(B)]
    weights = jnp.array([1.0, 0.0, 1.0, 0.0])
    loss, metrics = loss_fn(actions, weights)
    np.testing.assert_allclose(loss, (per_example[0] + per_example[2]) / 2, rtol=1e-6)
    assert metrics["weight_sum"] == 2.0

    # Whatever the zero-weight examples hold (even NaN) leaves the loss bit-identical...
    garbage = actions.at[1].set(jnp.nan).at[3].set(1e6)
    assert loss_fn(garbage, weights)[0] == loss
    # ... and they receive exactly zero gradient.
    grad = jax.grad(lambda a: loss_fn(a, weights)[0])(actions)
    assert (grad[1] == 0).all() and (grad[3] == 0).all() and (grad[0] != 0).any()

    # Weighted average: scaling all weights changes nothing; non-binary weights are allowed.
    w = jnp.array([0.5, 0.0, 2.0, 1.0])
    a = loss_fn(actions, w)[0]
    b = loss_fn(actions, 3 * w)[0]
    manual = (0.5 * per_example[0] + 2.0 * per_example[2] + per_example[3]) / 3.5
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, manual, rtol=1e-6)


def test_all_zero_weights_give_zero_loss_not_nan():
    fn = lambda a: flow_matching_loss(_velocity, a, jax.random.key(0), weights=jnp.zeros(B))[0]
    loss, grad = jax.value_and_grad(fn)(_actions())
    assert loss == 0.0 and bool(jnp.all(grad == 0))


def test_gradient_matches_finite_differences():
    rng, actions = jax.random.key(2), _actions()
    weights = jnp.array([1.0, 0.0, 1.0, 1.0])
    mask = jnp.arange(A) < 3

    @jax.jit
    def loss_fn(theta):
        velocity = lambda x, t: (
            jnp.einsum("bha,ac->bhc", x, theta["w"]) + t[:, None, None] * theta["b"]
        )
        return flow_matching_loss(velocity, actions, rng, weights=weights, action_mask=mask)[0]

    theta = {"w": 0.3 * jax.random.normal(jax.random.key(3), (A, A)), "b": jnp.ones(A)}
    grad = jax.grad(loss_fn)(theta)
    eps = 1e-2  # the loss is quadratic in theta: central differences are exact but for rounding
    for seed in range(3):
        key = jax.random.key(10 + seed)
        direction = {"w": jax.random.normal(key, (A, A)), "b": jax.random.normal(key, (A,))}
        plus = jax.tree.map(lambda p, d: p + eps * d, theta, direction)
        minus = jax.tree.map(lambda p, d: p - eps * d, theta, direction)
        numeric = (loss_fn(plus) - loss_fn(minus)) / (2 * eps)
        analytic = sum(
            jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction))
        )
        np.testing.assert_allclose(numeric, analytic, rtol=2e-3, atol=1e-4)


def test_mask_ignores_padded_dims():
    rng, actions = jax.random.key(4), _actions()
    mask = jnp.arange(A) < 2  # two real action dims, three padded

    def noisy_on_padding(x_t, t):
        return _velocity(x_t, t) + jnp.where(mask, 0.0, 1e3)

    masked = flow_matching_loss(noisy_on_padding, actions, rng, action_mask=mask)[0]
    clean = flow_matching_loss(_velocity, actions, rng, action_mask=mask)[0]
    np.testing.assert_allclose(masked, clean, rtol=1e-6)
    unmasked = flow_matching_loss(noisy_on_padding, actions, rng)[0]
    assert unmasked > 1e5

    # Per example the error is averaged over the valid entries only: an oracle velocity that
    # is off by 1 on the real dims scores 1 with the mask and 2/5 of it without.
    def off_by_one(x_t, t):
        return (x_t - actions) / t[:, None, None] + jnp.where(mask, 1.0, 0.0)

    masked = flow_matching_loss(off_by_one, actions, rng, action_mask=mask)[0]
    np.testing.assert_allclose(masked, 1.0, rtol=1e-4)
    np.testing.assert_allclose(flow_matching_loss(off_by_one, actions, rng)[0], 0.4, rtol=1e-4)


def test_openpi_time_convention():
    # If the model knew a, the exact velocity at x_t would be (x_t - a) / t under
    # x_t = t eps + (1 - t) a, u = eps - a; the loss must then vanish.
    actions = _actions(5)
    oracle = lambda x_t, t: (x_t - actions) / t[:, None, None]
    loss = flow_matching_loss(oracle, actions, jax.random.key(6))[0]
    assert loss < 1e-8

    # Returning target + sqrt(t) makes each example's loss t: the mean of t ~ Beta(1.5, 1)
    # * 0.999 + 0.001 is 0.6 * 0.999 + 0.001 = 0.6004.
    many = jnp.zeros((20_000, 1, 1))
    probe = lambda x_t, t: x_t / t[:, None, None] + jnp.sqrt(t)[:, None, None]
    mean_t = flow_matching_loss(probe, many, jax.random.key(7))[0]
    np.testing.assert_allclose(mean_t, 0.6004, atol=6e-3)


def test_dim_groups_report_each_group_apart_from_the_trained_loss():
    actions, rng = _actions(8), jax.random.key(9)
    arm, gripper = jnp.arange(A) < 3, jnp.arange(A) == 3  # dim 4 plays the padding

    # An oracle off by 1 on the arm, by 2 on the gripper and by 3 on the padding.
    offset = jnp.array([1.0, 1.0, 1.0, 2.0, 3.0])

    def off(x_t, t):
        return (x_t - actions) / t[:, None, None] + offset

    groups = {"arm": arm, "gripper": gripper}
    weights = jnp.array([1.0, 0.0, 1.0, 1.0])
    loss, metrics = flow_matching_loss(off, actions, rng, weights=weights, dim_groups=groups)
    np.testing.assert_allclose(metrics["loss_arm"], 1.0, rtol=1e-4)
    np.testing.assert_allclose(metrics["loss_gripper"], 4.0, rtol=1e-4)
    np.testing.assert_allclose(loss, (3 * 1 + 4 + 9) / 5, rtol=1e-4)  # all dims, unmasked
    # The groups are reports only: the trained loss (masked or not) is unchanged by them.
    masked, masked_metrics = flow_matching_loss(
        off, actions, rng, action_mask=arm | gripper, dim_groups=groups
    )
    np.testing.assert_allclose(masked, (3 * 1 + 4) / 4, rtol=1e-4)
    np.testing.assert_allclose(masked_metrics["loss_gripper"], 4.0, rtol=1e-4)
    assert (
        flow_matching_loss(off, actions, rng)[0]
        == flow_matching_loss(off, actions, rng, dim_groups=groups)[0]
    )
