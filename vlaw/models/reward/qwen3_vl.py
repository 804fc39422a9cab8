"""Qwen3-VL (vision encoder + language model) and the reward read-out P("yes").

The reward model of VLAW (paper §4.1, Appendix C) is Qwen3-VL-4B-Instruct asked whether the
robot in a 16-frame video completed the instruction; the trajectory counts as a success when
the probability of the first answer token being "yes" exceeds α (0.8).

`Qwen3VL` mirrors transformers' `Qwen3VLForConditionalGeneration` (parameter subtrees `visual`
and `language_model`, as the checkpoint's `model.visual.*` / `model.language_model.*`):
video frames are patchified and encoded, the merged visual tokens replace the `<|video_pad|>`
placeholders, the DeepStack features are added after the first decoder layers, and the
multimodal rotary positions are derived from the token layout (`mrope_position_ids`).

All videos of a batch share one frame size (static under jit), so the vision tokens of every
sample have the same grid; samples differ only in their text and padding.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlaw.models.reward.text import TextConfig, TextModel
from vlaw.models.reward.vision import VisionConfig, VisionEncoder, patchify_video


@dataclasses.dataclass(frozen=True)
class Qwen3VLConfig:
    """Qwen3-VL sizes, special-token ids and numerics. Presets: `tiny`, `sim`, `paper`.

    `tiny` and `sim` use the small on-the-fly tokenizer of `tokenizer.py`, whose 14 special
    tokens take ids 0-13 (`<|vision_start|>` 9, `<|vision_end|>` 10, `<|image_pad|>` 12,
    `<|video_pad|>` 13); `paper` uses the real Qwen ids (151652, 151653, 151655, 151656).
    """

    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    vision_start_token_id: int = 151_652
    vision_end_token_id: int = 151_653
    image_token_id: int = 151_655
    video_token_id: int = 151_656
    dtype: str = "float32"  # activations; "bfloat16" on accelerators
    param_dtype: str = "float32"  # master weights
    remat_policy: str | None = None  # a jax.checkpoint_policies name, e.g. "nothing_saveable"

    @classmethod
    def paper(cls) -> Qwen3VLConfig:
        """Qwen3-VL-4B-Instruct (Hub config.json): 4.44B parameters."""
        return cls(dtype="bfloat16", remat_policy="nothing_saveable")

    @classmethod
    def tiny(cls) -> Qwen3VLConfig:
        """Every code path in seconds on a CPU (0.26M parameters)."""
        return cls(
            vision=VisionConfig(
                depth=3,
                hidden_size=32,
                num_heads=2,
                intermediate_size=64,
                out_hidden_size=64,
                deepstack_layers=(0, 1),
                patch_size=8,
                num_position_embeddings=16,
            ),
            text=TextConfig(
                vocab_size=512,
                hidden_size=64,
                num_layers=3,
                num_heads=4,
                num_kv_heads=2,
                head_dim=16,
                intermediate_size=128,
                mrope_section=(4, 2, 2),
            ),
            **_SMALL_TOKENIZER_IDS,
        )

    @classmethod
    def sim(cls) -> Qwen3VLConfig:
        """Trainable on a CPU in minutes on 64x64 sim frames (5.3M parameters)."""
        return cls(
            vision=VisionConfig(
                depth=4,
                hidden_size=128,
                num_heads=4,
                intermediate_size=512,
                out_hidden_size=256,
                deepstack_layers=(1, 2),
                patch_size=8,
                num_position_embeddings=64,
            ),
            text=TextConfig(
                vocab_size=512,
                hidden_size=256,
                num_layers=4,
                num_heads=4,
                num_kv_heads=2,
                head_dim=64,
                intermediate_size=768,
                mrope_section=(16, 8, 8),
            ),
            **_SMALL_TOKENIZER_IDS,
        )

    @classmethod
    def from_preset(cls, name: str) -> Qwen3VLConfig:
        return {"tiny": cls.tiny, "sim": cls.sim, "paper": cls.paper}[name]()

    @property
    def frame_factor(self) -> int:
        """Frame sides must be multiples of this (patch x merge; 32 at paper size)."""
        return self.vision.patch_size * self.vision.spatial_merge_size


_SMALL_TOKENIZER_IDS = dict(
    vision_start_token_id=9, vision_end_token_id=10, image_token_id=12, video_token_id=13
)


def mrope_position_ids(
    input_ids: jax.Array,
    attention_mask: jax.Array,
    *,
    vision_token_ids: tuple[int, ...],
    merged_grid_hw: tuple[int, int],
) -> tuple[jax.Array, jax.Array]:
    """Multimodal rotary positions (T, H, W) from the token layout (transformers `get_rope_index`).

    Every run of consecutive vision-placeholder tokens is one temporal patch of the video
    (the timestamp text separates them) laid out on the merged grid (gh, gw): its tokens all get
    T = p, and H = p + row, W = p + col, where p is the running position; p then advances by
    max(gh, gw). Text tokens get p on all three rows and advance it by one. Padding
    (attention_mask 0) is skipped and gets position 0. Jittable.

    Shapes: input_ids, attention_mask (B, L) -> position_ids (3, B, L) int32 and rope_deltas
    (B,) = max position + 1 - number of valid tokens.
    """
    valid = attention_mask.astype(bool)
    vision = jnp.isin(input_ids, jnp.asarray(vision_token_ids)) & valid
    gh, gw = merged_grid_hw
    before = jnp.pad(vision[:, :-1], ((0, 0), (1, 0)))
    after = jnp.pad(vision[:, 1:], ((0, 0), (0, 1)))
    # How far each token moves the running position; a vision run moves it once, at its end,
    # so the exclusive cumulative sum is the run's start position for all of its tokens.
    step = jnp.where(vision, jnp.where(after, 0, max(gh, gw)), valid.astype(jnp.int32))
    start = jnp.cumsum(step, axis=1) - step
    index = jnp.arange(input_ids.shape[1])[None, :]
    run_start = jax.lax.cummax(jnp.where(vision & ~before, index, 0), axis=1)
    offset = index - run_start
    row = jnp.where(vision, offset // gw, 0)
    col = jnp.where(vision, offset % gw, 0)
    positions = jnp.stack([start, start + row, start + col]).astype(jnp.int32)
    positions = jnp.where(valid[None], positions, 0)
    deltas = positions.max(axis=(0, 2)) + 1 - valid.sum(axis=1)
    return positions, deltas


def _scatter_to_placeholders(features: jax.Array, placeholder: jax.Array) -> jax.Array:
    """Place the n feature rows of each sample at its n placeholder positions (zeros elsewhere).

    Shapes: features (..., B, n, D), placeholder (B, L) bool -> (..., B, L, D). The caller
    guarantees every sample holds exactly n placeholders (`prepare_inputs` does).
    """
    index = jnp.clip(jnp.cumsum(placeholder, axis=1) - 1, 0, features.shape[-2] - 1)
    index = jnp.broadcast_to(index, (*features.shape[:-3], *index.shape))
    gathered = jnp.take_along_axis(features, index[..., None], axis=-2)
    return jnp.where(placeholder[..., None], gathered, 0).astype(features.dtype)


class Qwen3VL(nn.Module):
    """Qwen3-VL for next-token logits over a video+text prompt.

    Shapes: input_ids (B, L) int32; video (B, T, H, W, 3) float in [-1, 1] (see
    `vision.normalize_frames`; H, W multiples of `config.frame_factor`) or None;
    attention_mask (B, L) (1 = token, 0 = padding) or None. Returns logits (B, L, vocab), or
    (B, vocab) when `answer_positions` (B,) picks one position per sample (the lm_head then
    runs on B rows only, which matters with a 152k vocabulary).
    """

    config: Qwen3VLConfig

    def setup(self):
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.visual = VisionEncoder(cfg.vision, dtype, param_dtype, cfg.remat_policy)
        self.language_model = TextModel(cfg.text, dtype, param_dtype, cfg.remat_policy)

    def __call__(self, input_ids, video=None, attention_mask=None, answer_positions=None):
        cfg = self.config
        b, length = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, length), jnp.int32)
        h = self.language_model.embed(input_ids)
        num_taps = len(cfg.vision.deepstack_layers)
        deepstack = jnp.zeros((0, b, length, h.shape[-1]), h.dtype)
        merged_hw = (1, 1)
        if video is not None:
            patches = patchify_video(video, cfg.vision)
            m = cfg.vision.spatial_merge_size
            grid_hw = (
                video.shape[2] // cfg.vision.patch_size,
                video.shape[3] // cfg.vision.patch_size,
            )
            merged_hw = (grid_hw[0] // m, grid_hw[1] // m)
            tokens, taps = self.visual(patches.astype(h.dtype), grid_hw)
            placeholder = input_ids == cfg.video_token_id
            h = jnp.where(placeholder[..., None], _scatter_to_placeholders(tokens, placeholder), h)
            if num_taps:
                deepstack = _scatter_to_placeholders(taps, placeholder).astype(h.dtype)
        positions, _ = mrope_position_ids(
            input_ids,
            attention_mask,
            vision_token_ids=(cfg.video_token_id, cfg.image_token_id),
            merged_grid_hw=merged_hw,
        )
        causal = jnp.tril(jnp.ones((length, length), bool))
        mask = causal[None, None] & attention_mask.astype(bool)[:, None, None, :]
        h = self.language_model(h, positions, mask, deepstack)
        if answer_positions is not None:
            h = jnp.take_along_axis(h, answer_positions[:, None, None], axis=1)[:, 0]
        return self.language_model.logits(h).astype(jnp.float32)


def last_token_positions(attention_mask: jax.Array) -> jax.Array:
    """Index of each sample's last real token (works with left or right padding). (B, L) -> (B,)."""
    index = jnp.arange(attention_mask.shape[1])[None, :]
    return jnp.max(jnp.where(attention_mask.astype(bool), index, 0), axis=1)


