"""Presets, parameter counts and logical axis names of the Qwen3-VL modules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlaw.models.reward.qwen3_vl import Qwen3VL, Qwen3VLConfig
from vlaw.models.reward.vision import position_embedding_taps, resized_frame_size


def _abstract_params(config, frames=2):
    size = config.frame_factor
    ids = jnp.zeros((1, 8), jnp.int32)
    video = jnp.zeros((1, frames, size, size, 3))
    return jax.eval_shape(lambda: Qwen3VL(config).init(jax.random.PRNGKey(0), ids, video))


def _count(variables):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.meta.unbox(variables)))


def test_paper_preset_has_qwen3_vl_4b_parameter_count():
    """4,437,815,808 unique parameters for Qwen3-VL-4B-Instruct (lm_head tied), as counted
    on transformers' own module (reward_dsrl_metrics.md §1.1)."""
    assert _count(_abstract_params(Qwen3VLConfig.paper())) == 4_437_815_808


@pytest.mark.parametrize("preset, limit", [("tiny", 5e6), ("sim", 20e6)])
def test_small_presets_sizes(preset, limit):
    assert _count(_abstract_params(Qwen3VLConfig.from_preset(preset))) < limit


def test_parameters_carry_logical_axes():
    variables = _abstract_params(Qwen3VLConfig.tiny())
    specs = nn.get_partition_spec(variables)["params"]
    layer = specs["language_model"]["layers"]["layer"]
    assert tuple(layer["q_proj"]["kernel"]) == ("layers", "embed", "heads", "head_dim")
    assert tuple(layer["k_proj"]["kernel"]) == ("layers", "embed", "kv_heads", "head_dim")
    assert tuple(specs["language_model"]["embed_tokens"]["embedding"]) == ("vocab", "embed")
    block = specs["visual"]["stage_0"]["block"]
    assert tuple(block["linear_fc1"]["kernel"]) == ("layers", "embed", "mlp")


def test_vision_stages_cut_at_deepstack_taps():
    assert Qwen3VLConfig.paper().vision.stages == ((0, 6), (6, 6), (12, 6), (18, 6))
    assert Qwen3VLConfig.tiny().vision.stages == ((0, 1), (1, 1), (2, 1))


def test_position_embedding_taps_reproduce_bilinear_resampling():
    """Resampling a table whose entry is its own (row, col) gives linearly spaced coordinates:
    bilinear interpolation with align_corners maps the grid ends onto the table ends."""
    side, gh, gw = 4, 6, 10
    coords = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1)
    table = coords.reshape(side * side, 2).astype(np.float64)
    idx, w = position_embedding_taps(gh, gw, side, merge=2)
    resampled = (table[idx] * w[..., None]).sum(1)
    # Undo the merge-block order: block (r, c) holds patches (2r+i, 2c+j).
    grid = resampled.reshape(gh // 2, gw // 2, 2, 2, 2).transpose(0, 2, 1, 3, 4).reshape(gh, gw, 2)
    np.testing.assert_allclose(grid[:, 0, 0], np.linspace(0, side - 1, gh), atol=1e-6)
    np.testing.assert_allclose(grid[0, :, 1], np.linspace(0, side - 1, gw), atol=1e-6)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)


def test_resized_frame_size_rounds_to_patch_times_merge():
    assert resized_frame_size(180, 320) == (192, 320)  # DROID's 180x320 -> 12 x 20 patches
    assert resized_frame_size(64, 64) == (64, 64)
    assert resized_frame_size(20, 40, factor=32) == (32, 64)


def _tiny_inputs():
    config = Qwen3VLConfig.tiny()
    video_tokens = 2 * 2 * 2  # 4 frames of 32x32: 2 temporal patches of 2x2 merged tokens
    group = [config.vision_start_token_id] + [config.video_token_id] * 4
    ids = [1, 20, 21, 30, *group, config.vision_end_token_id, 31, *group, 10, 40, 41, 2]
    assert ids.count(config.video_token_id) == video_tokens
    ids = jnp.asarray([ids, ids[:1] + ids[2:] + [0]])
    mask = jnp.ones_like(ids).at[1, -1].set(0)
    video = jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 32, 32, 3), minval=-1, maxval=1)
    return config, ids, video, mask


def test_bfloat16_compute_tracks_float32():
    """The paper preset computes in bfloat16 over float32 weights: same code, close logits."""
    import dataclasses

    from vlaw.models.reward.qwen3_vl import init_params

    config, ids, video, mask = _tiny_inputs()
    params = init_params(config, jax.random.PRNGKey(0))
    bf16 = dataclasses.replace(config, dtype="bfloat16")
    run = jax.jit(lambda p, c: Qwen3VL(c).apply({"params": p}, ids, video, mask), static_argnums=1)
    full, half = run(params, config), run(params, bf16)
    assert half.dtype == jnp.float32 and bool(jnp.isfinite(half).all())
    np.testing.assert_allclose(half, full, atol=0.05 * float(jnp.abs(full).max()))


@pytest.mark.slow  # two gradient compiles: ~30 s of a shared 2-core CPU
def test_remat_gives_the_same_gradients():
    import dataclasses

    from vlaw.models.reward.qwen3_vl import init_params

    config, ids, video, mask = _tiny_inputs()
    params = init_params(config, jax.random.PRNGKey(0))
    remat = dataclasses.replace(config, remat_policy="nothing_saveable")

    def grads(c):
        loss = lambda p: jnp.mean(Qwen3VL(c).apply({"params": p}, ids, video, mask) ** 2)
        return jax.jit(jax.grad(loss))(params)

    for a, b in zip(
        jax.tree_util.tree_leaves(grads(config)), jax.tree_util.tree_leaves(grads(remat))
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.slow  # one more full-model compile over 8 fake devices
def test_sharded_yes_probability_equals_single_device():
    """Parameters FSDP-sharded by their logical axes on a 2x4 (data, fsdp) mesh of fake CPU
    devices, batch split over `data`: the same P(yes) as on one device."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from vlaw.models.reward.qwen3_vl import init_params, logical_param_specs, yes_probability

    config, ids, video, mask = _tiny_inputs()
    params = init_params(config, jax.random.PRNGKey(0))
    kw = dict(config=config, yes_token_id=279, no_token_id=278)
    single = yes_probability(params, ids, video, mask, **kw)

    mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(2, 4), ("data", "fsdp"))
    rules = (("embed", "fsdp"), ("mlp", None), ("vocab", None), ("heads", None))
    rules += (("kv_heads", None), ("head_dim", None), ("layers", None))
    shardings = nn.logical_to_mesh_sharding(logical_param_specs(config), mesh, rules)
    sharded_params = jax.device_put(params, shardings)
    assert sharded_params["language_model"]["embed_tokens"]["embedding"].sharding.spec == (
        PartitionSpec(None, "fsdp")
    )
    batch = NamedSharding(mesh, PartitionSpec("data"))
    out = yes_probability(
        sharded_params,
        jax.device_put(ids, batch),
        jax.device_put(video, batch),
        jax.device_put(mask, batch),
        **kw,
    )
    np.testing.assert_allclose(out, single, rtol=1e-5)
