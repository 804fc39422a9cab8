"""Ctrl-World conditioning, memory, sampler and loss wrapper at tiny size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlaw.models.world_model import ctrl_world as cw

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def test_karras_sigmas_and_euler_steps_match_diffusers_svd_scheduler():
    sched = diffusers.EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_type="continuous",
        timestep_spacing="leading",
        steps_offset=1,
        interpolation_type="linear",
    )  # SVD img2vid scheduler_config.json
    n = 6
    sched.set_timesteps(n)
    sigmas = cw.karras_sigmas(n, 0.002, 700.0, 7.0)
    np.testing.assert_allclose(np.asarray(sigmas), sched.sigmas.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        sched.timesteps.numpy(), 0.25 * np.log(np.asarray(sigmas[:-1])), 1e-5
    )
    # ctrl_world.md §4.3: N = 50 starts 700.0, 620.33, 548.56.
    np.testing.assert_allclose(
        np.asarray(cw.karras_sigmas(50, 0.002, 700.0, 7.0)[:3]), [700.0, 620.33, 548.56], atol=1e-2
    )

    # A fixed nonlinear "network" run through both samplers (no guidance, one memory frame).
    rng = jax.random.key(0)
    history = jax.random.normal(jax.random.key(1), (1, 1, 4, 3, 4))
    cond = jnp.zeros((1, 4, 3, 4))

    def network(model_input, condition, c_noise, context):
        return 0.5 * jnp.tanh(model_input) + 0.1 * c_noise[:, None, None, None, None]

    ours = cw.sample_future(
        network,
        history,
        cond,
        jnp.zeros((1, 3, 1, 8)),
        rng,
        num_future=2,
        sigmas=sigmas,
        max_guidance=1.0,
    )
    x = jax.random.normal(rng, (1, 2, 4, 3, 4)) * np.sqrt(700.0**2 + 1)
    np.testing.assert_allclose(float(sched.init_noise_sigma), np.sqrt(700.0**2 + 1), rtol=1e-6)
    x = torch.from_numpy(np.array(x))
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        out = 0.5 * torch.tanh(inp) + 0.1 * t
        x = sched.step(out, t, x).prev_sample
    np.testing.assert_allclose(np.asarray(ours), x.numpy(), atol=1e-4)


def _oracle(target_cond, target_uncond, num_history):
    """F such that x0 = target_cond where the context is nonzero, target_uncond where zero."""

    def network(model_input, condition, c_noise, context):
        sigma = jnp.exp(4.0 * c_noise)[:, None, None, None, None]
        c_in = 1 / jnp.sqrt(sigma**2 + 1)
        c_skip, c_out = 1 / (sigma**2 + 1), -sigma / jnp.sqrt(sigma**2 + 1)
        uses_context = (jnp.abs(context).sum(axis=(1, 2, 3)) > 0)[:, None, None, None, None]
        reps = (model_input.shape[0] // target_cond.shape[0], 1, 1, 1, 1)  # CFG doubles the batch
        target = jnp.where(uses_context, jnp.tile(target_cond, reps), jnp.tile(target_uncond, reps))
        future = model_input[:, num_history:] / c_in
        out = (target - c_skip * future) / c_out
        return jnp.concatenate([jnp.zeros_like(model_input[:, :num_history]), out], axis=1)

    return network


def test_sampler_returns_oracle_x0_and_applies_per_frame_guidance():
    b, nh, nf, shape = 2, 2, 3, (4, 3, 4)
    a = jax.random.normal(jax.random.key(0), (b, nf, *shape))
    u = jax.random.normal(jax.random.key(1), (b, nf, *shape))
    history = jnp.ones((b, nh, *shape))
    context = jnp.ones((b, nh + nf, 1, 8))
    sigmas = cw.karras_sigmas(8, 0.002, 700.0, 7.0)
    kw = dict(num_future=nf, sigmas=sigmas)
    plain = cw.sample_future(
        _oracle(a, u, nh),
        history,
        history[:, 0],
        context,
        jax.random.key(2),
        max_guidance=1.0,
        **kw,
    )
    np.testing.assert_allclose(np.asarray(plain), np.asarray(a), atol=2e-3)
    guided = cw.sample_future(
        _oracle(a, u, nh),
        history,
        history[:, 0],
        context,
        jax.random.key(2),
        min_guidance=1.0,
        max_guidance=2.0,
        **kw,
    )
    w = np.linspace(1.0, 2.0, nf).reshape(1, nf, 1, 1, 1)
    np.testing.assert_allclose(np.asarray(guided), np.asarray(u + w * (a - u)), atol=2e-3)
    again = cw.sample_future(
        _oracle(a, u, nh),
        history,
        history[:, 0],
        context,
        jax.random.key(2),
        min_guidance=1.0,
        max_guidance=2.0,
        **kw,
    )
    np.testing.assert_array_equal(np.asarray(guided), np.asarray(again))


def test_views_stack_along_height():
    views = jnp.arange(2 * 3 * 2 * 4 * 5 * 1, dtype=jnp.float32).reshape(2, 3, 2, 4, 5, 1)
    stacked = cw.stack_views(views)
    assert stacked.shape == (2, 3, 8, 5, 1)
    np.testing.assert_array_equal(np.asarray(stacked[:, :, 4:6]), np.asarray(views[:, :, 2, :2]))
    np.testing.assert_array_equal(np.asarray(cw.split_views(stacked, 2)), np.asarray(views))


def test_memory_buffer_indices():
    cfg = cw.CtrlWorldConfig.preset("paper")  # 24 initial copies, idx (0, 0, -12, -9, -6, -3)
    first = jnp.zeros((1, 2, 2, 1))
    memory = cw.init_memory(cfg, first, jnp.zeros((1, 7)), steps=20)
    frames, poses = cw.memory_frames(memory, cfg.history_idx)
    assert frames.shape == (1, 6, 2, 2, 1) and poses.shape == (1, 6, 7)
    assert float(jnp.abs(frames).max()) == 0.0  # all copies of the first observation
    for k in range(1, 13):
        memory = cw.append_memory(memory, jnp.full((1, 2, 2, 1), k), jnp.full((1, 7), k))
    frames, poses = cw.memory_frames(memory, cfg.history_idx)
    # Entry -k is the k-th most recent chunk end: 12 appended -> -3 is chunk 10, -12 is chunk 1.
    np.testing.assert_array_equal(np.asarray(frames[0, :, 0, 0, 0]), [0, 0, 1, 4, 7, 10])
    np.testing.assert_array_equal(np.asarray(poses[0, :, 0]), [0, 0, 1, 4, 7, 10])
    assert float(cw.memory_frames(memory, (-1,))[0][0, 0, 0, 0, 0]) == 12


def test_action_encoder_matches_reference_definition_and_text_is_tiled():
    from vlaw.convert.ctrl_world import convert_state_dict, param_shapes

    hidden = 32
    torch.manual_seed(0)
    ref = torch.nn.Sequential(
        torch.nn.Linear(7, hidden),
        torch.nn.SiLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.SiLU(),
        torch.nn.Linear(hidden, hidden),
    )  # Ctrl-World Action_encoder2.action_encode with 1024 -> hidden
    state = {f"action_encoder.action_encode.{k}": v for k, v in ref.state_dict().items()}
    enc = cw.ActionEncoder(hidden)
    target = param_shapes(enc, jnp.zeros((1, 1, 7)))
    params = convert_state_dict(state, target, prefix="action_encoder.")
    poses = np.random.default_rng(0).uniform(-1, 1, (2, 5, 7)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(poses)).numpy()
    out = enc.apply({"params": params}, jnp.asarray(poses))
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)

    cfg = cw.CtrlWorldConfig.preset("tiny")
    model = cw.CtrlWorld(cfg)
    text = jax.random.normal(jax.random.key(1), (2, cfg.text_dim))
    # Initialising through `context` creates only the action encoder (the UNet is not needed).
    full = model.init(jax.random.key(0), jnp.asarray(poses), text, method="context")["params"]
    with_text = model.apply({"params": full}, jnp.asarray(poses), text, method="context")
    without = model.apply({"params": full}, jnp.asarray(poses), None, method="context")
    assert with_text.shape == (2, 5, 1, cfg.hidden_dim)
    # The 16-d text vector tiled to 32 is added to every frame's token (Ctrl-World: 512 -> 1024).
    tiled = jnp.concatenate([text, text], axis=-1)[:, None, None, :]
    np.testing.assert_allclose(
        np.asarray(with_text - without),
        np.asarray(jnp.broadcast_to(tiled, with_text.shape)),
        atol=1e-5,
    )


def test_normalize_poses_bounds():
    cfg = cw.CtrlWorldConfig.preset("paper")
    low, high = jnp.asarray(cfg.pose_low), jnp.asarray(cfg.pose_high)
    np.testing.assert_allclose(np.asarray(cw.normalize_poses(low, cfg)), -1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cw.normalize_poses(high, cfg)), 1.0, atol=1e-6)
    assert float(cw.normalize_poses(high + 5.0, cfg).max()) == 1.0


def test_sim_pose_normalization_is_continuous_through_roll_pi():
    # A gripper pointing down: atan2 reports its roll as +pi - e or -pi + e at random. Under
    # DROID's bounds the two land at opposite ends; wrapped about pi they are neighbours.
    low, high, center = cw.POSE_NORMALIZATIONS["sim"]
    cfg = cw.CtrlWorldConfig.preset("tiny", pose_low=low, pose_high=high, pose_angle_center=center)
    droid = cw.CtrlWorldConfig.preset("tiny")
    pose = np.array([0.5, 0.0, 0.2, np.pi - 0.01, 0.0, 1.0, 0.5], np.float32)
    flipped = pose.copy()
    flipped[3] = -np.pi + 0.01
    poses = jnp.asarray(np.stack([pose, flipped]))
    wrapped, as_droid = (
        np.asarray(cw.normalize_poses(poses, cfg)),
        np.asarray(cw.normalize_poses(poses, droid)),
    )
    assert abs(wrapped[0, 3] - wrapped[1, 3]) < 0.02
    assert abs(as_droid[0, 3] - as_droid[1, 3]) > 1.9
    # The other dims are the plain bound normalisation, and every bound maps to -1 / +1.
    np.testing.assert_allclose(np.delete(wrapped[0], 3), np.delete(wrapped[1], 3), atol=1e-6)
    for bound, value in ((low, -1.0), (high, 1.0)):
        normalised = cw.normalize_poses(jnp.asarray(bound, jnp.float32), cfg)
        np.testing.assert_allclose(np.asarray(normalised), value, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_model():
    cfg = cw.CtrlWorldConfig.preset("tiny", num_steps=2)
    model = cw.CtrlWorld(cfg)
    return cfg, model, cw.init_params(model, jax.random.key(0))


@pytest.mark.slow  # compiles the UNet's backward pass: ~1 min of CPU
def test_tiny_loss_is_finite_has_gradients_and_descends(tiny_model):
    import optax

    cfg, model, params = tiny_model
    h, w = cfg.num_views * cfg.view_latent_shape[0], cfg.view_latent_shape[1]
    batch = {
        "latents": jax.random.normal(jax.random.key(1), (2, cfg.num_frames, h, w, 4)),
        "poses": jax.random.uniform(jax.random.key(2), (2, cfg.num_frames, 7), minval=-1),
        "text_embeds": jax.random.normal(jax.random.key(3), (2, cfg.text_dim)),
        "weights": jnp.asarray([1.0, 0.5]),
    }
    params = flax_unbox(params)
    grad_fn = jax.jit(
        jax.value_and_grad(
            lambda p: cw.world_model_loss(model, p, batch, jax.random.key(4)), has_aux=True
        )
    )
    (loss, metrics), grads = grad_fn(params)
    assert np.isfinite(float(loss)) and float(loss) > 0
    norms = [float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads)]
    assert all(np.isfinite(norms))
    assert float(jnp.abs(grads["action_encoder"]["action_encode_0"]["kernel"]).sum()) > 0
    # Same noise every step (fixed key): a few Adam steps must lower this exact loss.
    opt = optax.adam(1e-3)
    state = opt.init(params)
    first = float(loss)
    for _ in range(5):
        (loss, _), grads = grad_fn(params)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert float(loss) < first, (first, float(loss))


def flax_unbox(params):
    import flax.linen as nn

    return nn.unbox(params)


@pytest.mark.slow  # compiles the tiny UNet inside the sampler's scan: ~1 min of CPU
def test_tiny_rollout_shapes_and_determinism(tiny_model):
    cfg, model, params = tiny_model
    params = flax_unbox(params)
    h, w = cfg.num_views * cfg.view_latent_shape[0], cfg.view_latent_shape[1]
    first = jax.random.normal(jax.random.key(1), (2, h, w, 4))
    pose0 = jnp.zeros((2, 7))
    chunks = jax.random.uniform(jax.random.key(2), (2, 2, cfg.num_future, 7), minval=-1)
    text = jnp.ones((2, cfg.text_dim))
    out = cw.rollout(model, params, first, pose0, chunks, text, jax.random.key(3))
    assert out.shape == (2, 2, cfg.num_future, h, w, 4)
    assert np.all(np.isfinite(np.asarray(out)))
    again = cw.rollout(model, params, first, pose0, chunks, text, jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(again))


def test_residual_prediction_diffuses_changes_and_adds_the_current_frame_back(
    tiny_model, monkeypatch
):
    """`predict` with residual_scale s hands the sampler s * (history - current) and returns
    current + x / s. A sampler answering "nothing moves" (x = 0) for frame 0 and echoing the
    newest history residual for the others must give the current frame, then that history
    frame itself."""
    import dataclasses

    cfg, _, params = tiny_model
    cfg = dataclasses.replace(cfg, residual_scale=2.5)  # a new static model: a fresh trace
    model = cw.CtrlWorld(cfg)
    h, w = cfg.num_views * cfg.view_latent_shape[0], cfg.view_latent_shape[1]
    history = jax.random.normal(jax.random.key(1), (2, cfg.num_history, h, w, 4))
    current = jax.random.normal(jax.random.key(2), (2, h, w, 4))

    def echo_sampler(network, history_in, condition, context, rng, *, num_future, **kwargs):
        newest = jnp.repeat(history_in[:, -1:], num_future - 1, axis=1)
        return jnp.concatenate([jnp.zeros_like(history_in[:, :1]), newest], axis=1)

    monkeypatch.setattr(cw, "sample_future", echo_sampler)
    poses = jnp.zeros((2, cfg.num_frames, 7))
    text = jnp.ones((2, cfg.text_dim))
    chunk = cw.predict(model, flax_unbox(params), history, current, poses, text, jax.random.key(3))
    assert chunk.shape == (2, cfg.num_future, h, w, 4)
    np.testing.assert_allclose(np.asarray(chunk[:, 0]), np.asarray(current), atol=1e-6)
    for f in range(1, cfg.num_future):
        np.testing.assert_allclose(np.asarray(chunk[:, f]), np.asarray(history[:, -1]), atol=1e-5)
