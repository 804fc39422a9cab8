"""Gemma as a multi-expert transformer with one shared attention (pi0.5's VLM + action expert).

Each token group ("expert") has its own weights (norms, Q/K/V/out projections, GeGLU MLP) but
all groups attend jointly: their queries, keys and values are concatenated along the sequence
before one attention call, so expert 1 (the action expert) reads expert 0's (PaliGemma's) keys
through the same softmax. Experts must share head count, KV-head count and head_dim; widths and
MLP sizes may differ. Expert 0 owns the token embedder.

Gemma facts used here (shared/research/openpi.md §1.3): RMSNorm with variance in float32,
eps 1e-6 and a (1 + scale) gain; GeGLU with tanh-approximated gelu; RoPE with base 10 000 on the
two halves of head_dim, computed in float32; queries scaled by head_dim^-1/2; token embeddings
multiplied by sqrt(width). The pi0.5 expert replaces every norm gain by adaptive RMSNorm: a
zero-initialised Dense on the time conditioning gives (scale, shift, gate) and the residual
branch is multiplied by the gate (adaLN-Zero: the expert starts as identity in every block).

Parameter tree (L = depth, leading axis from `nn.scan`; i = expert index):
  input_embedding (V, W0)
  layers/attn_norm_i/{scale (L, Wi) | modulation/{kernel (L, Wi, 3Wi), bias (L, 3Wi)}}
  layers/attn_i/{q (L, N, Wi, D), kv (L, 2, K, Wi, D), out (L, N, D, Wi)}
  layers/mlp_norm_i/...   layers/mlp_i/{gate_up (L, 2, Wi, Fi), down (L, Fi, Wi)}
  final_norms_i/...
"""

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlaw.models import layers as shared_layers
from vlaw.models.layers import dot_product_attention

Array = jax.Array
KVCache = tuple[Array, Array]


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
    """One expert of the multi-expert transformer."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    adaptive_norm: bool = False  # adaRMS time conditioning (pi0.5's action expert)


# Published sizes (openpi.md §1.2); "gemma_300m" is the pi0/pi0.5 action expert.
GEMMA_2B = GemmaConfig(
    width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256
)
GEMMA_300M = GemmaConfig(
    width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256
)
PALIGEMMA_VOCAB_SIZE = 257_152


def _param(module: nn.Module, name: str, init, shape, axes, dtype):
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def apply_rope(x: Array, positions: Array, max_wavelength: float = 10_000.0) -> Array:
    """Rotary embedding on (B, T, N, D) at integer positions (B, T), rotating the two halves."""
    half = x.shape[-1] // 2
    freq_exponents = 2.0 * jnp.arange(half, dtype=jnp.float32) / x.shape[-1]
    timescale = max_wavelength**freq_exponents
    # float32 angles: bf16 positions above 256 would lose integer precision.
    angles = positions[..., None, None].astype(jnp.float32) / timescale  # (B, T, 1, D/2)
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class RMSNorm(nn.Module):
    """Gemma RMSNorm; with `adaptive`, the gain/shift/gate come from a conditioning vector.

    x (B, T, W), cond (B, C) -> (normed (B, T, W), gate (B, 1, W) or None).
    """

    adaptive: bool = False
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, cond: Array | None = None) -> tuple[Array, Array | None]:
        width = x.shape[-1]
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        normed = x32 * jax.lax.rsqrt(var + 1e-6)
        if not self.adaptive:
            scale = _param(
                self, "scale", nn.initializers.zeros, (width,), ("embed",), self.param_dtype
            )
            return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype), None
        if cond is None:
            raise ValueError("an adaptive RMSNorm needs its conditioning vector")
        # Zero init: scale = shift = gate = 0, so each block is the identity at initialisation.
        modulation = nn.Dense(
            3 * width,
            kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
            param_dtype=self.param_dtype,
            dtype=jnp.float32,
            name="modulation",
        )(cond.astype(jnp.float32))
        scale, shift, gate = jnp.split(modulation[:, None, :], 3, axis=-1)
        out = normed * (1.0 + scale) + shift
        return out.astype(x.dtype), gate.astype(x.dtype)


def _gated_residual(x: Array, y: Array, gate: Array | None) -> Array:
    return x + y if gate is None else x + y * gate


class ExpertAttention(nn.Module):
    """One expert's Q/K/V and output projections (the attention itself is shared)."""

    config: GemmaConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        fan_in = lambda axis, out: nn.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=axis, out_axis=out
        )
        self.q = _param(
            self,
            "q",
            fan_in(1, (0, 2)),
            (c.num_heads, c.width, c.head_dim),
            ("heads", "embed", "kv"),
            self.param_dtype,
        )
        self.kv = _param(
            self,
            "kv",
            nn.initializers.variance_scaling(
                1.0, "fan_in", "truncated_normal", in_axis=2, out_axis=(1, 3), batch_axis=(0,)
            ),
            (2, c.num_kv_heads, c.width, c.head_dim),
            (None, None, "embed", "kv"),
            self.param_dtype,
        )
        self.out = _param(
            self,
            "out",
            fan_in((0, 1), 2),
            (c.num_heads, c.head_dim, c.width),
            ("heads", "kv", "embed"),
            self.param_dtype,
        )

    def project_qkv(self, x: Array) -> tuple[Array, Array, Array]:
        """x (B, T, W) -> q (B, T, N, D), k and v (B, T, K, D)."""
        q = jnp.einsum("btw,nwd->btnd", x, self.q.astype(self.dtype))
        k, v = jnp.einsum("btw,ckwd->cbtkd", x, self.kv.astype(self.dtype))
        return q, k, v

    def project_out(self, y: Array) -> Array:
        """y (B, T, N, D) -> (B, T, W)."""
        return jnp.einsum("btnd,ndw->btw", y, self.out.astype(self.dtype))


