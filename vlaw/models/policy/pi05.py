"""pi0.5: a flow-matching vision-language-action policy (PaliGemma + an action expert).

Layout of one forward pass (shared/research/openpi.md §1.4-1.5):
- prefix: for each of `num_images` cameras, the SigLIP tokens (projected to the LLM width), then
  the tokenised prompt (which carries the discretised state, see tokenizer.py). One
  bidirectional block; masked cameras and padded text are excluded as keys and do not advance
  the RoPE positions (positions = cumsum(valid) - 1).
- suffix: `action_horizon` tokens from the noisy action chunk x_t through `action_in_proj` (plus
  `state_proj` of the state when `state_input` is "continuous", instead of state text); one
  block that attends to the prefix and to itself, never the other way round. The flow time t
  enters only through adaptive RMSNorm in the expert: sincos(t) -> Dense -> swish -> Dense ->
  swish gives the conditioning vector of every expert norm.
- the expert's outputs on the suffix go through `action_out_proj` to the velocity v(x_t, t).

Conventions (openpi): t = 1 is noise, t = 0 is data; sampling integrates x <- x + dt v with
dt = -1/N from t = 1; the prefix KV cache is computed once and reused by every step.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from vlaw.models.policy.gemma import (
    GEMMA_2B,
    GEMMA_300M,
    PALIGEMMA_VOCAB_SIZE,
    GemmaConfig,
    KVCache,
    MultiExpertGemma,
)
from vlaw.models.policy.siglip import SIGLIP_SO400M_14, SiglipConfig, SiglipEncoder

Array = jax.Array


@struct.dataclass
class Observation:
    """What the policy sees, already preprocessed (resized, normalised, tokenised).

    images (B, num_images, S, S, 3) float in [-1, 1]; image_masks (B, num_images) bool (False for
    an absent camera, e.g. DROID's right wrist); tokens (B, L) int32 and token_mask (B, L) bool
    from `tokenizer.PaligemmaTokenizer` (the prompt, with the discretised state when the config's
    `state_input` is "tokens"); state (B, S) float, the normalised state, read only when
    `state_input` is "continuous" (S <= action_dim; None otherwise).
    """

    images: Array
    image_masks: Array
    tokens: Array
    token_mask: Array
    state: Array | None = None


@dataclasses.dataclass(frozen=True)
class Pi05Config:
    siglip: SiglipConfig  # its out_dim is set to llm.width (the projector)
    llm: GemmaConfig  # expert 0: PaliGemma's Gemma
    expert: GemmaConfig  # expert 1: the action expert (adaptive norms are forced on)
    vocab_size: int
    action_dim: int = 32  # padded action dim (openpi: 32, so checkpoints load)
    action_horizon: int = 15  # actions per chunk (DROID: 15)
    max_token_len: int = 200  # prompt length in tokens (openpi pi0.5: 200)
    num_images: int = 3  # camera slots: base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb
    num_sampling_steps: int = 10  # Euler steps of `sample_actions`
    dtype: str = "bfloat16"  # activations
    param_dtype: str = "float32"  # master weights
    remat_policy: str = "nothing_saveable"  # jax.checkpoint_policies name; "none" disables
    # How the robot state reaches the model. "tokens" (openpi's pi0.5): as 256 text bins in the
    # prompt. "continuous": the normalised state, zero-padded to action_dim, through a Dense
    # layer (`state_proj`) added to every action token of the expert, so the action expert reads
    # it at full precision (the prompt then carries no state).
    state_input: str = "tokens"
    # Leading action dims the loss trains (0: all action_dim, openpi's convention, in which the
    # padded dims are trained towards 0). With k > 0 the velocity of dims >= k is never trained,
    # and `sample_actions` integrates their exact flow instead (see its docstring).
    trained_action_dims: int = 0

    @property
    def image_size(self) -> int:
        return self.siglip.image_size


_PRESETS = {
    # < 5M parameters: every code path in a second of CPU.
    "tiny": Pi05Config(
        siglip=SiglipConfig(
            width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=8, image_size=32
        ),
        llm=GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=2, num_kv_heads=1, head_dim=16),
        expert=GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16),
        vocab_size=256,
        action_horizon=4,
        max_token_len=16,
        dtype="float32",
    ),
    # CPU-trainable in minutes; PaliGemma's vocabulary so the real tokenizer works unchanged
    # (the embedding is then most of the ~75M parameters, but a lookup is cheap). Images at the
    # sim station's own 64x64 (16 tokens each): upsampling to 96 gave 36 tokens of no new
    # information and cost 1.35x per train step (benchmarks/RESULTS.md).
    "sim": Pi05Config(
        siglip=SiglipConfig(
            width=192, depth=4, mlp_dim=768, num_heads=3, patch_size=16, image_size=64
        ),
        llm=GemmaConfig(width=256, depth=4, mlp_dim=1024, num_heads=4, num_kv_heads=1, head_dim=64),
        expert=GemmaConfig(
            width=128, depth=4, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=64
        ),
        vocab_size=PALIGEMMA_VOCAB_SIZE,
        max_token_len=64,
        dtype="float32",
    ),
    # Published sizes: SigLIP So400m/14 + Gemma 2B + Gemma 300M expert (~3.4B parameters).
    "paper": Pi05Config(
        siglip=SIGLIP_SO400M_14,
        llm=GEMMA_2B,
        expert=GEMMA_300M,
        vocab_size=PALIGEMMA_VOCAB_SIZE,
    ),
}


def pi05_config(preset: str, **overrides) -> Pi05Config:
    """The `tiny`, `sim` or `paper` preset, with any field replaced (e.g. action_horizon=16)."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown pi0.5 preset {preset!r}; choose from {sorted(_PRESETS)}")
    return dataclasses.replace(_PRESETS[preset], **overrides)


