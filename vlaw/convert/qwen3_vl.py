"""Import a Hugging Face Qwen3-VL checkpoint (`Qwen3VLForConditionalGeneration`) into our params.

Works from a checkpoint directory (`config.json` + `*.safetensors`, read with safetensors'
numpy backend, bfloat16 included, so torch is not needed) or from any in-memory state dict
whose values are numpy arrays, jax arrays or torch tensors.

Key layout (transformers `modeling_qwen3_vl.py`; reward_dsrl_metrics.md §1.9):
`model.visual.{patch_embed.proj, pos_embed, blocks.{i}.{norm1,norm2,attn.qkv,attn.proj,
mlp.linear_fc1,mlp.linear_fc2}, merger.*, deepstack_merger_list.{k}.*}`,
`model.language_model.{embed_tokens, layers.{i}.{self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm,
mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm}, norm}`, `lm_head` (tied to
`embed_tokens` at 4B and usually absent from the files). PyTorch Linear weights are (out, in)
and are transposed; the Conv3d patch embedding (D, C, t, p, p) becomes a (C*t*p*p, D) matmul.
Every tensor is checked: a missing key raises `KeyError` and a wrong shape `ValueError`, both
naming the checkpoint tensor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlaw.models.reward.qwen3_vl import Qwen3VLConfig
from vlaw.models.reward.text import TextConfig
from vlaw.models.reward.vision import VisionConfig

Array = np.ndarray


def config_from_hf(hf: Mapping[str, Any], **overrides) -> Qwen3VLConfig:
    """Our config from a checkpoint's `config.json` dict (transformers 4.57 or 5.x spelling)."""
    v, t = hf["vision_config"], hf["text_config"]
    rope = dict(t.get("rope_parameters") or t.get("rope_scaling") or {})
    rope_theta = rope.get("rope_theta", t.get("rope_theta", 5_000_000.0))
    if not rope.get("mrope_interleaved", True):
        raise ValueError("only interleaved M-RoPE (Qwen3-VL) is supported")
    vision = VisionConfig(
        depth=v["depth"],
        hidden_size=v["hidden_size"],
        num_heads=v["num_heads"],
        intermediate_size=v["intermediate_size"],
        out_hidden_size=v["out_hidden_size"],
        deepstack_layers=tuple(v["deepstack_visual_indexes"]),
        patch_size=v["patch_size"],
        temporal_patch_size=v["temporal_patch_size"],
        spatial_merge_size=v["spatial_merge_size"],
        num_position_embeddings=v["num_position_embeddings"],
        in_channels=v.get("in_channels", 3),
        rope_theta=(v.get("rope_parameters") or {}).get("rope_theta", 10_000.0),
    )
    text = TextConfig(
        vocab_size=t["vocab_size"],
        hidden_size=t["hidden_size"],
        num_layers=t["num_hidden_layers"],
        num_heads=t["num_attention_heads"],
        num_kv_heads=t.get("num_key_value_heads") or t["num_attention_heads"],
        head_dim=t.get("head_dim") or t["hidden_size"] // t["num_attention_heads"],
        intermediate_size=t["intermediate_size"],
        rope_theta=float(rope_theta),
        mrope_section=tuple(rope.get("mrope_section", (24, 20, 20))),
        rms_norm_eps=t.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=bool(
            hf.get("tie_word_embeddings", t.get("tie_word_embeddings", False))
        ),
    )
    fields = dict(
        vision=vision,
        text=text,
        vision_start_token_id=hf.get("vision_start_token_id", 151_652),
        vision_end_token_id=hf.get("vision_end_token_id", 151_653),
        image_token_id=hf.get("image_token_id", 151_655),
        video_token_id=hf.get("video_token_id", 151_656),
    )
    fields.update(overrides)
    return Qwen3VLConfig(**fields)


