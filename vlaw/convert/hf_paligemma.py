"""Move transformers' SigLIP / Gemma / PaliGemma weights into `vlaw.models.policy` trees.

Used by the parity tests (tiny random transformers models against ours) and to start pi0.5's
PaliGemma half from a Hugging Face PaliGemma checkpoint. Inputs are state dicts (name -> torch
tensor or array); nothing here imports torch, tensors are read through `.detach().numpy()`.

Layout facts: torch Linear stores weight (out, in), ours (in, out); fused heads split as
q_proj (N*D, W) -> (N, W, D); k_proj/v_proj (K*D, W) -> kv (2, K, W, D); o_proj (W, N*D) ->
(N, D, W); gate_proj/up_proj (F, W) -> gate_up (2, W, F) in (gelu branch, linear branch) order;
the patch Conv2d (W, 3, P, P) -> (P, P, 3, W). Per-layer weights are stacked on a leading axis
to match `nn.scan`.
"""

from collections.abc import Mapping

import numpy as np


def _np(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor; float() first since numpy has no bfloat16
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)


def _get(state: Mapping, key: str) -> np.ndarray:
    if key not in state:
        raise KeyError(f"state dict lacks {key!r}")
    return _np(state[key])


def _stack(state: Mapping, keys: list[str], fn) -> np.ndarray:
    return np.stack([fn(_get(state, k)) for k in keys])


def siglip_from_hf(
    state: Mapping, *, depth: int, num_heads: int, prefix: str = "", projector: str | None = None
) -> dict:
    """transformers SiglipVisionModel weights -> the `SiglipEncoder` param tree.

    prefix: where `embeddings.`/`encoder.` start ("" for SiglipVisionModel, "model.vision_tower."
    in PaliGemmaForConditionalGeneration; transformers 5 key names).
    projector: the state-dict name of a Linear to use as our `head` (PaliGemma's
    "model.multi_modal_projector.linear"); None for an encoder without a head.
    """
    p = prefix
    patch = _get(state, f"{p}embeddings.patch_embedding.weight")
    width = patch.shape[0]
    head_dim = width // num_heads
    layer = lambda i, name: f"{p}encoder.layers.{i}.{name}"
    layers = range(depth)

    def stack(name, fn=lambda a: a):
        return _stack(state, [layer(i, name) for i in layers], fn)

    heads_in = lambda w: w.T.reshape(width, num_heads, head_dim)  # (H*Dh, W) -> (W, H, Dh)
    blocks = {
        "attn_norm": {"scale": stack("layer_norm1.weight"), "bias": stack("layer_norm1.bias")},
        "mlp_norm": {"scale": stack("layer_norm2.weight"), "bias": stack("layer_norm2.bias")},
        "attn_out": {
            "kernel": stack(
                "self_attn.out_proj.weight", lambda w: w.T.reshape(num_heads, head_dim, -1)
            ),
            "bias": stack("self_attn.out_proj.bias"),
        },
        "mlp_fc1": {"kernel": stack("mlp.fc1.weight", np.transpose), "bias": stack("mlp.fc1.bias")},
        "mlp_fc2": {"kernel": stack("mlp.fc2.weight", np.transpose), "bias": stack("mlp.fc2.bias")},
    }
    for ours, theirs in (
        ("attn_query", "q_proj"),
        ("attn_key", "k_proj"),
        ("attn_value", "v_proj"),
    ):
        blocks[ours] = {
            "kernel": stack(f"self_attn.{theirs}.weight", heads_in),
            "bias": stack(f"self_attn.{theirs}.bias", lambda b: b.reshape(num_heads, head_dim)),
        }
    tree = {
        "patch_embed": {
            "kernel": patch.transpose(2, 3, 1, 0),
            "bias": _get(state, f"{p}embeddings.patch_embedding.bias"),
        },
        "pos_embed": _get(state, f"{p}embeddings.position_embedding.weight")[None],
        "blocks": blocks,
        "final_norm": {
            "scale": _get(state, f"{p}post_layernorm.weight"),
            "bias": _get(state, f"{p}post_layernorm.bias"),
        },
    }
    if projector is not None:
        tree["head"] = {
            "kernel": _get(state, f"{projector}.weight").T,
            "bias": _get(state, f"{projector}.bias"),
        }
    return tree


def gemma_from_hf(
    state: Mapping,
    *,
    depth: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    prefix: str = "",
    expert: int = 0,
) -> dict:
    """transformers GemmaModel weights -> expert `expert` of the `MultiExpertGemma` tree.

    prefix: where `embed_tokens.`/`layers.` start ("" for GemmaModel,
    "model.language_model." in PaliGemmaForConditionalGeneration). Expert 0 also gets the
    embedding table. Returns {"input_embedding"?, "layers": {...}, "final_norms_<expert>"}.
    """
    layer = lambda i, name: f"{prefix}layers.{i}.{name}"

    def stack(name, fn=lambda a: a):
        return _stack(state, [layer(i, name) for i in range(depth)], fn)

    def split_heads(n):  # (n*D, W) -> (n, W, D)
        return lambda w: w.reshape(n, head_dim, -1).transpose(0, 2, 1)

    k = stack("self_attn.k_proj.weight", split_heads(num_kv_heads))
    v = stack("self_attn.v_proj.weight", split_heads(num_kv_heads))
    gate = stack("mlp.gate_proj.weight", np.transpose)
    up = stack("mlp.up_proj.weight", np.transpose)
    i = expert
    layers = {
        f"attn_{i}": {
            "q": stack("self_attn.q_proj.weight", split_heads(num_heads)),
            "kv": np.stack([k, v], axis=1),
            "out": stack("self_attn.o_proj.weight", lambda w: w.T.reshape(num_heads, head_dim, -1)),
        },
        f"mlp_{i}": {
            "gate_up": np.stack([gate, up], axis=1),
            "down": stack("mlp.down_proj.weight", np.transpose),
        },
        f"attn_norm_{i}": {"scale": stack("input_layernorm.weight")},
        f"mlp_norm_{i}": {"scale": stack("post_attention_layernorm.weight")},
    }
    tree = {"layers": layers, f"final_norms_{i}": {"scale": _get(state, f"{prefix}norm.weight")}}
    if expert == 0:
        tree["input_embedding"] = _get(state, f"{prefix}embed_tokens.weight")
    return tree


def paligemma_from_hf(
    state: Mapping,
    *,
    siglip_depth: int,
    siglip_heads: int,
    gemma_depth: int,
    gemma_heads: int,
    gemma_kv_heads: int,
    head_dim: int,
) -> dict:
    """PaliGemmaForConditionalGeneration weights -> {"img": ..., "llm": expert 0} of `Pi05`.

    The action expert and the action/time projections are not in a PaliGemma checkpoint; merge
    this into a freshly initialised pi0.5 tree (as openpi's PaliGemma weight loader does).
    """
    img = siglip_from_hf(
        state,
        depth=siglip_depth,
        num_heads=siglip_heads,
        prefix="model.vision_tower.",
        projector="model.multi_modal_projector.linear",
    )
    llm = gemma_from_hf(
        state,
        depth=gemma_depth,
        num_heads=gemma_heads,
        num_kv_heads=gemma_kv_heads,
        head_dim=head_dim,
        prefix="model.language_model.",
    )
    return {"img": img, "llm": llm}
