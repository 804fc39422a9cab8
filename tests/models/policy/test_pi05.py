"""pi0.5: parameter tree, masks, the KV-cached sampler, and overfitting a handful of examples.

Every test here uses batch 4 and the shared jitted `velocity`, so XLA compiles the full pass,
the cached pass and `sample_actions` once each.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vlaw.losses import flow_matching_loss
from vlaw.models.policy.pi05 import (
    Pi05,
    abstract_params,
    make_attention_mask,
    pi05_config,
    sample_actions,
)

B = 4


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_presets_sizes_and_logical_axes():
    tiny = abstract_params(pi05_config("tiny"))
    assert _count(nn.unbox(tiny)) < 5_000_000
    sim = nn.unbox(abstract_params(pi05_config("sim")))
    assert 20e6 < _count(sim) < 150e6

    specs = nn.get_partition_spec(tiny)["params"]
    boxed = jax.tree.leaves(tiny, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(x, nn.Partitioned) for x in boxed)  # every parameter has names
    P = jax.sharding.PartitionSpec
    assert specs["llm"]["layers"]["attn_0"]["q"] == P("layers", "heads", "embed", "kv")
    assert specs["img"]["blocks"]["mlp_fc1"]["kernel"] == P("layers", "embed", "mlp")
    assert specs["llm"]["input_embedding"] == P("vocab", "embed")
    with pytest.raises(ValueError, match="preset"):
        pi05_config("huge")


def test_attention_mask_is_prefix_lm():
    valid = jnp.array([[True, True, False, True, True, True]])
    starts = jnp.array([False, False, False, False, True, False])  # prefix of 4, suffix of 2
    mask = np.asarray(make_attention_mask(valid, starts)[0])
    assert mask[:4, 4:].sum() == 0  # the prefix never sees the actions
    assert mask[4:, [0, 1, 3, 4, 5]].all()  # actions see the valid prefix and each other
    assert not mask[:, 2].any() and not mask[2].any()  # padding is neither key nor query


def test_cached_sampling_step_equals_full_pass(tiny_policy, make_observation):
    config, model, params, velocity = tiny_policy
    obs = make_observation(config, B, seed=2)
    x = jax.random.normal(jax.random.key(1), (B, config.action_horizon, config.action_dim))
    t = jnp.array([0.05, 0.5, 0.7, 1.0])
    full = velocity(params, obs, x, t)

    @jax.jit
    def cached(params, obs, x, t):
        cache, prefix_mask = model.apply(params, obs, method=Pi05.prefix_cache)
        return model.apply(params, cache, prefix_mask, x, t, method=Pi05.velocity_from_cache)

    np.testing.assert_allclose(cached(params, obs, x, t), full, atol=1e-5, rtol=1e-5)

    # Masked inputs are invisible: a masked camera or padded text can hold anything.
    changed = obs.replace(
        images=obs.images.at[:, -1].set(1.0),
        tokens=jnp.where(obs.token_mask, obs.tokens, 7),
    )
    np.testing.assert_allclose(velocity(params, changed, x, t), full, atol=1e-6)
    visible = obs.replace(images=obs.images.at[:, 0].multiply(-1.0))
    assert np.abs(velocity(params, visible, x, t) - full).max() > 1e-4  # vs 1e-6 above


def test_sampler_is_euler_on_the_velocity(tiny_policy, make_observation):
    config, model, params, velocity = tiny_policy
    obs = make_observation(config, B, seed=3)
    noise = jax.random.normal(jax.random.key(2), (B, config.action_horizon, config.action_dim))
    got = sample_actions(model, params, obs, jax.random.key(0), noise=noise)

    steps = config.num_sampling_steps
    x = noise
    for i in range(steps):  # t = 1, 1 - 1/N, ..., 1/N with dt = -1/N
        x = x - velocity(params, obs, x, jnp.full((B,), 1.0 - i / steps)) / steps
    np.testing.assert_allclose(got, x, atol=1e-5, rtol=1e-5)

    # Batched: each example's actions depend on its own observation and noise only.
    flip = lambda a: a[::-1]
    flipped = sample_actions(
        model, params, jax.tree.map(flip, obs), jax.random.key(0), noise=flip(noise)
    )
    np.testing.assert_allclose(flipped, flip(got), atol=1e-5, rtol=1e-5)


def test_tiny_policy_overfits_and_sampler_reproduces_actions(tiny_policy, make_observation):
    config, model, params, _ = tiny_policy
    real_dims, steps, draws = 8, 300, 4
    obs = make_observation(config, B, seed=1)
    rng = np.random.default_rng(1)
    actions = np.zeros((B, config.action_horizon, config.action_dim), np.float32)
    actions[..., :real_dims] = rng.uniform(-1, 1, (B, config.action_horizon, real_dims))
    actions = jnp.asarray(actions)
    action_mask = jnp.arange(config.action_dim) < real_dims  # DROID-style padding to 32
    tx = optax.adam(optax.cosine_decay_schedule(3e-3, steps, alpha=0.05))
    # Each step sees every example under `draws` (noise, t) pairs: fewer, better-averaged
    # steps, which on CPU costs less than more steps of batch 4.
    obs_rep = jax.tree.map(lambda a: jnp.concatenate([a] * draws), obs)
    actions_rep = jnp.concatenate([actions] * draws)

    def loss_fn(params, rng):
        velocity = lambda x_t, t: model.apply(params, obs_rep, x_t, t)
        return flow_matching_loss(velocity, actions_rep, rng, action_mask=action_mask)[0]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def train(params):
        def step(carry, i):
            params, opt_state = carry
            rng = jax.random.fold_in(jax.random.key(0), i)
            loss, grads = jax.value_and_grad(loss_fn)(params, rng)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
        return params, losses

    params, losses = train(params)
    losses = np.asarray(losses)
    first, last = losses[:10].mean(), losses[-50:].mean()
    assert np.isfinite(losses).all() and last < first / 10, (first, last)

    noise = jax.random.normal(jax.random.key(5), actions.shape)
    sampled = sample_actions(
        model, params, obs, jax.random.key(5), noise=noise, action_mask=action_mask
    )
    error = np.abs(np.asarray(sampled - actions)[..., :real_dims])
    assert error.mean() < 0.1, error.mean()
    np.testing.assert_allclose(np.asarray(sampled)[..., real_dims:], 0.0, atol=1e-5)


def test_bfloat16_compute_tracks_float32(tiny_policy, make_observation):
    # The paper preset computes in bf16 with fp32 master weights; the same weights must give
    # nearly the same velocity (bf16 has ~3 significant digits).
    config, _, params, velocity = tiny_policy
    bf16 = Pi05(pi05_config("tiny", remat_policy="none", dtype="bfloat16"))
    obs = make_observation(config, B, seed=4)
    x = jax.random.normal(jax.random.key(3), (B, config.action_horizon, config.action_dim))
    t = jnp.array([0.1, 0.4, 0.6, 0.9])
    want = velocity(params, obs, x, t)
    got = jax.jit(bf16.apply)(params, obs, x, t)
    assert got.dtype == jnp.float32
    assert float(jnp.abs(got - want).max()) < 0.05 * float(jnp.abs(want).max())


@pytest.mark.slow
def test_remat_policy_leaves_gradients_unchanged(tiny_policy, make_observation):
    config, _, params, _ = tiny_policy
    obs = make_observation(config, B, seed=6)
    x = jax.random.normal(jax.random.key(7), (B, config.action_horizon, config.action_dim))
    t = jnp.array([0.2, 0.4, 0.6, 0.8])

    def grads(policy):
        model = Pi05(pi05_config("tiny", remat_policy=policy))
        return jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, obs, x, t) ** 2)))(params)

    want, got = grads("none"), grads("nothing_saveable")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), got, want)


def test_continuous_state_reaches_the_expert_and_the_sampler(make_observation, make_params):
    config = pi05_config(
        "tiny", remat_policy="none", state_input="continuous", trained_action_dims=3
    )
    model = Pi05(config)
    params = make_params(config, seed=4)
    assert params["params"]["state_proj"]["kernel"].shape == (config.action_dim, 32)
    obs = make_observation(config, B, seed=5)
    obs = obs.replace(state=jnp.asarray(np.random.default_rng(6).uniform(-1, 1, (B, 8))))
    x = jax.random.normal(jax.random.key(3), (B, config.action_horizon, config.action_dim))
    t = jnp.full((B,), 0.5)
    velocity = jax.jit(model.apply)
    moved = obs.replace(state=obs.state.at[:, 0].add(0.5))
    assert np.abs(velocity(params, moved, x, t) - velocity(params, obs, x, t)).max() > 1e-4

    # The cached sampler reads the state as the full pass does, and with trained_action_dims
    # the untrained padded dims follow their exact flow to 0.
    noise = jax.random.normal(jax.random.key(4), x.shape)
    sampled = sample_actions(model, params, obs, jax.random.key(0), noise=noise)
    np.testing.assert_allclose(sampled[..., 3:], 0.0, atol=1e-5)
    expected = noise
    for i in range(config.num_sampling_steps):
        tt = jnp.full((B,), 1.0 - i / config.num_sampling_steps)
        v = jnp.where(jnp.arange(config.action_dim) < 3, velocity(params, obs, expected, tt), noise)
        expected = expected - v / config.num_sampling_steps
    np.testing.assert_allclose(sampled, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs Observation.state"):
        velocity(params, obs.replace(state=None), x, t)
