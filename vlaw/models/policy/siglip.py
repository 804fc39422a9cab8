"""SigLIP vision encoder (pi0.5 uses So400m/14 without pooling, its head as the projector).

Facts (shared/research/openpi.md §1.2): a non-overlapping patch convolution, a learned position
embedding per patch, pre-LayerNorm blocks (LayerNorm -> multi-head attention -> residual;
LayerNorm -> Dense, tanh-gelu, Dense -> residual), a final LayerNorm, then a Dense "head" that
maps to the language model's width (PaliGemma's multimodal projector). LayerNorm eps 1e-6.
The patch stem and position embedding run in float32 before the cast to the compute dtype,
since they see raw pixels.

Parameter tree (L = depth, from `nn.scan`):
  patch_embed/{kernel (P, P, 3, W), bias (W)}, pos_embed (1, N, W)
  blocks/{attn_norm, mlp_norm}/{scale, bias} (L, W)
  blocks/attn_{query, key, value}/{kernel (L, W, H, Dh), bias (L, H, Dh)}
  blocks/attn_out/{kernel (L, H, Dh, W), bias (L, W)}
  blocks/mlp_fc1/{kernel (L, W, F), bias (L, F)}, blocks/mlp_fc2/{kernel (L, F, W), bias (L, W)}
  final_norm/{scale, bias} (W), head/{kernel (W, out_dim), bias (out_dim)} (when out_dim is set)
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlaw.models import layers as shared_layers
from vlaw.models.layers import dot_product_attention

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int
    image_size: int
    out_dim: int | None = None  # width of the projector head; None returns encoder tokens

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# So400m/14 at 224 x 224 -> 256 tokens per image, projected to Gemma-2B's width.
SIGLIP_SO400M_14 = SiglipConfig(
    width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=14, image_size=224, out_dim=2048
)


def _kernel(axes):
    return nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)


def _zeros(axes):
    return nn.with_logical_partitioning(nn.initializers.zeros, axes)


def _layer_norm(name: str, param_dtype) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=1e-6,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=_zeros(("embed",)),
        name=name,
    )


class EncoderBlock(nn.Module):
    """Pre-LN transformer block; x (B, N, W) -> (B, N, W). Carry-only signature for nn.scan."""

    config: SiglipConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, _) -> tuple[Array, None]:
        c = self.config
        head_dim = c.width // c.num_heads
        dense = lambda name, feats, axis, kaxes, baxes: nn.DenseGeneral(
            feats,
            axis=axis,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=_kernel(kaxes),
            bias_init=_zeros(baxes),
            name=name,
        )

        h = _layer_norm("attn_norm", self.param_dtype)(x)
        with_heads = (c.num_heads, head_dim)
        qkv_axes = (("embed", "heads", "kv"), ("heads", "kv"))
        q = dense("attn_query", with_heads, -1, *qkv_axes)(h)
        k = dense("attn_key", with_heads, -1, *qkv_axes)(h)
        v = dense("attn_value", with_heads, -1, *qkv_axes)(h)
        y = dot_product_attention(q, k, v)
        y = dense("attn_out", c.width, (-2, -1), ("heads", "kv", "embed"), ("embed",))(y)
        x = x + y

        h = _layer_norm("mlp_norm", self.param_dtype)(x)
        h = dense("mlp_fc1", c.mlp_dim, -1, ("embed", "mlp"), ("mlp",))(h)
        h = nn.gelu(h, approximate=True)
        h = dense("mlp_fc2", c.width, -1, ("mlp", "embed"), ("embed",))(h)
        return x + h, None


class SiglipEncoder(nn.Module):
    """Images (B, H, W, 3) float in [-1, 1] -> tokens (B, N, out_dim or width)."""

    config: SiglipConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat_policy: str = "nothing_saveable"

    @nn.compact
    def __call__(self, images: Array) -> Array:
        c = self.config
        if images.shape[1:3] != (c.image_size, c.image_size):
            raise ValueError(f"images {images.shape} do not match image_size {c.image_size}")
        x = nn.Conv(
            c.width,
            (c.patch_size, c.patch_size),
            strides=(c.patch_size, c.patch_size),
            padding="VALID",
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            kernel_init=_kernel((None, None, None, "embed")),
            bias_init=_zeros(("embed",)),
            name="patch_embed",
        )(images.astype(jnp.float32))
        x = x.reshape(x.shape[0], -1, c.width)
        pos = self.param(
            "pos_embed",
            nn.with_logical_partitioning(
                nn.initializers.normal(stddev=c.width**-0.5), (None, None, "embed")
            ),
            (1, c.num_patches, c.width),
            self.param_dtype,
        )
        x = (x + pos.astype(jnp.float32)).astype(self.dtype)

        block = EncoderBlock
        if self.remat_policy != "none":
            block = nn.remat(
                EncoderBlock,
                prevent_cse=False,
                policy=shared_layers.remat_policy(self.remat_policy),
            )
        x, _ = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=nn.broadcast,
            length=c.depth,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(c, self.dtype, self.param_dtype, name="blocks")(x, None)
        x = _layer_norm("final_norm", self.param_dtype)(x).astype(self.dtype)
        if c.out_dim is not None:
            x = nn.Dense(
                c.out_dim,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                # Zero init as openpi does from scratch: image tokens start silent in the LLM.
                kernel_init=_zeros((None, "embed")),
                bias_init=_zeros(("embed",)),
                name="head",
            )(x)
        return x
