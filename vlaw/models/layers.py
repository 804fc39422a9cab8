"""Blocks shared by the three models. Attention goes through `dot_product_attention` only.

On GPU the cuDNN fused kernel is used (measured on one H100: 594 vs 112 TFLOP/s for XLA's
default at B8 T4096 H16 D128 bf16, shared/research/device_measurements.md); on CPU and TPU the
XLA path. cuDNN needs fp16/bf16 inputs and head_dim <= 128 (a multiple of 8), so other cases
fall back to XLA rather than failing.
"""

import jax
import jax.numpy as jnp


def _cudnn_supported(query: jax.Array, bias: jax.Array | None) -> bool:
    if jax.default_backend() != "gpu":
        return False
    if query.dtype not in (jnp.bfloat16, jnp.float16):
        return False
    head_dim = query.shape[-1]
    return head_dim <= 128 and head_dim % 8 == 0 and bias is None


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    implementation: str | None = None,
) -> jax.Array:
    """Multi-head attention, the one wrapper every model uses.

    Shapes: query (B, T, N, D), key/value (B, S, K, D) with N a multiple of K (grouped-query
    attention repeats K heads), mask broadcastable to (B, N, T, S) with True = attend, bias
    likewise (added to the logits). Returns (B, T, N, D) in the query's dtype.

    `is_causal` and the per-example `*_seq_lengths` (B,) int32 express causal and padding masks
    natively, which cuDNN applies without materialising a (B, N, T, S) mask; prefer them to
    `mask` where they suffice.

    `implementation` forces "xla" or "cudnn"; None picks cuDNN where it is supported.
    """
    if implementation is None:
        implementation = "cudnn" if _cudnn_supported(query, bias) else "xla"
    return jax.nn.dot_product_attention(
        query,
        key,
        value,
        bias=bias,
        mask=mask,
        scale=scale,
        is_causal=is_causal,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        implementation=implementation,
    )


def remat_policy(name: str):
    """The `jax.checkpoint_policies` entry a config names (`train.remat_policy`).

    "none" disables rematerialisation (returns None: callers then skip `nn.remat`);
    any other name must be an attribute of `jax.checkpoint_policies`, e.g.
    "nothing_saveable" (recompute everything: least memory) or
    "dots_with_no_batch_dims_saveable" (keep matmul outputs: less recompute).
    """
    if name == "none":
        return None
    policy = getattr(jax.checkpoint_policies, name, None)
    if policy is None:
        raise ValueError(f"unknown remat policy {name!r}: not in jax.checkpoint_policies")
    return policy
