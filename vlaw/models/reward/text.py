"""Qwen3-VL's language model (transformers `Qwen3VLTextModel`) as Flax Linen modules.

Facts (transformers 5.24 `models/qwen3_vl`, shared/research/reward_dsrl_metrics.md §1.4-1.5):

- Pre-norm decoder: h += attn(RMSNorm(h)); h += SwiGLU(RMSNorm(h)); final RMSNorm; lm_head
  tied to the token embedding at 4B. RMSNorm runs in float32 and multiplies its weight after
  casting back (no "+1" offset).
- Attention: grouped-query (32 query / 8 KV heads at 4B), head_dim 128 independent of the
  width, per-head RMSNorm on q and k *before* the rotary embedding, no biases, causal.
- Interleaved M-RoPE: every token has three positions (T, H, W). Of the head_dim/2 rotary
  frequencies, indices 1, 4, 7, ... (`mrope_section[1]` of them) take the H angle, indices
  2, 5, 8, ... (`mrope_section[2]`) the W angle, all others the T angle. For text T = H = W, so
  text tokens get ordinary 1D RoPE.
- DeepStack: after decoder layer i < K, the i-th DeepStack visual feature is added to the
  hidden states at the visual-token positions.

The decoder layers are one `nn.scan` (parameters carry a leading `layers` axis). The DeepStack
features enter as a *broadcast* scan input, indexed by the layer number inside the body, so
they are neither carried nor stacked per layer.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlaw.models.layers import dot_product_attention
from vlaw.models.reward.vision import apply_rope


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Sizes of the language model (field names follow transformers' `Qwen3VLTextConfig`)."""

    vocab_size: int = 151_936
    hidden_size: int = 2560
    num_layers: int = 36
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 9728
    rope_theta: float = 5_000_000.0
    mrope_section: tuple[int, int, int] = (24, 20, 20)  # (T, H, W) frequencies; sum = head_dim/2
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True


_NORMAL = nn.initializers.normal(0.02)  # transformers' initializer_range for Qwen3-VL


def _init(axes: tuple[str | None, ...], base=_NORMAL):
    """An initializer whose parameter carries logical axis names (for sharding rules)."""
    return nn.with_logical_partitioning(base, axes)