class FeedForward(nn.Module):
    """GeGLU MLP: (gelu(x W_gate) * (x W_up)) W_down, gelu with the tanh approximation."""

    config: GemmaConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.config
        gate_up = _param(
            self,
            "gate_up",
            nn.initializers.variance_scaling(
                1.0, "fan_in", "truncated_normal", in_axis=1, out_axis=2, batch_axis=(0,)
            ),
            (2, c.width, c.mlp_dim),
            (None, "embed", "mlp"),
            self.param_dtype,
        )
        down = _param(
            self,
            "down",
            nn.initializers.lecun_normal(),
            (c.mlp_dim, c.width),
            ("mlp", "embed"),
            self.param_dtype,
        )
        gate, up = jnp.einsum("btw,cwf->cbtf", x, gate_up.astype(self.dtype))
        hidden = nn.gelu(gate, approximate=True) * up
        return jnp.einsum("btf,fw->btw", hidden, down.astype(self.dtype))


class Block(nn.Module):
    """One layer over all experts: per-expert norm and projections, joint attention, MLPs.

    `xs` holds one (B, T_i, W_i) array per expert, None for an expert absent from this call
    (the prefix pass runs expert 0 only, a sampling step expert 1 only). Returns the updated
    `xs` and this call's (k, v), each (B, sum T_i, K, D) after RoPE, for a KV cache.
    """

    experts: tuple[GemmaConfig, ...]
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, xs, kv_cache, positions, mask, adarms_cond):
        head_dim = self.experts[0].head_dim
        qs, ks, vs, gates, lengths, attn = [], [], [], [], [], {}
        for i, x in enumerate(xs):
            if x is None:
                continue
            cfg = self.experts[i]
            normed, gate = RMSNorm(cfg.adaptive_norm, self.param_dtype, name=f"attn_norm_{i}")(
                x, adarms_cond[i]
            )
            attn[i] = ExpertAttention(cfg, self.dtype, self.param_dtype, name=f"attn_{i}")
            q, k, v = attn[i].project_qkv(normed)
            qs.append(q)
            ks.append(k)
            vs.append(v)
            gates.append(gate)
            lengths.append(x.shape[1])
        q = apply_rope(jnp.concatenate(qs, axis=1), positions)
        k = apply_rope(jnp.concatenate(ks, axis=1), positions)
        v = jnp.concatenate(vs, axis=1)
        new_kv = (k, v)
        if kv_cache is not None:
            k = jnp.concatenate([kv_cache[0].astype(k.dtype), k], axis=1)
            v = jnp.concatenate([kv_cache[1].astype(v.dtype), v], axis=1)
        # A padded query row has no visible key; the XLA path then averages all values (no NaN)
        # and the row is never read, so no guard is needed.
        y = dot_product_attention(q, k, v, mask=mask[:, None, :, :], scale=head_dim**-0.5)

        out, start, j = list(xs), 0, 0
        for i, x in enumerate(xs):
            if x is None:
                continue
            cfg = self.experts[i]
            y_i = attn[i].project_out(y[:, start : start + lengths[j]])
            x = _gated_residual(x, y_i, gates[j])
            normed, gate = RMSNorm(cfg.adaptive_norm, self.param_dtype, name=f"mlp_norm_{i}")(
                x, adarms_cond[i]
            )
            y_i = FeedForward(cfg, self.dtype, self.param_dtype, name=f"mlp_{i}")(normed)
            out[i] = _gated_residual(x, y_i, gate)
            start += lengths[j]
            j += 1
        return tuple(out), new_kv


