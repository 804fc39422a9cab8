"""Import openpi's pi0.5 checkpoints (orbax params + norm_stats.json) into `vlaw.models.policy`.

openpi stores `<ckpt>/params/` as an orbax PyTree whose top-level key `params` holds a pure dict
(every leaf path may end in `value`, from nnx.Variable) rooted at `PaliGemma/llm/...`,
`PaliGemma/img/...`, `action_in_proj`, `action_out_proj`, `time_mlp_in`, `time_mlp_out`;
norm stats sit at `<ckpt>/assets/<asset_id>/norm_stats.json` (shared/research/openpi.md §5).
The layer stacks keep their leading scan axis in both layouts, so the mapping is a renaming:
every array lands unchanged, only its path differs. A missing key or a shape that disagrees with
the target config is refused with the openpi key named; so are leftover keys (a pi0 checkpoint's
`state_proj`, LoRA weights), since silently ignoring them would load a different model.
"""

import json
import os
import re

import flax.linen as nn
import numpy as np

from vlaw.data.norm_stats import NormStats
from vlaw.models.policy.pi05 import Pi05Config, abstract_params

# (openpi path, vlaw path) for the top level and SigLIP; the per-expert Gemma keys follow below.
_FIXED = [
    ("action_in_proj/kernel", "action_in_proj/kernel"),
    ("action_in_proj/bias", "action_in_proj/bias"),
    ("action_out_proj/kernel", "action_out_proj/kernel"),
    ("action_out_proj/bias", "action_out_proj/bias"),
    ("time_mlp_in/kernel", "time_mlp_in/kernel"),
    ("time_mlp_in/bias", "time_mlp_in/bias"),
    ("time_mlp_out/kernel", "time_mlp_out/kernel"),
    ("time_mlp_out/bias", "time_mlp_out/bias"),
    ("PaliGemma/llm/embedder/input_embedding", "llm/input_embedding"),
    ("PaliGemma/img/embedding/kernel", "img/patch_embed/kernel"),
    ("PaliGemma/img/embedding/bias", "img/patch_embed/bias"),
    ("PaliGemma/img/pos_embedding", "img/pos_embed"),
    ("PaliGemma/img/Transformer/encoder_norm/scale", "img/final_norm/scale"),
    ("PaliGemma/img/Transformer/encoder_norm/bias", "img/final_norm/bias"),
    ("PaliGemma/img/head/kernel", "img/head/kernel"),
    ("PaliGemma/img/head/bias", "img/head/bias"),
]
_SIGLIP_BLOCK = [
    ("LayerNorm_0", "attn_norm"),
    ("LayerNorm_1", "mlp_norm"),
    ("MultiHeadDotProductAttention_0/query", "attn_query"),
    ("MultiHeadDotProductAttention_0/key", "attn_key"),
    ("MultiHeadDotProductAttention_0/value", "attn_value"),
    ("MultiHeadDotProductAttention_0/out", "attn_out"),
    ("MlpBlock_0/Dense_0", "mlp_fc1"),
    ("MlpBlock_0/Dense_1", "mlp_fc2"),
]


def _expert_keys(i: int, adaptive: bool) -> list[tuple[str, str]]:
    """openpi names expert 0 without a suffix and expert 1 with `_1` (openpi.md §1.3)."""
    s = "" if i == 0 else f"_{i}"
    llm, layers = "PaliGemma/llm", "PaliGemma/llm/layers"
    pairs = [
        (f"{layers}/attn/q_einsum{s}/w", f"llm/layers/attn_{i}/q"),
        (f"{layers}/attn/kv_einsum{s}/w", f"llm/layers/attn_{i}/kv"),
        (f"{layers}/attn/attn_vec_einsum{s}/w", f"llm/layers/attn_{i}/out"),
        (f"{layers}/mlp{s}/gating_einsum", f"llm/layers/mlp_{i}/gate_up"),
        (f"{layers}/mlp{s}/linear", f"llm/layers/mlp_{i}/down"),
    ]
    norms = [
        (f"{layers}/pre_attention_norm{s}", f"llm/layers/attn_norm_{i}"),
        (f"{layers}/pre_ffw_norm{s}", f"llm/layers/mlp_norm_{i}"),
        (f"{llm}/final_norm{s}", f"llm/final_norms_{i}"),
    ]
    for src, dst in norms:
        if adaptive:  # adaRMS: a Dense on the time conditioning, no `scale` parameter
            pairs += [(f"{src}/Dense_0/kernel", f"{dst}/modulation/kernel")]
            pairs += [(f"{src}/Dense_0/bias", f"{dst}/modulation/bias")]
        else:
            pairs += [(f"{src}/scale", f"{dst}/scale")]
    return pairs


def key_mapping() -> list[tuple[str, str]]:
    """Every (openpi key, vlaw key) pair of a pi0.5 model (expert 1 uses adaptive norms)."""
    pairs = list(_FIXED)
    for src, dst in _SIGLIP_BLOCK:
        for leaf in ("kernel", "bias") if "LayerNorm" not in src else ("scale", "bias"):
            pairs.append(
                (f"PaliGemma/img/Transformer/encoderblock/{src}/{leaf}", f"img/blocks/{dst}/{leaf}")
            )
    return pairs + _expert_keys(0, adaptive=False) + _expert_keys(1, adaptive=True)


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """Nested dict -> {"a/b/c": leaf}."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def unflatten(flat: dict[str, object]) -> dict:
    """{"a/b/c": leaf} -> nested dict."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def strip_value_suffix(flat: dict[str, object]) -> dict[str, object]:
    """Drop the trailing `/value` nnx adds to every leaf (training checkpoints), if all have it."""
    if flat and all(k.endswith("/value") for k in flat):
        return {k[: -len("/value")]: v for k, v in flat.items()}
    return flat