def mrope(position_ids: jax.Array, config: TextConfig) -> tuple[jax.Array, jax.Array]:
    """cos/sin of the interleaved multimodal rotary embedding, in float32.

    Shapes: position_ids (3, B, L) rows (T, H, W) -> cos, sin (B, L, head_dim).
    """
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    angles = position_ids.astype(jnp.float32)[..., None] * inv_freq  # (3, B, L, dim/2)
    # Which of the three position rows drives each frequency (the interleaved layout).
    axis = np.zeros(dim // 2, np.int32)
    axis[1 : 3 * config.mrope_section[1] : 3] = 1
    axis[2 : 3 * config.mrope_section[2] : 3] = 2
    angles = jnp.take_along_axis(angles, jnp.asarray(axis)[None, None, None, :], axis=0)[0]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) in float32, cast back, times `scale`. Shapes: (..., D)."""

    eps: float = 1e-6
    axis_name: str = "embed"
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param(
            "scale",
            _init((self.axis_name,), nn.initializers.ones),
            (x.shape[-1],),
            self.param_dtype,
        )
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return scale.astype(x.dtype) * xf.astype(x.dtype)


class DecoderLayer(nn.Module):
    """One Qwen3 decoder layer. Shapes: h (B, L, D), cos/sin (B, L, head_dim), mask
    broadcastable to (B, 1, L, L) with True = attend -> (B, L, D)."""

    config: TextConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _dense(self, features, axes, name, axis=-1):
        return nn.DenseGeneral(
            features,
            axis=axis,
            use_bias=False,
            kernel_init=_init(axes),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, h, cos, sin, mask):
        cfg = self.config
        x = RMSNorm(cfg.rms_norm_eps, param_dtype=self.param_dtype, name="input_layernorm")(h)
        q = self._dense((cfg.num_heads, cfg.head_dim), ("embed", "heads", "head_dim"), "q_proj")(x)
        k = self._dense(
            (cfg.num_kv_heads, cfg.head_dim), ("embed", "kv_heads", "head_dim"), "k_proj"
        )(x)
        v = self._dense(
            (cfg.num_kv_heads, cfg.head_dim), ("embed", "kv_heads", "head_dim"), "v_proj"
        )(x)
        q = RMSNorm(cfg.rms_norm_eps, "head_dim", self.param_dtype, name="q_norm")(q)
        k = RMSNorm(cfg.rms_norm_eps, "head_dim", self.param_dtype, name="k_norm")(k)
        q = apply_rope(q, cos[:, :, None, :], sin[:, :, None, :])
        k = apply_rope(k, cos[:, :, None, :], sin[:, :, None, :])
        attn = dot_product_attention(q, k, v, mask=mask, scale=cfg.head_dim**-0.5)
        h = h + self._dense(cfg.hidden_size, ("heads", "head_dim", "embed"), "o_proj", (-2, -1))(
            attn
        )
        x = RMSNorm(
            cfg.rms_norm_eps, param_dtype=self.param_dtype, name="post_attention_layernorm"
        )(h)
        gate = self._dense(cfg.intermediate_size, ("embed", "mlp"), "gate_proj")(x)
        up = self._dense(cfg.intermediate_size, ("embed", "mlp"), "up_proj")(x)
        return h + self._dense(cfg.hidden_size, ("mlp", "embed"), "down_proj")(
            jax.nn.silu(gate) * up
        )


class _ScannedDecoderLayer(nn.Module):
    """`DecoderLayer` plus the DeepStack injection, with `nn.scan`'s signature.

    `deepstack` (K, B, L, D) holds the visual features already scattered to their sequence
    positions (zeros elsewhere), so the injection is one add for layers i < K.
    """

    config: TextConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat_policy: str | None = None

    @nn.compact
    def __call__(self, h, layer_index, cos, sin, mask, deepstack):
        layer = DecoderLayer
        if self.remat_policy is not None:
            layer = nn.remat(
                layer, prevent_cse=False, policy=getattr(jax.checkpoint_policies, self.remat_policy)
            )
        h = layer(self.config, self.dtype, self.param_dtype, name="layer")(h, cos, sin, mask)
        num_taps = deepstack.shape[0]
        if num_taps:
            feature = jax.lax.dynamic_index_in_dim(
                deepstack, jnp.minimum(layer_index, num_taps - 1), keepdims=False
            )
            h = h + jnp.where(layer_index < num_taps, feature, 0).astype(h.dtype)
        return h, None


class TextModel(nn.Module):
    """Embedding, decoder stack, final norm and lm_head.

    `embed` maps token ids (B, L) to (B, L, D); `__call__` runs the decoder on embeddings:
    h (B, L, D), position_ids (3, B, L), mask (B, 1, L, L) bool, deepstack (K, B, L, D) ->
    final-normed hidden states (B, L, D); `logits` projects (..., D) -> (..., vocab).
    """

    config: TextConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat_policy: str | None = None

    def setup(self):
        cfg = self.config
        self.embed_tokens = nn.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            embedding_init=_init(("vocab", "embed")),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.layers = nn.scan(
            _ScannedDecoderLayer,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
            length=cfg.num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, self.dtype, self.param_dtype, self.remat_policy)
        self.norm = RMSNorm(cfg.rms_norm_eps, param_dtype=self.param_dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Dense(
                cfg.vocab_size,
                use_bias=False,
                kernel_init=_init(("embed", "vocab")),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
            )

    def embed(self, input_ids):
        return self.embed_tokens(input_ids)

    def __call__(self, h, position_ids, mask, deepstack):
        cos, sin = mrope(position_ids, self.config)
        h, _ = self.layers(h, jnp.arange(self.config.num_layers), cos, sin, mask, deepstack)
        return self.norm(h)

    def logits(self, h):
        if self.config.tie_word_embeddings:
            return self.embed_tokens.attend(h)
        return self.lm_head(h)