def _to_numpy(value) -> Array:
    """numpy view of a numpy/jax array or a torch tensor (torch is duck-typed, not imported)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if "bfloat16" in str(value.dtype):
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


# One entry per parameter leaf: (our path, checkpoint keys, the checkpoint shape each key must
# have, the map from a checkpoint tensor to our layout, whether the keys are the layers of an
# `nn.scan` stack, stacked along a new leading axis).
_Entry = tuple[tuple[str, ...], list[str], tuple[int, ...], Callable[[Array], Array], bool]


def _linear(in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """A PyTorch (out, in) weight -> our kernel (*in_shape, *out_shape)."""
    hf_shape = (math.prod(out_shape), math.prod(in_shape))
    return hf_shape, lambda w: w.T.reshape(*in_shape, *out_shape)


def _reshape(shape: tuple[int, ...], hf_shape: tuple[int, ...] | None = None):
    hf_shape = hf_shape or (math.prod(shape),)
    return hf_shape, lambda w: w.reshape(shape)


def _entries(config: Qwen3VLConfig) -> list[_Entry]:
    v, t = config.vision, config.text
    out: list[_Entry] = []

    def add(path, keys, spec, stacked=False):
        hf_shape, fn = spec
        out.append((tuple(path.split("/")), keys, hf_shape, fn, stacked))

    # ----- vision -----
    d, vh, vhd = v.hidden_size, v.num_heads, v.head_dim
    add(
        "visual/patch_embed/kernel",
        ["model.visual.patch_embed.proj.weight"],
        (
            (d, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size),
            lambda w: w.reshape(d, -1).T,
        ),
    )
    add("visual/patch_embed/bias", ["model.visual.patch_embed.proj.bias"], _reshape((d,)))
    add(
        "visual/pos_embed",
        ["model.visual.pos_embed.weight"],
        _reshape((v.num_position_embeddings, d), (v.num_position_embeddings, d)),
    )
    block_specs = [
        ("norm1/scale", "norm1.weight", _reshape((d,))),
        ("norm1/bias", "norm1.bias", _reshape((d,))),
        ("norm2/scale", "norm2.weight", _reshape((d,))),
        ("norm2/bias", "norm2.bias", _reshape((d,))),
        ("qkv/kernel", "attn.qkv.weight", _linear((d,), (3, vh, vhd))),
        ("qkv/bias", "attn.qkv.bias", _reshape((3, vh, vhd))),
        ("proj/kernel", "attn.proj.weight", _linear((vh, vhd), (d,))),
        ("proj/bias", "attn.proj.bias", _reshape((d,))),
        ("linear_fc1/kernel", "mlp.linear_fc1.weight", _linear((d,), (v.intermediate_size,))),
        ("linear_fc1/bias", "mlp.linear_fc1.bias", _reshape((v.intermediate_size,))),
        ("linear_fc2/kernel", "mlp.linear_fc2.weight", _linear((v.intermediate_size,), (d,))),
        ("linear_fc2/bias", "mlp.linear_fc2.bias", _reshape((d,))),
    ]
    for s, (first, length) in enumerate(v.stages):
        for ours, theirs, spec in block_specs:
            keys = [f"model.visual.blocks.{i}.{theirs}" for i in range(first, first + length)]
            add(f"visual/stage_{s}/block/{ours}", keys, spec, stacked=True)
    merged = d * v.spatial_merge_size**2
    mergers = [("merger", "model.visual.merger", d)] + [
        (f"deepstack_merger_{k}", f"model.visual.deepstack_merger_list.{k}", merged)
        for k in range(len(v.deepstack_layers))
    ]
    for ours, theirs, norm_dim in mergers:
        add(f"visual/{ours}/norm/scale", [f"{theirs}.norm.weight"], _reshape((norm_dim,)))
        add(f"visual/{ours}/norm/bias", [f"{theirs}.norm.bias"], _reshape((norm_dim,)))
        add(
            f"visual/{ours}/linear_fc1/kernel",
            [f"{theirs}.linear_fc1.weight"],
            _linear((merged,), (merged,)),
        )
        add(f"visual/{ours}/linear_fc1/bias", [f"{theirs}.linear_fc1.bias"], _reshape((merged,)))
        add(
            f"visual/{ours}/linear_fc2/kernel",
            [f"{theirs}.linear_fc2.weight"],
            _linear((merged,), (v.out_hidden_size,)),
        )
        add(
            f"visual/{ours}/linear_fc2/bias",
            [f"{theirs}.linear_fc2.bias"],
            _reshape((v.out_hidden_size,)),
        )

    # ----- language model -----
    h, hd = t.hidden_size, t.head_dim
    lm = "model.language_model"
    add(
        "language_model/embed_tokens/embedding",
        [f"{lm}.embed_tokens.weight"],
        _reshape((t.vocab_size, h), (t.vocab_size, h)),
    )
    layer_specs = [
        ("q_proj/kernel", "self_attn.q_proj.weight", _linear((h,), (t.num_heads, hd))),
        ("k_proj/kernel", "self_attn.k_proj.weight", _linear((h,), (t.num_kv_heads, hd))),
        ("v_proj/kernel", "self_attn.v_proj.weight", _linear((h,), (t.num_kv_heads, hd))),
        ("o_proj/kernel", "self_attn.o_proj.weight", _linear((t.num_heads, hd), (h,))),
        ("q_norm/scale", "self_attn.q_norm.weight", _reshape((hd,))),
        ("k_norm/scale", "self_attn.k_norm.weight", _reshape((hd,))),
        ("gate_proj/kernel", "mlp.gate_proj.weight", _linear((h,), (t.intermediate_size,))),
        ("up_proj/kernel", "mlp.up_proj.weight", _linear((h,), (t.intermediate_size,))),
        ("down_proj/kernel", "mlp.down_proj.weight", _linear((t.intermediate_size,), (h,))),
        ("input_layernorm/scale", "input_layernorm.weight", _reshape((h,))),
        ("post_attention_layernorm/scale", "post_attention_layernorm.weight", _reshape((h,))),
    ]
    for ours, theirs, spec in layer_specs:
        keys = [f"{lm}.layers.{i}.{theirs}" for i in range(t.num_layers)]
        add(f"language_model/layers/layer/{ours}", keys, spec, stacked=True)
    add("language_model/norm/scale", [f"{lm}.norm.weight"], _reshape((h,)))
    if not t.tie_word_embeddings:
        add("language_model/lm_head/kernel", ["lm_head.weight"], _linear((h,), (t.vocab_size,)))
    return out


def params_from_state_dict(
    state_dict: Mapping[str, Any],
    config: Qwen3VLConfig,
    *,
    dtype: Any = np.float32,
    strict: bool = True,
) -> dict:
    """Our parameter tree from a Qwen3-VL state dict, every tensor checked.

    `strict` also refuses checkpoint tensors this model would not use (a sign of a config that
    does not match the checkpoint); a tied `lm_head.weight` is always allowed.
    Raises KeyError (missing tensor) or ValueError (wrong shape, unused tensors), naming them.
    """
    params: dict = {}
    used = set()
    for path, keys, hf_shape, fn, stacked in _entries(config):
        arrays = []
        for key in keys:
            if key not in state_dict:
                raise KeyError(f"Qwen3-VL checkpoint is missing tensor {key!r}")
            value = _to_numpy(state_dict[key])
            if tuple(value.shape) != tuple(hf_shape):
                raise ValueError(
                    f"Qwen3-VL checkpoint tensor {key!r} has shape {tuple(value.shape)}, "
                    f"expected {tuple(hf_shape)} for this config"
                )
            arrays.append(np.asarray(fn(value), dtype=dtype))
            used.add(key)
        leaf = np.stack(arrays) if stacked else arrays[0]
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = leaf
    if strict:
        unused = sorted(k for k in state_dict if k not in used and k != "lm_head.weight")
        if unused:
            raise ValueError(f"Qwen3-VL checkpoint tensors not used by this config: {unused[:10]}")
    return params


def load_safetensors(directory: str | Path) -> dict[str, Array]:
    """All tensors of a checkpoint directory's `*.safetensors` files, as numpy arrays."""
    from safetensors import safe_open

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {directory}")
    tensors: dict[str, Array] = {}
    for file in files:
        with safe_open(str(file), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                tensors[key] = f.get_tensor(key)
    return tensors


def load_checkpoint(directory: str | Path, *, dtype: Any = np.float32, **config_overrides):
    """(config, params) from a Hugging Face Qwen3-VL directory (config.json + safetensors)."""
    directory = Path(directory)
    hf_config = json.loads((directory / "config.json").read_text())
    config = config_from_hf(hf_config, **config_overrides)
    return config, params_from_state_dict(load_safetensors(directory), config, dtype=dtype)
