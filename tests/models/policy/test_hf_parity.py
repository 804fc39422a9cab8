"""Parity of our SigLIP and Gemma against transformers' implementations (float32, tiny, random).

Weights move through `vlaw.convert.hf_paligemma`, so these tests check the converter and the
model together: the proof that real PaliGemma weights will load and compute the same thing.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from vlaw.convert.hf_paligemma import (  # noqa: E402
    gemma_from_hf,
    paligemma_from_hf,
    siglip_from_hf,
)
from vlaw.models.policy.gemma import GemmaConfig, MultiExpertGemma  # noqa: E402
from vlaw.models.policy.siglip import SiglipConfig, SiglipEncoder  # noqa: E402


def _randomise(model: "torch.nn.Module", seed: int) -> None:
    # Random values everywhere (norm gains and biases included), so no weight hides behind an
    # init of 0 or 1.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def test_siglip_matches_transformers():
    cfg = transformers.SiglipVisionConfig(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        vision_use_head=False,
        attn_implementation="eager",
    )
    ref = transformers.SiglipVisionModel(cfg).eval()
    _randomise(ref, 0)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = ref(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2)).last_hidden_state

    ours = SiglipEncoder(
        SiglipConfig(width=48, depth=3, mlp_dim=96, num_heads=4, patch_size=8, image_size=32),
        remat_policy="none",
    )
    params = siglip_from_hf(ref.state_dict(), depth=3, num_heads=4)
    expected = jax.eval_shape(ours.init, jax.random.key(0), images)
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, nn.unbox(expected)["params"])
    got = ours.apply({"params": params}, images)
    np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=2e-5, rtol=1e-5)


def test_gemma_matches_transformers():
    cfg = transformers.GemmaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        attn_implementation="eager",
    )
    ref = transformers.GemmaModel(cfg).eval()
    _randomise(ref, 1)
    tokens = np.random.default_rng(1).integers(0, 97, (2, 11))
    with torch.no_grad():
        want = ref(input_ids=torch.from_numpy(tokens)).last_hidden_state

    gcfg = GemmaConfig(width=64, depth=3, mlp_dim=96, num_heads=4, num_kv_heads=1, head_dim=16)
    ours = MultiExpertGemma((gcfg,), vocab_size=97, remat_policy="none")
    t = tokens.shape[1]
    positions = jnp.broadcast_to(jnp.arange(t), tokens.shape)
    causal = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (2, t, t))

    def run(module, tokens):
        (out,), _ = module([module.embed(tokens)], positions, causal)
        return out

    params = gemma_from_hf(ref.state_dict(), depth=3, num_heads=4, num_kv_heads=1, head_dim=16)
    expected = jax.eval_shape(lambda: ours.init(jax.random.key(0), tokens, method=run))
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, nn.unbox(expected)["params"])
    got = ours.apply({"params": params}, tokens, method=run)
    scale = float(np.abs(want.numpy()).max())
    np.testing.assert_allclose(np.asarray(got) / scale, want.numpy() / scale, atol=1e-5)


def test_paligemma_prefix_matches_transformers():
    # Image tokens (SigLIP -> projector, not scaled by sqrt(width)) followed by text, one
    # bidirectional prefix block: what pi0.5's prefix pass computes with expert 0.
    vision = dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=64,
    )  # fmt: skip
    text = dict(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16,
    )  # fmt: skip
    cfg = transformers.PaliGemmaConfig(
        vision_config=vision, text_config=text, image_token_index=96, projection_dim=64
    )
    cfg._attn_implementation = "eager"
    ref = transformers.PaliGemmaForConditionalGeneration(cfg).eval()
    _randomise(ref, 2)
    rng = np.random.default_rng(2)
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    text_tokens = rng.integers(0, 96, (2, 7))
    input_ids = np.concatenate([np.full((2, 16), 96), text_tokens], axis=1)
    with torch.no_grad():
        want = ref.model(
            input_ids=torch.from_numpy(input_ids),
            pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2),
            token_type_ids=torch.zeros(input_ids.shape, dtype=torch.long),  # all prefix
        ).last_hidden_state.numpy()

    params = paligemma_from_hf(
        ref.state_dict(), siglip_depth=2, siglip_heads=4, gemma_depth=2, gemma_heads=4,
        gemma_kv_heads=1, head_dim=16,
    )  # fmt: skip
    siglip = SiglipEncoder(
        SiglipConfig(48, 2, 96, 4, patch_size=8, image_size=32, out_dim=64), remat_policy="none"
    )
    gcfg = GemmaConfig(width=64, depth=2, mlp_dim=96, num_heads=4, num_kv_heads=1, head_dim=16)
    gemma = MultiExpertGemma((gcfg,), vocab_size=97, remat_policy="none")

    def prefix(module, image_tokens, tokens):
        x = jnp.concatenate([image_tokens, module.embed(tokens)], axis=1)
        t = x.shape[1]
        (out,), _ = module(
            [x], jnp.broadcast_to(jnp.arange(t), x.shape[:2]), jnp.ones((2, t, t), bool)
        )
        return out

    image_tokens = siglip.apply({"params": params["img"]}, images)
    got = gemma.apply({"params": params["llm"]}, image_tokens, text_tokens, method=prefix)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(np.asarray(got) / scale, want / scale, atol=1e-5)