class MultiExpertGemma(nn.Module):
    """The shared-attention transformer over several token groups (pi0.5: PaliGemma + expert).

    `__call__(embedded, positions, mask, adarms_cond, kv_cache)`:
      embedded: one (B, T_i, W_i) array per expert or None (skipped), sequence order = list order;
      positions (B, T) int with T = sum of present T_i; mask (B, T, S) bool, True = may attend,
      S = T plus the cached length; adarms_cond: per expert (B, W_i) or None;
      kv_cache: (k, v) each (L, B, S_cache, K, D) from an earlier call, prepended to the keys.
    Returns (outputs per expert after the final norm (None where skipped), (k, v) of this call's
    tokens, each (L, B, T, K, D)).
    """

    experts: tuple[GemmaConfig, ...]
    vocab_size: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat_policy: str = "nothing_saveable"

    def setup(self):
        first = self.experts[0]
        for cfg in self.experts[1:]:
            shared = ("depth", "num_heads", "num_kv_heads", "head_dim")
            if any(getattr(cfg, f) != getattr(first, f) for f in shared):
                raise ValueError(f"experts must share {shared}: {self.experts}")
        self.input_embedding = _param(
            self,
            "input_embedding",
            nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=0),
            (self.vocab_size, first.width),
            ("vocab", "embed"),
            self.param_dtype,
        )
        block = Block
        policy = shared_layers.remat_policy(self.remat_policy)
        if self.remat_policy != "none":
            # prevent_cse=False is safe (and faster) inside scan, which already blocks CSE.
            block = nn.remat(Block, prevent_cse=False, policy=policy)
        self.layers = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
            length=first.depth,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(self.experts, self.dtype, self.param_dtype)
        self.final_norms = [RMSNorm(cfg.adaptive_norm, self.param_dtype) for cfg in self.experts]

    def embed(self, tokens: Array) -> Array:
        """Token ids (B, T) -> (B, T, W0), scaled by sqrt(W0) as Gemma does (images are not)."""
        # Gather first, cast after: casting the whole (257k, 2048) table would copy 1 GB per call.
        x = jnp.take(self.input_embedding, tokens, axis=0).astype(self.dtype)
        return x * jnp.sqrt(jnp.asarray(self.experts[0].width, jnp.float32)).astype(self.dtype)

    def __call__(
        self,
        embedded: Sequence[Array | None],
        positions: Array,
        mask: Array,
        adarms_cond: Sequence[Array | None] | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[list[Array | None], KVCache]:
        if len(embedded) != len(self.experts):
            raise ValueError(f"{len(embedded)} inputs for {len(self.experts)} experts")
        if adarms_cond is None:
            adarms_cond = [None] * len(self.experts)
        xs = tuple(None if x is None else x.astype(self.dtype) for x in embedded)
        xs, new_kv = self.layers(xs, kv_cache, positions, mask, tuple(adarms_cond))
        outputs = [
            None if x is None else norm(x, cond)[0]
            for x, norm, cond in zip(xs, self.final_norms, adarms_cond)
        ]
        return outputs, new_kv