@functools.partial(jax.jit, static_argnames=("config",))
def answer_logits(params, input_ids, video, attention_mask, *, config: Qwen3VLConfig):
    """Next-token logits after the prompt (the first answer token). Shapes: -> (B, vocab)."""
    return Qwen3VL(config).apply(
        {"params": params},
        input_ids,
        video,
        attention_mask,
        answer_positions=last_token_positions(attention_mask),
    )


@functools.partial(
    jax.jit, static_argnames=("config", "yes_token_id", "no_token_id", "renormalize")
)
def yes_probability(
    params,
    input_ids: jax.Array,
    video: jax.Array,
    attention_mask: jax.Array,
    *,
    config: Qwen3VLConfig,
    yes_token_id: int,
    no_token_id: int,
    renormalize: bool = False,
) -> jax.Array:
    """P(first answer token = "yes") for each prompt of the batch (paper Appendix C).

    The probability is the full-vocabulary softmax at the position after the prompt, the
    paper's literal "probability assigned to the 'yes' token"; with `renormalize` it is
    P(yes) / (P(yes) + P(no)), the two-way read-out. Success = P > α.

    Shapes: input_ids, attention_mask (B, L); video (B, T, H, W, 3) in [-1, 1] -> (B,) float32.
    """
    logits = answer_logits(params, input_ids, video, attention_mask, config=config)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    log_yes, log_no = log_probs[:, yes_token_id], log_probs[:, no_token_id]
    if renormalize:
        return jax.nn.sigmoid(log_yes - log_no)
    return jnp.exp(log_yes)