def make_attention_mask(input_mask: Array, block_start: Array) -> Array:
    """Block-causal mask (B, T, T): token i sees token j iff block(j) <= block(i), both valid.

    input_mask (B, T) bool; block_start (T,) or (B, T) bool, True where a new block begins
    (openpi's ar_mask). Blocks are numbered by the cumulative sum of block_start.
    """
    block = jnp.cumsum(jnp.broadcast_to(block_start, input_mask.shape).astype(jnp.int32), axis=-1)
    visible = block[:, None, :] <= block[:, :, None]
    valid = input_mask[:, None, :] & input_mask[:, :, None]
    return visible & valid


def posemb_sincos(t: Array, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> Array:
    """Sine-cosine embedding of flow times t (B,) -> (B, dim), [sin | cos] halves.

    Periods are geometrically spaced in [min_period, max_period], so t in [0, 1] is resolved
    from coarse to very fine scales.
    """
    fraction = jnp.linspace(0.0, 1.0, dim // 2, dtype=jnp.float32)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.astype(jnp.float32)[:, None] * (2.0 * jnp.pi / period)[None, :]
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


def _dense(features: int, axes, dtype, param_dtype, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
        name=name,
    )


class Pi05(nn.Module):
    """The pi0.5 policy. `__call__(obs, x_t, t)` is the velocity (B, H, A) of one full pass.

    Methods for sampling: `prefix_cache(obs)` -> (KV cache, prefix mask) and
    `velocity_from_cache(cache, prefix_mask, x_t, t)`; `sample_actions` below combines them.
    Parameter tree: `img` (SigLIP + projector head), `llm` (MultiExpertGemma), `action_in_proj`,
    `time_mlp_in`, `time_mlp_out`, `action_out_proj`.
    """

    config: Pi05Config

    def setup(self):
        c = self.config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.img = SiglipEncoder(
            dataclasses.replace(c.siglip, out_dim=c.llm.width), dtype, param_dtype, c.remat_policy
        )
        expert = dataclasses.replace(c.expert, adaptive_norm=True)
        self.llm = MultiExpertGemma(
            (c.llm, expert), c.vocab_size, dtype, param_dtype, c.remat_policy
        )
        width = c.expert.width
        if c.state_input not in ("tokens", "continuous"):
            raise ValueError(f"state_input {c.state_input!r}: choose 'tokens' or 'continuous'")
        self.action_in_proj = _dense(width, (None, "embed"), dtype, param_dtype, "action_in_proj")
        if c.state_input == "continuous":
            self.state_proj = _dense(width, (None, "embed"), dtype, param_dtype, "state_proj")
        self.time_mlp_in = _dense(width, ("embed", "mlp"), dtype, param_dtype, "time_mlp_in")
        self.time_mlp_out = _dense(width, ("mlp", "embed"), dtype, param_dtype, "time_mlp_out")
        self.action_out_proj = _dense(
            c.action_dim, ("embed", None), jnp.float32, param_dtype, "action_out_proj"
        )

    def embed_prefix(self, obs: Observation) -> tuple[Array, Array]:
        """-> prefix tokens (B, num_images * N_img + L, W0) and their validity mask."""
        c = self.config
        batch, num_images = obs.images.shape[:2]
        if num_images != c.num_images:
            raise ValueError(f"{num_images} images given, the config has {c.num_images} slots")
        flat = obs.images.reshape(batch * num_images, *obs.images.shape[2:])
        image_tokens = self.img(flat)
        per_image = image_tokens.shape[1]
        image_tokens = image_tokens.reshape(batch, num_images * per_image, -1)
        # An absent camera's tokens are still computed (static shapes) but never attended to.
        image_mask = jnp.repeat(obs.image_masks.astype(bool), per_image, axis=1)
        text_tokens = self.llm.embed(obs.tokens)
        tokens = jnp.concatenate([image_tokens.astype(text_tokens.dtype), text_tokens], axis=1)
        mask = jnp.concatenate([image_mask, obs.token_mask.astype(bool)], axis=1)
        return tokens, mask

    def embed_suffix(self, x_t: Array, t: Array, state: Array | None = None) -> tuple[Array, Array]:
        """x_t (B, H, A), t (B,), state (B, S) -> action tokens (B, H, We), adaRMS cond (B, We)."""
        tokens = self.action_in_proj(x_t)
        if self.config.state_input == "continuous":
            if state is None:
                raise ValueError("state_input='continuous' needs Observation.state")
            padded = jnp.pad(state, [(0, 0), (0, self.config.action_dim - state.shape[-1])])
            tokens = tokens + self.state_proj(padded.astype(x_t.dtype))[:, None, :]
        emb = posemb_sincos(t, self.config.expert.width)
        # swish after both layers (openpi.md §9).
        cond = nn.swish(self.time_mlp_out(nn.swish(self.time_mlp_in(emb))))
        return tokens, cond

    def __call__(self, obs: Observation, x_t: Array, t: Array) -> Array:
        """Velocity v(x_t, t | obs): (B, H, A) float32, one pass over prefix and suffix."""
        prefix, prefix_mask = self.embed_prefix(obs)
        suffix, cond = self.embed_suffix(x_t, t, obs.state)
        batch, horizon = x_t.shape[:2]
        input_mask = jnp.concatenate([prefix_mask, jnp.ones((batch, horizon), bool)], axis=1)
        # The first action token opens a new block: the prefix never sees the actions.
        block_start = jnp.zeros(input_mask.shape[1], bool).at[prefix.shape[1]].set(True)
        mask = make_attention_mask(input_mask, block_start)
        positions = jnp.cumsum(input_mask, axis=1) - 1
        (_, out), _ = self.llm([prefix, suffix], positions, mask, adarms_cond=[None, cond])
        return self.action_out_proj(out[:, -horizon:])

    def prefix_cache(self, obs: Observation) -> tuple[KVCache, Array]:
        """One pass of expert 0 over the prefix -> ((k, v) each (L, B, Tp, K, D), mask (B, Tp))."""
        prefix, prefix_mask = self.embed_prefix(obs)
        mask = make_attention_mask(prefix_mask, jnp.zeros(prefix.shape[1], bool))
        positions = jnp.cumsum(prefix_mask, axis=1) - 1
        _, kv_cache = self.llm([prefix, None], positions, mask)
        return kv_cache, prefix_mask

    def velocity_from_cache(
        self,
        kv_cache: KVCache,
        prefix_mask: Array,
        x_t: Array,
        t: Array,
        state: Array | None = None,
    ) -> Array:
        """Velocity (B, H, A) from the action expert alone, reading the cached prefix keys."""
        suffix, cond = self.embed_suffix(x_t, t, state)
        batch, horizon = x_t.shape[:2]
        # Every action token sees all valid prefix tokens and every action token.
        to_prefix = jnp.broadcast_to(
            prefix_mask[:, None, :], (batch, horizon, prefix_mask.shape[1])
        )
        to_suffix = jnp.ones((batch, horizon, horizon), bool)
        mask = jnp.concatenate([to_prefix, to_suffix], axis=2)
        # Positions continue after the valid prefix tokens, as in the full pass.
        positions = jnp.sum(prefix_mask, axis=1, keepdims=True) + jnp.arange(horizon)[None, :]
        (_, out), _ = self.llm(
            [None, suffix], positions, mask, adarms_cond=[None, cond], kv_cache=kv_cache
        )
        return self.action_out_proj(out)


def fake_observation(config: Pi05Config, batch: int = 1) -> Observation:
    """An all-zero observation of the right shapes (for `init` and `jax.eval_shape`)."""
    size = config.image_size
    return Observation(
        images=jnp.zeros((batch, config.num_images, size, size, 3), jnp.float32),
        image_masks=jnp.ones((batch, config.num_images), bool),
        tokens=jnp.zeros((batch, config.max_token_len), jnp.int32),
        token_mask=jnp.ones((batch, config.max_token_len), bool),
        state=jnp.zeros((batch, config.action_dim), jnp.float32),
    )


def init_params(config: Pi05Config, rng: Array):
    """Initial variables {"params": ...} (boxed with logical axis names) for `Pi05(config)`.

    Under `jax.eval_shape` this gives the shapes and names without allocating anything (the
    route to sharded initialisation: eval_shape -> shardings -> jit(init, out_shardings)).
    """
    obs = fake_observation(config)
    x = jnp.zeros((1, config.action_horizon, config.action_dim), jnp.float32)
    return Pi05(config).init(rng, obs, x, jnp.ones((1,), jnp.float32))


def abstract_params(config: Pi05Config):
    """`init_params` as ShapeDtypeStructs (boxed), no computation."""
    return jax.eval_shape(functools.partial(init_params, config), jax.random.key(0))


@functools.partial(jax.jit, static_argnames=("model", "num_steps"))
def sample_actions(
    model: Pi05,
    params,
    obs: Observation,
    rng: Array,
    *,
    num_steps: int | None = None,
    noise: Array | None = None,
    action_mask: Array | None = None,
) -> Array:
    """Actions (B, H, A) (normalised, padded) by Euler integration from noise at t = 1 to t = 0.

    The prefix (images + prompt) runs once; each of the `num_steps` (default: the config's)
    steps runs only the action expert against the cached keys and values.

    action_mask (A,) bool: for a model trained with `flow_matching_loss(action_mask=...)`, whose
    velocity on padded dims was never trained. Padded dims hold zeros in the data, so their exact
    flow is x_t = t * noise with velocity = noise; using it keeps the padded inputs on the
    training distribution instead of letting untrained outputs drift into the real dims. The
    padded dims of the result are then 0. None: the config's `trained_action_dims` decides (all
    dims when 0, as openpi trains them).
    """
    c = model.config
    if action_mask is None and c.trained_action_dims:
        action_mask = jnp.arange(c.action_dim) < c.trained_action_dims
    num_steps = c.num_sampling_steps if num_steps is None else num_steps
    batch = obs.tokens.shape[0]
    if noise is None:
        noise = jax.random.normal(rng, (batch, c.action_horizon, c.action_dim), jnp.float32)
    kv_cache, prefix_mask = model.apply(params, obs, method=Pi05.prefix_cache)
    dt = -1.0 / num_steps

    def step(i, x):
        t = jnp.full((batch,), 1.0 + i * dt, jnp.float32)
        v = model.apply(
            params, kv_cache, prefix_mask, x, t, obs.state, method=Pi05.velocity_from_cache
        )
        if action_mask is not None:
            v = jnp.where(action_mask, v, noise)
        return x + dt * v

    noise = noise.astype(jnp.float32)
    return jax.lax.fori_loop(0, num_steps, step, noise)
