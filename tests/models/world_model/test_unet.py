"""SVD UNet: parity with diffusers' UNetSpatioTemporalConditionModel on a tiny random config."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlaw.convert.ctrl_world import convert_unet, diffusers_unet
from vlaw.models.world_model.unet import UNetConfig, UNetSpatioTemporal

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


class _FrameLevelContext:
    """Ctrl-World's `frame_level_cond`: where diffusers repeats a (B, L, D) context over frames,
    the (B, F, D) per-frame context is reshaped to (B*F, 1, D) instead (one token per frame)."""

    def __init__(self, context):
        self.context = context
        self.shape = context.shape

    def repeat_interleave(self, *args, **kwargs):
        return self.context.reshape(-1, 1, self.context.shape[-1])


def _tiny_diffusers_unet(cfg: UNetConfig):
    torch.manual_seed(0)
    model = diffusers_unet(cfg).eval()
    # Perturb every tensor so norm scales/biases, blend factors and zero-init layers all matter.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tiny():
    cfg = UNetConfig.preset("tiny")
    model = _tiny_diffusers_unet(cfg)
    params = convert_unet(model.state_dict(), cfg)
    apply = jax.jit(UNetSpatioTemporal(cfg).apply)  # one compile: both tests use one shape
    return cfg, model, params, apply


def _run_both(cfg, model, params, apply, frame_level: bool, height: int, width: int):
    b, f = 2, 3
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((b, f, cfg.in_channels, height, width)).astype(np.float32)
    c_noise = np.array([0.3, -0.7], np.float32)
    ids = np.array([[7.0, 127.0, 0.02], [6.0, 100.0, 0.0]], np.float32)
    if frame_level:
        context = rng.standard_normal((b, f, cfg.cross_attention_dim)).astype(np.float32)
        torch_context = _FrameLevelContext(torch.from_numpy(context))
        jax_context = context[:, :, None, :]
    else:
        context = rng.standard_normal((b, 1, cfg.cross_attention_dim)).astype(np.float32)
        torch_context = torch.from_numpy(context)
        jax_context = np.broadcast_to(context[:, None], (b, f, 1, cfg.cross_attention_dim))
    with torch.no_grad():
        ref = model(
            torch.from_numpy(sample),
            torch.from_numpy(c_noise),
            encoder_hidden_states=torch_context,
            added_time_ids=torch.from_numpy(ids),
        ).sample.numpy()
    with jax.default_matmul_precision("highest"):
        out = apply(
            {"params": params},
            jnp.asarray(sample.transpose(0, 1, 3, 4, 2)),
            jnp.asarray(c_noise),
            jnp.asarray(jax_context),
            jnp.asarray(ids),
        )
    return np.asarray(out), ref.transpose(0, 1, 3, 4, 2)


@pytest.mark.parametrize("frame_level", [True, False])
def test_unet_matches_diffusers(tiny, frame_level):
    """Width 5 halves to 3 and the upsampler must resize back to the skip's 5, as diffusers
    does when a size is odd (`upsample_size`); height 4 is the even path."""
    cfg, model, params, apply = tiny
    out, ref = _run_both(cfg, model, params, apply, frame_level, height=4, width=5)
    err = np.abs(out - ref).max()
    print(
        f"UNet parity (frame_level={frame_level}): max abs err {err:.2e}, "
        f"ref max {np.abs(ref).max():.2f}"
    )
    assert out.shape == ref.shape
    assert err < 1e-4


def test_unet_matches_diffusers_with_two_transformer_layers_at_an_inner_level():
    """Attention only at the middle of three levels (down_blocks_1 / up_blocks_1, neither the
    first attention-free block) and two transformer layers per block: both transformer layers
    share one `time_mixer`, as in diffusers' TransformerSpatioTemporalModel."""
    cfg = UNetConfig.preset(
        "tiny",
        block_out_channels=(32, 32, 64),
        cross_attention_levels=(False, True, False),
        num_attention_heads=(2, 2, 4),
        transformer_layers_per_block=2,
    )
    model = _tiny_diffusers_unet(cfg)
    attn = model.down_blocks[1].attentions[0]
    assert len(attn.transformer_blocks) == 2  # the builder forwards transformer_layers_per_block
    params = convert_unet(model.state_dict(), cfg)  # strict: every diffusers key is consumed
    apply = jax.jit(UNetSpatioTemporal(cfg).apply)
    out, ref = _run_both(cfg, model, params, apply, frame_level=True, height=4, width=5)
    err = np.abs(out - ref).max()
    print(f"UNet parity (2 transformer layers, inner level): max abs err {err:.2e}")
    assert out.shape == ref.shape
    assert err < 1e-4


def test_presets_build_and_paper_matches_svd_count():
    from vlaw.models.world_model.ctrl_world import CtrlWorld, CtrlWorldConfig, init_params

    def count(tree):
        leaves = jax.tree_util.tree_leaves(nn.unbox(tree))
        return sum(int(np.prod(x.shape)) for x in leaves), len(leaves)

    sizes = {}
    for preset in ("tiny", "sim", "paper"):
        cfg = CtrlWorldConfig.preset(preset)
        params = jax.eval_shape(lambda k, c=cfg: init_params(CtrlWorld(c), k), jax.random.key(0))
        sizes[preset] = (count(params["unet"]), count(params["action_encoder"]))
    assert sizes["tiny"][0][0] < 5_000_000
    # SVD img2vid UNet: 1,524,623,082 parameters in 1,428 tensors (ctrl_world.md §2.6); the
    # action MLP 7*1024+1024 + 2*(1024*1024+1024) = 2,107,392 in 6 tensors.
    assert sizes["paper"] == ((1_524_623_082, 1_428), (2_107_392, 6))
    assert sizes["tiny"][0][0] < sizes["sim"][0][0] < sizes["paper"][0][0]