def _dummy_inputs(config: Qwen3VLConfig, num_frames: int = 2, frame_hw=None):
    """The smallest video+text prompt that traces every parameter (shapes do not depend on it)."""
    size = frame_hw or (config.frame_factor, config.frame_factor)
    m = config.vision.spatial_merge_size
    per_side = config.vision.patch_size * m
    tokens = (num_frames // 2) * (size[0] // per_side) * (size[1] // per_side)
    ids = jnp.full((1, tokens + 2), config.video_token_id, jnp.int32).at[:, -2:].set(0)
    return ids, jnp.zeros((1, num_frames, *size, 3), jnp.float32)


def init_params(config: Qwen3VLConfig, rng: jax.Array) -> dict:
    """Random parameters as a plain pytree (logical-axis metadata stripped; see
    `logical_param_specs` for the sharding annotations)."""
    ids, video = _dummy_inputs(config)
    init = jax.jit(lambda key: nn.meta.unbox(Qwen3VL(config).init(key, ids, video)["params"]))
    return init(rng)


def logical_param_specs(config: Qwen3VLConfig) -> dict:
    """PartitionSpecs of logical axis names for every parameter (no compute: eval_shape).

    Names: `vocab`, `embed`, `mlp`, `heads`, `kv_heads`, `head_dim`, `layers` (scanned stacks);
    map them to mesh axes with `nn.logical_to_mesh_sharding(specs, mesh, rules)`.
    """
    ids, video = _dummy_inputs(config)
    abstract = jax.eval_shape(lambda: Qwen3VL(config).init(jax.random.PRNGKey(0), ids, video))
    return nn.get_partition_spec(abstract)["params"]
