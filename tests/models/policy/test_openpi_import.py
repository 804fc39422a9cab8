"""openpi checkpoint import on synthetic checkpoints written in openpi's exact layout.

The layout below is written from the research notes (shared/research/openpi.md §5.4), not
from our converter, so the two are independent: names, nesting and shapes of a pi0.5 params
tree with gemma_2b + gemma_300m (here at tiny widths), a leading scan axis on every layer
weight, nnx's trailing `value` on every leaf, and orbax's `{"params": ...}` item.
"""

import json

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vlaw.convert import openpi
from vlaw.models.policy.pi05 import Observation, Pi05, abstract_params, pi05_config


def openpi_layout(c) -> dict[str, tuple[int, ...]]:
    """{openpi key: shape} for a pi0.5 config, per openpi.md §5.4."""
    L, N, K, D = c.llm.depth, c.llm.num_heads, c.llm.num_kv_heads, c.llm.head_dim
    w0, f0, we, fe, a = c.llm.width, c.llm.mlp_dim, c.expert.width, c.expert.mlp_dim, c.action_dim
    s = c.siglip
    ls, ws, fs, hs, p = s.depth, s.width, s.mlp_dim, s.num_heads, s.patch_size
    layers, img = "PaliGemma/llm/layers", "PaliGemma/img"
    block = f"{img}/Transformer/encoderblock"
    shapes = {
        "action_in_proj/kernel": (a, we), "action_in_proj/bias": (we,),
        "action_out_proj/kernel": (we, a), "action_out_proj/bias": (a,),
        "time_mlp_in/kernel": (we, we), "time_mlp_in/bias": (we,),
        "time_mlp_out/kernel": (we, we), "time_mlp_out/bias": (we,),
        "PaliGemma/llm/embedder/input_embedding": (c.vocab_size, w0),
        f"{layers}/attn/q_einsum/w": (L, N, w0, D),
        f"{layers}/attn/kv_einsum/w": (L, 2, K, w0, D),
        f"{layers}/attn/attn_vec_einsum/w": (L, N, D, w0),
        f"{layers}/attn/q_einsum_1/w": (L, N, we, D),
        f"{layers}/attn/kv_einsum_1/w": (L, 2, K, we, D),
        f"{layers}/attn/attn_vec_einsum_1/w": (L, N, D, we),
        f"{layers}/mlp/gating_einsum": (L, 2, w0, f0), f"{layers}/mlp/linear": (L, f0, w0),
        f"{layers}/mlp_1/gating_einsum": (L, 2, we, fe), f"{layers}/mlp_1/linear": (L, fe, we),
        f"{layers}/pre_attention_norm/scale": (L, w0), f"{layers}/pre_ffw_norm/scale": (L, w0),
        f"{layers}/pre_attention_norm_1/Dense_0/kernel": (L, we, 3 * we),
        f"{layers}/pre_attention_norm_1/Dense_0/bias": (L, 3 * we),
        f"{layers}/pre_ffw_norm_1/Dense_0/kernel": (L, we, 3 * we),
        f"{layers}/pre_ffw_norm_1/Dense_0/bias": (L, 3 * we),
        "PaliGemma/llm/final_norm/scale": (w0,),
        "PaliGemma/llm/final_norm_1/Dense_0/kernel": (we, 3 * we),
        "PaliGemma/llm/final_norm_1/Dense_0/bias": (3 * we,),
        f"{img}/embedding/kernel": (p, p, 3, ws), f"{img}/embedding/bias": (ws,),
        f"{img}/pos_embedding": (1, s.num_patches, ws),
        f"{block}/MlpBlock_0/Dense_0/kernel": (ls, ws, fs),
        f"{block}/MlpBlock_0/Dense_0/bias": (ls, fs),
        f"{block}/MlpBlock_0/Dense_1/kernel": (ls, fs, ws),
        f"{block}/MlpBlock_0/Dense_1/bias": (ls, ws),
        f"{block}/MultiHeadDotProductAttention_0/out/kernel": (ls, hs, ws // hs, ws),
        f"{block}/MultiHeadDotProductAttention_0/out/bias": (ls, ws),
        f"{img}/Transformer/encoder_norm/scale": (ws,),
        f"{img}/Transformer/encoder_norm/bias": (ws,),
        f"{img}/head/kernel": (ws, w0), f"{img}/head/bias": (w0,),
    }  # fmt: skip
    for ln in ("LayerNorm_0", "LayerNorm_1"):
        shapes[f"{block}/{ln}/scale"] = shapes[f"{block}/{ln}/bias"] = (ls, ws)
    for proj in ("query", "key", "value"):
        shapes[f"{block}/MultiHeadDotProductAttention_0/{proj}/kernel"] = (ls, ws, hs, ws // hs)
        shapes[f"{block}/MultiHeadDotProductAttention_0/{proj}/bias"] = (ls, hs, ws // hs)
    return shapes


def _nest(flat: dict, leaf_suffix: str = "") -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, last = (path + leaf_suffix).split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def _obs(c, batch=2):
    rng = np.random.default_rng(0)
    size = c.image_size
    return Observation(
        images=rng.uniform(-1, 1, (batch, c.num_images, size, size, 3)).astype(np.float32),
        image_masks=np.array([[True, True, False]] * batch),
        tokens=rng.integers(1, c.vocab_size, (batch, c.max_token_len)).astype(np.int32),
        token_mask=np.arange(c.max_token_len)[None].repeat(batch, 0) < 9,
    )


@pytest.fixture(scope="module")
def tiny():
    c = pi05_config("tiny")
    model = Pi05(c)
    obs = _obs(c)
    x = np.zeros((2, c.action_horizon, c.action_dim), np.float32)
    t = np.full((2,), 0.5, np.float32)
    expected = jax.eval_shape(lambda: model.init(jax.random.key(0), obs, x, t))
    return c, model, expected, (obs, x, t)


def _random_openpi_tree(c, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in openpi_layout(c).items()}


def test_layout_covers_the_model_at_paper_size():
    # The converter's name map against the model's own tree at the published sizes, shapes from
    # the notes (no arrays are built: eval_shape only).
    c = pi05_config("paper")
    shapes = abstract_params(c)
    ours = {k: v.shape for k, v in openpi.flatten(nn.unbox(shapes)["params"]).items()}
    to_openpi = {dst: src for src, dst in openpi.key_mapping()}
    assert {to_openpi[k]: s for k, s in ours.items()} == openpi_layout(c)
    assert openpi_layout(c)["PaliGemma/llm/layers/attn/q_einsum/w"] == (18, 8, 2048, 256)
    total = sum(np.prod(s) for s in ours.values())
    assert 3.3e9 < total < 3.5e9, total  # 2.51B Gemma + 0.43B expert + 0.41B SigLIP


def test_import_orbax_checkpoint_and_norm_stats(tiny, tmp_path):
    c, model, expected, (obs, x, t) = tiny
    flat = _random_openpi_tree(c)
    # A training checkpoint as openpi writes it: nnx's `value` leaf, under the `params` item.
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(str(tmp_path / "ckpt" / "params"), {"params": _nest(flat, "/value")})
    stats = {
        "norm_stats": {
            "state": {"mean": [0.1] * 8, "std": [1.0] * 8, "q01": [-1.0] * 8, "q99": [2.0] * 8},
            "actions": {"mean": [0.0] * 8, "std": [0.5] * 8, "q01": None, "q99": None},
        }
    }
    (tmp_path / "ckpt" / "assets" / "droid").mkdir(parents=True)
    (tmp_path / "ckpt" / "assets" / "droid" / "norm_stats.json").write_text(json.dumps(stats))

    params, norm_stats = openpi.load_openpi_checkpoint(
        str(tmp_path / "ckpt"), expected, asset_id="droid"
    )
    p = params["params"]
    np.testing.assert_array_equal(
        p["llm"]["layers"]["attn_1"]["q"], flat["PaliGemma/llm/layers/attn/q_einsum_1/w"]
    )
    np.testing.assert_array_equal(
        p["llm"]["final_norms_1"]["modulation"]["kernel"],
        flat["PaliGemma/llm/final_norm_1/Dense_0/kernel"],
    )
    np.testing.assert_array_equal(
        p["img"]["blocks"]["attn_out"]["kernel"],
        flat["PaliGemma/img/Transformer/encoderblock/MultiHeadDotProductAttention_0/out/kernel"],
    )
    # Every array moved unchanged: converting back gives the checkpoint exactly.
    back = openpi.flatten(openpi.vlaw_to_openpi(params))
    assert back.keys() == flat.keys()
    for k in flat:
        np.testing.assert_array_equal(back[k], flat[k], err_msg=k)
    # The imported tree drives the model.
    v = model.apply(params, obs, x, t)
    assert v.shape == x.shape and bool(np.isfinite(v).all())

    np.testing.assert_allclose(norm_stats["state"].q99, [2.0] * 8)
    np.testing.assert_allclose(norm_stats["actions"].std, [0.5] * 8)
    assert norm_stats["actions"].q01 is None


def test_wrong_shape_is_refused_with_the_key(tiny):
    c, _, expected, _ = tiny
    flat = _random_openpi_tree(c)
    key = "PaliGemma/llm/layers/attn/q_einsum_1/w"
    flat[key] = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ValueError, match=key):
        openpi.openpi_to_vlaw(_nest(flat), c)  # the config alone fixes the expected shapes
    # An action_dim other than the checkpoint's (openpi's is 32) is a shape mismatch too.
    flat = _random_openpi_tree(c)
    flat["action_in_proj/kernel"] = np.zeros((8, c.expert.width), np.float32)
    with pytest.raises(ValueError, match="action_in_proj/kernel"):
        openpi.openpi_to_vlaw(_nest(flat), expected)


def test_missing_and_leftover_keys_are_refused_with_the_key(tiny):
    c, _, expected, _ = tiny
    flat = _random_openpi_tree(c)
    del flat["time_mlp_in/bias"]
    with pytest.raises(KeyError, match="time_mlp_in/bias"):
        openpi.openpi_to_vlaw(_nest(flat), expected)

    flat = _random_openpi_tree(c)
    flat["state_proj/kernel"] = np.zeros((32, c.expert.width), np.float32)  # a pi0 checkpoint
    with pytest.raises(ValueError, match="state_proj/kernel"):
        openpi.openpi_to_vlaw(_nest(flat), expected)


def test_bad_norm_stats_are_refused(tmp_path):
    path = tmp_path / "norm_stats.json"
    path.write_text(json.dumps({"norm_stats": {"state": {"mean": [0.0, 1.0]}}}))
    with pytest.raises(KeyError, match="std"):
        openpi.load_norm_stats(str(path))
    path.write_text(json.dumps({"norm_stats": {"state": {"mean": [0.0], "std": [1.0, 2.0]}}}))
    with pytest.raises(ValueError, match="differ in shape"):
        openpi.load_norm_stats(str(path))