def openpi_to_vlaw(openpi_params: dict, expected, *, dtype=np.float32) -> dict:
    """openpi's pure params dict -> vlaw's `Pi05` params {"params": ...}.

    expected: a `Pi05Config`, or vlaw's param tree of the target config (arrays or
    ShapeDtypeStructs, e.g. `pi05.abstract_params(config)`, boxed or not; an outer "params" key
    is optional); it fixes the shapes that every openpi array must have.
    Raises KeyError naming a missing openpi key and ValueError naming a key whose shape differs
    or keys that the model has no place for.
    """
    if isinstance(expected, Pi05Config):
        expected = abstract_params(expected)
    want = flatten(_unwrap(expected))
    got = strip_value_suffix(flatten(_unwrap(openpi_params)))
    mapping = dict((dst, src) for src, dst in key_mapping())
    unknown_targets = sorted(set(want) - set(mapping))
    if unknown_targets:  # guards the mapping table against model renames
        raise ValueError(f"vlaw parameters without an openpi source: {unknown_targets}")
    out = {}
    for dst in sorted(want):
        src = mapping[dst]
        if src not in got:
            raise KeyError(f"openpi checkpoint lacks {src!r} (needed for vlaw {dst!r})")
        value = np.asarray(got[src])
        shape = tuple(_shape(want[dst]))
        if value.shape != shape:
            raise ValueError(
                f"openpi {src!r} has shape {value.shape}, the model config needs {shape} "
                f"(vlaw {dst!r})"
            )
        out[dst] = value.astype(dtype)
    used = {mapping[d] for d in want}
    leftover = sorted(set(got) - used)
    if leftover:
        raise ValueError(
            f"openpi keys with no place in this pi0.5 model (pi0 or LoRA checkpoint?): {leftover}"
        )
    return {"params": unflatten(out)}


def vlaw_to_openpi(params: dict) -> dict:
    """vlaw `Pi05` params -> openpi's pure dict layout (the inverse of `openpi_to_vlaw`)."""
    flat = flatten(_unwrap(params))
    mapping = dict((dst, src) for src, dst in key_mapping())
    missing = sorted(set(flat) - set(mapping))
    if missing:
        raise ValueError(f"vlaw parameters without an openpi name: {missing}")
    return unflatten({mapping[k]: np.asarray(v) for k, v in flat.items()})


def restore_openpi_params(params_dir: str) -> dict:
    """Read `<ckpt>/params` (orbax PyTree, top key `params`) into a pure dict of numpy arrays."""
    import jax
    import orbax.checkpoint as ocp

    params_dir = os.path.abspath(params_dir)
    if not os.path.isdir(params_dir):
        raise FileNotFoundError(f"no openpi params directory at {params_dir}")
    with ocp.PyTreeCheckpointer() as ckptr:
        metadata = ckptr.metadata(params_dir)
        tree = getattr(metadata, "item_metadata", metadata)
        tree = getattr(tree, "tree", tree)
        # numpy restore: the caller decides placement/sharding, nothing lands on a device here.
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        restored = ckptr.restore(params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    if "params" not in restored:
        raise KeyError(f"{params_dir} has no top-level 'params' item (keys: {sorted(restored)})")
    return unflatten(strip_value_suffix(flatten(restored["params"])))


def save_openpi_params(params_dir: str, openpi_params: dict) -> None:
    """Write a pure openpi params dict the way openpi does: orbax PyTree under key `params`."""
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(params_dir), {"params": openpi_params})


def load_norm_stats(path: str) -> dict[str, NormStats]:
    """openpi's norm_stats.json -> {"state": NormStats, "actions": NormStats} (vlaw.data's type).

    Checked before use, with the file and entry named: `mean` and `std` are required (openpi's
    NormStats), the quantiles optional, and all vectors of an entry share one length (the
    unpadded dim, 8 for DROID).
    """
    with open(path) as f:
        raw = json.load(f)
    if "norm_stats" not in raw:
        raise KeyError(f"{path}: no top-level 'norm_stats' key (keys: {sorted(raw)})")
    stats = {}
    for name, entry in raw["norm_stats"].items():
        for required in ("mean", "std"):
            if entry.get(required) is None:
                raise KeyError(f"{path}: norm_stats[{name!r}] lacks {required!r}")
        shapes = {k: np.shape(v) for k, v in entry.items() if v is not None}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"{path}: norm_stats[{name!r}] vectors differ in shape: {shapes}")
        stats[name] = NormStats.from_json(entry)
    return stats


def load_openpi_checkpoint(
    ckpt_dir: str, expected, *, asset_id: str | None = None
) -> tuple[dict, dict | None]:
    """`<ckpt>/params` -> vlaw params; plus `<ckpt>/assets/<asset_id>/norm_stats.json` if given.

    expected: the target `Pi05Config` or its param tree (or eval_shape), see `openpi_to_vlaw`.
    """
    params = openpi_to_vlaw(restore_openpi_params(os.path.join(ckpt_dir, "params")), expected)
    norm_stats = None
    if asset_id is not None:
        if not re.fullmatch(r"[\w.\-]+", asset_id):
            raise ValueError(f"asset_id {asset_id!r} is not a plain directory name")
        norm_stats = load_norm_stats(os.path.join(ckpt_dir, "assets", asset_id, "norm_stats.json"))
    return params, norm_stats


def _unwrap(tree: dict) -> dict:
    """Drop an outer {"params": ...} and flax's logical-partitioning boxes."""
    tree = nn.unbox(tree)
    if set(tree) == {"params"}:
        tree = tree["params"]
    return dict(tree)


def _shape(leaf) -> tuple[int, ...]:
    return tuple(getattr(leaf, "shape", np.shape(leaf)))