def test_ctrl_world_checkpoint_layout(tiny):
    """A state dict shaped like `checkpoint-10000.pt`: whole-module keys with prefixes."""
    from vlaw.convert.ctrl_world import convert_ctrl_world
    from vlaw.models.world_model.ctrl_world import CtrlWorldConfig

    cfg, model, params, _ = tiny
    wm = CtrlWorldConfig.preset("tiny")
    hidden = wm.hidden_dim
    state = {f"unet.{k}": v for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    for k, (o, i) in {"0": (hidden, 7), "2": (hidden, hidden), "4": (hidden, hidden)}.items():
        state[f"action_encoder.action_encode.{k}.weight"] = rng.standard_normal((o, i))
        state[f"action_encoder.action_encode.{k}.bias"] = rng.standard_normal((o,))
    # Frozen towers that vlaw does not take from this file are ignored.
    state["image_encoder.vision_model.embeddings.class_embedding"] = np.zeros(4)
    state["text_encoder.text_projection.weight"] = np.zeros((4, 4))
    out = convert_ctrl_world(state, wm)
    for a, b in zip(
        jax.tree_util.tree_leaves(out["unet"]), jax.tree_util.tree_leaves(params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(
        np.asarray(out["action_encoder"]["action_encode_2"]["kernel"]),
        state["action_encoder.action_encode.2.weight"].T,
        rtol=1e-6,
    )


def test_every_parameter_has_logical_axes():
    from vlaw.models.world_model.vae import TemporalVAE, VAEConfig

    cfg = UNetConfig.preset("tiny")
    unet = jax.eval_shape(
        UNetSpatioTemporal(cfg).init,
        jax.random.key(0),
        jnp.zeros((1, 2, 4, 4, cfg.in_channels)),
        jnp.zeros((1,)),
        jnp.zeros((1, 2, 1, cfg.cross_attention_dim)),
        jnp.zeros((1, cfg.num_added_ids)),
    )
    vae = jax.eval_shape(
        TemporalVAE(VAEConfig.preset("tiny")).init, jax.random.key(0), jnp.zeros((1, 8, 8, 3))
    )
    for tree in (unet, vae):
        leaves = jax.tree_util.tree_leaves(
            tree["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned)
        )
        assert all(isinstance(x, nn.Partitioned) for x in leaves)
        assert all(len(x.names) == x.value.ndim for x in leaves)


@pytest.mark.slow  # two more compiles of the tiny UNet
def test_bf16_compute_and_remat_stay_close_to_fp32(tiny):
    cfg, _, params, apply = tiny
    rng = np.random.default_rng(0)
    args = (
        jnp.asarray(rng.standard_normal((1, 3, 4, 5, cfg.in_channels)), jnp.float32),
        jnp.asarray([0.3]),
        jnp.asarray(rng.standard_normal((1, 3, 1, cfg.cross_attention_dim)), jnp.float32),
        jnp.asarray([[7.0, 127.0, 0.02]]),
    )
    ref = apply({"params": params}, *args)
    fast = UNetSpatioTemporal(
        UNetConfig.preset("tiny", dtype="bfloat16", remat_policy="nothing_saveable")
    )
    out = jax.jit(fast.apply)({"params": params}, *args)
    assert out.dtype == jnp.float32
    rel = float(jnp.abs(out - ref).max() / jnp.abs(ref).max())
    assert rel < 5e-2, rel

    def loss(p):
        return jnp.mean(fast.apply({"params": p}, *args) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.slow  # compiles the tiny UNet for a 2x2x2 mesh of fake CPU devices
def test_sharded_forward_equals_single_device(tiny):
    """Batch 8 = 2 examples per batch shard. With 1 per shard (batch 4) XLA 0.10.2's CPU SPMD
    partitioner returns wrong values for half the examples: see test_sharding_bug.py."""
    from vlaw.train.mesh import batch_sharding, create_mesh, param_shardings

    if len(jax.devices()) < 8:
        pytest.skip("needs the 8 fake CPU devices of tests/conftest.py")
    cfg, _, params, apply = tiny
    mesh = create_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = UNetSpatioTemporal(cfg)
    boxed = jax.eval_shape(
        model.init,
        jax.random.key(0),
        jnp.zeros((1, 3, 4, 5, cfg.in_channels)),
        jnp.zeros((1,)),
        jnp.zeros((1, 3, 1, cfg.cross_attention_dim)),
        jnp.zeros((1, cfg.num_added_ids)),
    )["params"]
    shardings = param_shardings(boxed, mesh)
    assert any(s.spec != () for s in jax.tree_util.tree_leaves(shardings))  # something is split
    rng = np.random.default_rng(0)
    args = (
        jnp.asarray(rng.standard_normal((8, 3, 4, 5, cfg.in_channels)), jnp.float32),
        jnp.asarray(rng.uniform(-1.5, 1.5, (8,)), jnp.float32),
        jnp.asarray(rng.standard_normal((8, 3, 1, cfg.cross_attention_dim)), jnp.float32),
        jnp.tile(jnp.asarray([[7.0, 127.0, 0.02]]), (8, 1)),
    )
    single = apply({"params": params}, *args)
    sharded_params = jax.device_put(params, shardings)
    sharded_args = jax.device_put(args, batch_sharding(mesh))
    out = jax.jit(model.apply)({"params": sharded_params}, *sharded_args)
    np.testing.assert_allclose(np.asarray(out), np.asarray(single), atol=2e-5)
