"""Ctrl-World (Guo et al. 2025) on the SVD UNet: conditioning, memory, EDM training, sampling.

Facts from Robert-gyj/Ctrl-World @ 4c713d1 (`models/ctrl_world.py`, `models/pipeline_ctrl_world.py`,
`config.py`, `scripts/rollout_*.py`) and shared/research/ctrl_world.md §1, §4:

- **Frame-level action conditioning.** Each frame's 7-d pose (absolute Cartesian xyz + Euler
  'xyz' + gripper, bound-normalised with DROID's 1st/99th percentiles to [-1, 1]) goes through
  the action MLP `action_encoder.action_encode` = Linear(7, 1024), SiLU, Linear(1024, 1024),
  SiLU, Linear(1024, 1024); the CLIP ViT-B/32 text embedding (512, `text_embeds` of
  `CLIPTextModelWithProjection`) is tiled twice to 1024 and added to every frame's token. Frame
  t's spatial cross-attention sees exactly that one token (context (B, T, 1, 1024)); temporal
  cross-attention sees frame 0's.
- **CLIP text side: embeddings precomputed per instruction at conversion time**
  (`vlaw.convert.ctrl_world.clip_text_embeddings`), not a Flax text tower. The tower is frozen
  in Ctrl-World and its only output used is one 512-vector per instruction; VLAW has a handful
  of fixed task instructions, so a lookup table is exact, costs nothing at train/rollout time
  and avoids porting and maintaining 63M parameters that never change.
- **Multi-view layout.** DROID's three cameras (exterior_1_left, exterior_2_left, wrist_left),
  each 192x320 -> latent (24, 40, 4), are stacked along latent height into one (72, 40, 4)
  image (`stack_views`); views interact only through ordinary spatial attention/convs. Decoding
  splits them back (`split_views`) and decodes each view in chunks of 7 frames.
- **Memory.** 6 history frames precede the 5-frame chunk (current frame + 4 future) on the
  time axis: T = 11. In training history latents are noised with sigma_h ~ N(0, 0.3); at
  inference they enter clean and unscaled, the UNet output for them is dropped. History frames
  come from a rollout buffer by fixed, pose-conditioned indices (`config.history_idx`, each
  memory frame carries its own pose token): the buffer starts with 24 copies of the first
  observation and receives the last predicted frame (and its pose) of every chunk.
- **Condition image.** The current frame's latent, divided by the VAE scaling factor (unscaled
  units, as SVD), repeated over all 11 frames and concatenated on channels after the 4 noisy
  ones. Training augments it with s ~ U(0, 0.2); inference does not.
- **EDM** with sigma_data = 1 (`vlaw.losses.edm_preconditioning`): c_skip 1/(s^2+1),
  c_out -s/sqrt(s^2+1), c_in 1/sqrt(s^2+1), c_noise ln(s)/4; ln s ~ N(0.7, 1.6); weight
  (s^2+1)/s^2; CFG dropout: the whole context zeroed with probability 0.05. added_time_ids
  [fps 7, motion bucket 127, noise aug 0.0 (train) / 0.02 (inference)].
- **Sampler**: Euler over Karras sigmas (rho 7, 0.002..700, then 0), 50 steps, initial noise
  scale sqrt(700^2+1) (diffusers' `init_noise_sigma` for "leading" spacing); CFG with the
  unconditional branch = zero context (history and condition kept), per-frame guidance
  linspace(1, 2, 5) applied to the raw output before the step.

Pixel or latent space at tiny/sim size: the model is the same; the codec differs
(`VAEConfig.pixel_codec`, parameter-free, vs a small VAE trained first). Pixel space gave the
better held-out prediction PSNR per CPU-minute; the measurement and the residual option
(`residual_scale`, not Ctrl-World's: off at paper) are in `vlaw.agents.world_model_codec`'s
docstring.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlaw.losses import diffusion_loss, edm_preconditioning
from vlaw.models.layers import config_preset, dense
from vlaw.models.world_model.pose_maps import pose_maps
from vlaw.models.world_model.unet import UNetConfig, UNetSpatioTemporal
from vlaw.models.world_model.vae import TemporalVAE, VAEConfig, decode_latents

# DROID pose percentiles (Ctrl-World `dataset_meta_info/droid/stat.json`, state_01 / state_99):
# xyz (m), Euler xyz (rad), gripper.
DROID_POSE_P01 = (0.2677, -0.4417, -0.0428, -3.1374, -1.2144, -2.1158, 0.0)
DROID_POSE_P99 = (0.7811, 0.4367, 0.7844, 3.1375, 0.9039, 1.9916, 0.9912)
# The simulated station's workspace (tiny/sim, trained from scratch): a gripper pointing down
# has roll +-pi, and atan2 hands it out on either side at random (57 % negative on the sim loop's
# iteration-1 rollouts), so under DROID's bounds the roll input jumps between -1 and +1 on
# millimetre motions. Wrapped about SIM_POSE_ANGLE_CENTER instead, each angle is continuous.
# Bounds: min/max over 8 expert episodes (noise 0.3, full layout spread) of each of the five
# tasks (roll wrapped to [0, 2pi): 3.03..5.28, the scoop's pour the top), padded a little.
SIM_POSE_LOW = (0.33, -0.37, 0.0, 2.94, -0.3, -0.45, 0.0)
SIM_POSE_HIGH = (0.70, 0.33, 0.37, 5.34, 0.3, 2.0, 1.0)
SIM_POSE_ANGLE_CENTER = (math.pi, 0.0, 0.0)
# `world_model.pose_normalization` by name: (low, high, Euler angle centre or None).
POSE_NORMALIZATIONS = {
    "droid": (DROID_POSE_P01, DROID_POSE_P99, None),
    "sim": (SIM_POSE_LOW, SIM_POSE_HIGH, SIM_POSE_ANGLE_CENTER),
}


@dataclasses.dataclass(frozen=True)
class CtrlWorldConfig:
    unet: UNetConfig = UNetConfig()
    vae: VAEConfig = VAEConfig()
    action_dim: int = 7  # xyz + Euler xyz + gripper
    text_dim: int = 512  # CLIP ViT-B/32 projection; tiled to unet.cross_attention_dim
    num_history: int = 6  # memory frames
    num_future: int = 5  # predicted chunk, first frame = current frame
    num_views: int = 3  # stacked along latent height
    view_latent_shape: tuple[int, int] = (24, 40)  # per view (192x320 pixels / 8)
    # Training (ctrl_world.md §1.5).
    p_mean: float = 0.7
    p_std: float = 1.6
    history_sigma_std: float = 0.3
    condition_sigma_max: float = 0.2
    cfg_dropout: float = 0.05
    fps: float = 7.0
    motion_bucket_id: float = 127.0
    train_noise_aug: float = 0.0
    sample_noise_aug: float = 0.02  # what the released pipeline feeds at inference
    # Sampling (ctrl_world.md §1.6, §4.3).
    num_steps: int = 50
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    rho: float = 7.0
    min_guidance: float = 1.0
    max_guidance: float = 2.0
    # Rollout-buffer indices of the memory frames (config.py, used with pi0.5; the replay script
    # hard-codes (0, 0, -8, -6, -4, -2)).
    history_idx: tuple[int, ...] = (0, 0, -12, -9, -6, -3)
    initial_buffer_copies: int = 24  # num_history * 4 copies of the first observation
    decode_chunk_size: int = 7
    # 0: Ctrl-World (the frames are diffused). > 0: every frame is diffused as
    # residual_scale * (frame - current frame), the condition channel keeping the current frame
    # itself; a model trained from scratch then starts from "nothing moves" instead of having
    # to learn to copy the condition image (see `vlaw.agents.world_model_codec`).
    residual_scale: float = 0.0
    pose_low: tuple[float, ...] = DROID_POSE_P01
    pose_high: tuple[float, ...] = DROID_POSE_P99
    # None (Ctrl-World): the Euler angles are normalised as recorded. Else each angle is first
    # wrapped into [centre - pi, centre + pi), so a pose near +-pi does not flip sign.
    pose_angle_center: tuple[float, float, float] | None = None
    # None (Ctrl-World): poses reach the UNet as context tokens only. Else one camera per view
    # (`pose_maps.py`: 12 floats, or None for a moving camera): every frame also gets pose-map
    # channels, the gripper drawn where each camera sees it; unet.in_channels must count them.
    view_cameras: tuple[tuple[float, ...] | None, ...] | None = None
    pose_map_sigma: float = 1.0  # the blob's standard deviation, in UNet cells

    def __post_init__(self):
        if len(self.history_idx) != self.num_history:
            raise ValueError(f"history_idx {self.history_idx} must have num_history entries")
        if self.hidden_dim % self.text_dim:
            raise ValueError("the text embedding is tiled: text_dim must divide the context dim")
        if self.view_cameras is not None and len(self.view_cameras) != self.num_views:
            raise ValueError(f"{len(self.view_cameras)} view_cameras for {self.num_views} views")

    @property
    def hidden_dim(self) -> int:
        return self.unet.cross_attention_dim

    @property
    def num_frames(self) -> int:
        return self.num_history + self.num_future

    @classmethod
    def preset(cls, name: str, **overrides) -> CtrlWorldConfig:
        """`tiny` (tests), `sim` (CPU-trainable, one 32x32 view per camera), `paper` (released)."""
        presets = {
            "tiny": dict(
                unet=UNetConfig.preset("tiny"),
                vae=VAEConfig.preset("tiny"),
                text_dim=16,
                num_history=2,
                num_future=3,
                view_latent_shape=(4, 8),
                num_steps=4,
                history_idx=(0, -2),
                initial_buffer_copies=4,
                decode_chunk_size=3,
            ),
            "sim": dict(
                unet=UNetConfig.preset("sim"),
                vae=VAEConfig.preset("sim"),
                text_dim=128,
                view_latent_shape=(16, 16),
                num_steps=20,
            ),
            "paper": {},
        }
        return config_preset(cls, presets, name, overrides)


def normalize_poses(poses: jax.Array, config: CtrlWorldConfig) -> jax.Array:
    """Bound normalisation to [-1, 1] with `pose_low`/`pose_high` (DROID: its 1st/99th
    percentiles) (..., 7) -> (..., 7), the Euler angles (dims 3-5) wrapped about
    `pose_angle_center` first where it is set."""
    poses = jnp.asarray(poses)
    if config.pose_angle_center is not None:
        center = jnp.asarray(config.pose_angle_center, poses.dtype)
        angles = center + jnp.mod(poses[..., 3:6] - center + jnp.pi, 2 * jnp.pi) - jnp.pi
        poses = jnp.concatenate([poses[..., :3], angles, poses[..., 6:]], axis=-1)
    low, high = jnp.asarray(config.pose_low), jnp.asarray(config.pose_high)
    return jnp.clip(2.0 * (poses - low) / (high - low + 1e-8) - 1.0, -1.0, 1.0)


def stack_views(views: jax.Array) -> jax.Array:
    """(..., V, h, w, C) -> (..., V*h, w, C): view 0 on top, as Ctrl-World's dataset does."""
    *lead, v, h, w, c = views.shape
    return views.reshape(*lead, v * h, w, c)


def split_views(latents: jax.Array, num_views: int) -> jax.Array:
    """(..., V*h, w, C) -> (..., V, h, w, C), the inverse of `stack_views`."""
    *lead, vh, w, c = latents.shape
    return latents.reshape(*lead, num_views, vh // num_views, w, c)


def decode_views(
    vae: TemporalVAE, params, latents: jax.Array, num_views: int, chunk_size: int
) -> jax.Array:
    """Stacked latents (B, F, V*h, w, 4) -> pixels (B, V, F, H, W, 3), each view decoded on its
    own in chunks of `chunk_size` frames (Ctrl-World: 7), as the reference does."""
    views = split_views(latents, num_views)  # (B, F, V, h, w, 4)
    b, f = views.shape[:2]
    per_view = jnp.moveaxis(views, 2, 1).reshape(b * num_views, f, *views.shape[3:])
    pixels = decode_latents(vae, params, per_view, chunk_size)
    return pixels.reshape(b, num_views, *pixels.shape[1:])


class ActionEncoder(nn.Module):
    """Per-frame pose MLP: (B, T, 7) -> (B, T, hidden). Keys `action_encode.{0,2,4}`."""

    hidden: int
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, poses: jax.Array) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        # Kaiming-normal (fan_in, relu) on the first two layers as Ctrl-World initialises them.
        kaiming = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
        x = poses.astype(d)
        for i, name in enumerate(("action_encode_0", "action_encode_2")):
            layer = nn.Dense(
                self.hidden,
                dtype=d,
                param_dtype=p,
                kernel_init=nn.with_logical_partitioning(kaiming, ("embed" if i else None, "mlp")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
                name=name,
            )
            x = nn.silu(layer(x))
        return dense(self.hidden, ("mlp", "embed"), "action_encode_4", d, p)(x)


class CtrlWorld(nn.Module):
    """UNet + action encoder. `__call__` is the raw network F; see the module docstring."""

    config: CtrlWorldConfig

    def setup(self):
        cfg = self.config
        self.unet = UNetSpatioTemporal(cfg.unet)
        self.action_encoder = ActionEncoder(cfg.hidden_dim, cfg.unet.dtype, cfg.unet.param_dtype)

    def context(self, poses: jax.Array, text_embeds: jax.Array | None) -> jax.Array:
        """Normalised poses (B, T, 7), text (B, text_dim) -> one token per frame (B, T, 1, D)."""
        tokens = self.action_encoder(poses)
        if text_embeds is not None:
            reps = self.config.hidden_dim // self.config.text_dim
            tokens = tokens + jnp.tile(text_embeds.astype(tokens.dtype), (1, reps))[:, None]
        return tokens[:, :, None, :]

    def __call__(
        self,
        model_input: jax.Array,
        condition: jax.Array,
        c_noise: jax.Array,
        context: jax.Array,
        added_time_ids: jax.Array,
        maps: jax.Array | None = None,
    ) -> jax.Array:
        """model_input (B, T, H, W, 4), condition (B, H, W, 4) (already unscaled), c_noise (B,),
        context (B, T, 1, D), added_time_ids (B, 3), pose maps (B, T, H, W, 2) when the config
        has `view_cameras` -> F (B, T, H, W, 4) float32."""
        t = model_input.shape[1]
        cond = jnp.broadcast_to(condition[:, None], (condition.shape[0], t, *condition.shape[1:]))
        parts = [model_input, cond.astype(model_input.dtype)]
        if self.config.view_cameras is not None:
            if maps is None:
                raise ValueError("this world model draws pose maps (view_cameras): pass `maps`")
            parts.append(maps.astype(model_input.dtype))
        return self.unet(jnp.concatenate(parts, axis=-1), c_noise, context, added_time_ids)

    def network_from_poses(self, model_input, condition, c_noise, poses, text_embeds, ids):
        """`context` then `__call__` (also what `init` runs, so every parameter exists)."""
        ctx = self.context(poses, text_embeds)
        return self(model_input, condition, c_noise, ctx, ids, maps_for(self.config, poses))


def maps_for(config: CtrlWorldConfig, poses: jax.Array) -> jax.Array | None:
    """Pose maps of normalised poses (B, T, 7) when the config draws them, else None."""
    return None if config.view_cameras is None else pose_maps(poses, config)


def added_time_ids(config: CtrlWorldConfig, batch: int, noise_aug: float) -> jax.Array:
    """[fps, motion_bucket_id, noise_aug] per example (B, 3). Ctrl-World feeds fps = 7 (no -1)."""
    ids = jnp.asarray([config.fps, config.motion_bucket_id, noise_aug], jnp.float32)
    return jnp.broadcast_to(ids, (batch, 3))


def init_params(model: CtrlWorld, rng: jax.Array, batch: int = 1) -> dict:
    """Random parameters (boxed with logical axes) for the config's latent shapes (jitted: one
    compile instead of thousands of eagerly dispatched ops)."""
    cfg = model.config
    h, w = cfg.num_views * cfg.view_latent_shape[0], cfg.view_latent_shape[1]
    t, lat = cfg.num_frames, cfg.vae.latent_channels

    def init(rng):
        return model.init(
            rng,
            jnp.zeros((batch, t, h, w, lat)),
            jnp.zeros((batch, h, w, lat)),
            jnp.zeros((batch,)),
            jnp.zeros((batch, t, cfg.action_dim)),
            jnp.zeros((batch, cfg.text_dim)),
            added_time_ids(cfg, batch, 0.0),
            method=CtrlWorld.network_from_poses,
        )["params"]

    return jax.jit(init)(rng)


def world_model_loss(
    model: CtrlWorld, params, batch: dict, rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Ctrl-World's training loss for one batch: `diffusion_loss` with this model.

    batch: "latents" (B, T, H, W, 4) VAE-scaled, "poses" (B, T, 7) normalised, "text_embeds"
    (B, text_dim), optional "weights" (B,) (Eq. 2 co-training weights).
    """
    cfg = model.config
    b = batch["latents"].shape[0]
    k_drop, k_loss = jax.random.split(rng)
    latents, condition = batch["latents"], None
    if cfg.residual_scale:
        condition = latents[:, cfg.num_history]
        latents = to_residuals(latents, condition, cfg.residual_scale)
    ctx = model.apply({"params": params}, batch["poses"], batch["text_embeds"], method="context")
    # CFG dropout: the whole (action + text) context is zeroed for 5% of the examples.
    keep = jax.random.uniform(k_drop, (b,)) >= cfg.cfg_dropout
    ctx = ctx * keep[:, None, None, None].astype(ctx.dtype)
    maps = maps_for(cfg, batch["poses"])
    if maps is not None:  # dropped with the context: the unconditional branch sees no pose
        maps = maps * keep[:, None, None, None, None].astype(maps.dtype)
    ids = added_time_ids(cfg, b, cfg.train_noise_aug)

    def network(model_input, condition, c_noise):
        return model.apply({"params": params}, model_input, condition, c_noise, ctx, ids, maps)

    return diffusion_loss(
        network,
        latents,
        k_loss,
        num_history=cfg.num_history,
        weights=batch.get("weights"),
        p_mean=cfg.p_mean,
        p_std=cfg.p_std,
        history_sigma_std=cfg.history_sigma_std,
        condition_sigma_max=cfg.condition_sigma_max,
        condition_scale=1.0 / cfg.vae.scaling_factor,
        condition=condition,
    )


def to_residuals(latents: jax.Array, current: jax.Array, scale: float) -> jax.Array:
    """(B, T, ...) frames -> scale * (frame - current (B, ...)), the residual-space variable."""
    return scale * (latents - current[:, None])


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> jax.Array:
    """(num_steps + 1,) descending Karras sigmas with a final 0 (diffusers' Euler schedule)."""
    ramp = jnp.linspace(0.0, 1.0, num_steps)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return jnp.concatenate([sigmas, jnp.zeros((1,))]).astype(jnp.float32)


def sample_future(
    network,
    history: jax.Array,
    condition: jax.Array,
    context: jax.Array,
    rng: jax.Array,
    *,
    num_future: int,
    sigmas: jax.Array,
    min_guidance: float = 1.0,
    max_guidance: float = 2.0,
) -> jax.Array:
    """Euler EDM sampling of the future chunk with per-frame classifier-free guidance.

    `network(model_input (N, T, H, W, C), condition (N, H, W, C), c_noise (N,), context
    (N, T, 1, D)) -> F (N, T, H, W, C)`; history (B, Th, H, W, C) clean scaled latents;
    condition (B, H, W, C) already unscaled; context (B, T, 1, D); sigmas from `karras_sigmas`.
    Returns x0 of the chunk (B, num_future, H, W, C) in float32.

    Each step: future x enters as x/sqrt(s^2+1) after the clean history; with guidance the batch
    is [uncond (zero context), cond] and out = u + w_f (c - u), w_f = linspace(min, max, F)
    over the predicted frames; x0 = c_out out + c_skip x; x <- x + (x - x0)/s (s' - s).
    """
    b, th = history.shape[:2]
    shape = (b, num_future, *history.shape[2:])
    # diffusers' init_noise_sigma for "leading" spacing: sqrt(sigma_max^2 + 1), not sigma_max.
    x = jax.random.normal(rng, shape, jnp.float32) * jnp.sqrt(sigmas[0] ** 2 + 1.0)
    guided = max_guidance > 1.0
    w = jnp.linspace(min_guidance, max_guidance, num_future).reshape(1, num_future, 1, 1, 1)
    if guided:
        history2 = jnp.concatenate([history, history])
        condition2 = jnp.concatenate([condition, condition])
        context2 = jnp.concatenate([jnp.zeros_like(context), context])

    def step(x, sig):
        sigma, sigma_next = sig[0], sig[1]
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma)
        future_in = (x * c_in).astype(history.dtype)
        if guided:
            model_input = jnp.concatenate([history2, jnp.concatenate([future_in, future_in])], 1)
            out = network(model_input, condition2, jnp.full((2 * b,), c_noise), context2)
            out = out[:, th:].astype(jnp.float32)
            uncond, cond = out[:b], out[b:]
            out = uncond + w * (cond - uncond)
        else:
            model_input = jnp.concatenate([history, future_in], axis=1)
            out = network(model_input, condition, jnp.full((b,), c_noise), context)
            out = out[:, th:].astype(jnp.float32)
        x0 = c_out * out + c_skip * x
        x = x + (x - x0) / sigma * (sigma_next - sigma)
        return x, None

    pairs = jnp.stack([sigmas[:-1], sigmas[1:]], axis=1)
    x, _ = jax.lax.scan(step, x, pairs)
    return x


@functools.partial(jax.jit, static_argnums=(0,))
def predict(
    model: CtrlWorld,
    params,
    history: jax.Array,
    current: jax.Array,
    poses: jax.Array,
    text_embeds: jax.Array,
    rng: jax.Array,
) -> jax.Array:
    """One chunk: history (B, Th, H, W, 4) and current (B, H, W, 4) scaled latents, normalised
    poses (B, Th + F, 7) (memory poses then the chunk's), text (B, text_dim) ->
    predicted chunk (B, F, H, W, 4) whose frame 0 re-predicts the current frame."""
    cfg = model.config
    b = history.shape[0]
    ctx = model.apply({"params": params}, poses, text_embeds, method="context")
    ids = added_time_ids(cfg, 2 * b if cfg.max_guidance > 1.0 else b, cfg.sample_noise_aug)
    maps = maps_for(cfg, poses)
    if maps is not None and cfg.max_guidance > 1.0:  # [unconditional (no pose), conditional]
        maps = jnp.concatenate([jnp.zeros_like(maps), maps])

    def network(model_input, condition, c_noise, context):
        return model.apply({"params": params}, model_input, condition, c_noise, context, ids, maps)

    if cfg.residual_scale:
        history = to_residuals(history, current, cfg.residual_scale)
    chunk = sample_future(
        network,
        history,
        current / cfg.vae.scaling_factor,
        ctx,
        rng,
        num_future=cfg.num_future,
        sigmas=karras_sigmas(cfg.num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho),
        min_guidance=cfg.min_guidance,
        max_guidance=cfg.max_guidance,
    )
    if cfg.residual_scale:
        chunk = current[:, None].astype(chunk.dtype) + chunk / cfg.residual_scale
    return chunk


def init_memory(config: CtrlWorldConfig, first: jax.Array, first_pose: jax.Array, steps: int):
    """Rollout buffer for `steps` chunks: (latents (B, N, H, W, C), poses (B, N, 7), length).

    Starts with `initial_buffer_copies` copies of the first observation, like Ctrl-World's
    `his_cond`; capacity N leaves room for one entry per chunk.
    """
    n0 = config.initial_buffer_copies
    cap = n0 + steps
    lat = jnp.zeros((first.shape[0], cap, *first.shape[1:]), first.dtype)
    lat = lat.at[:, :n0].set(first[:, None])
    pos = jnp.zeros((first.shape[0], cap, first_pose.shape[-1]), first_pose.dtype)
    pos = pos.at[:, :n0].set(first_pose[:, None])
    return lat, pos, jnp.asarray(n0, jnp.int32)


def memory_frames(memory, history_idx: tuple[int, ...]):
    """Memory frames by buffer index (0 = first observation, -k = k-th most recent entry):
    (latents (B, len(idx), H, W, C), poses (B, len(idx), 7))."""
    lat, pos, length = memory
    idx = jnp.asarray(history_idx, jnp.int32)
    idx = jnp.where(idx < 0, length + idx, idx)
    return jnp.take(lat, idx, axis=1), jnp.take(pos, idx, axis=1)


def append_memory(memory, latent: jax.Array, pose: jax.Array):
    """Append one frame (B, H, W, C) and its pose (B, 7) at position `length`."""
    lat, pos, length = memory
    lat = jax.lax.dynamic_update_index_in_dim(lat, latent.astype(lat.dtype), length, axis=1)
    pos = jax.lax.dynamic_update_index_in_dim(pos, pose.astype(pos.dtype), length, axis=1)
    return lat, pos, length + 1


def rollout(
    model: CtrlWorld,
    params,
    first: jax.Array,
    first_pose: jax.Array,
    pose_chunks: jax.Array,
    text_embeds: jax.Array,
    rng: jax.Array,
) -> jax.Array:
    """Autoregressive imagination: first latent (B, H, W, 4) and its normalised pose (B, 7),
    pose chunks (B, K, F, 7) (each chunk's first pose = the current pose) -> predicted chunks
    (B, K, F, H, W, 4). After each chunk the last predicted frame and pose join the buffer and
    become the next chunk's current frame; memory frames are read at `config.history_idx`."""
    cfg = model.config
    k = pose_chunks.shape[1]
    memory = init_memory(cfg, first, first_pose, k)
    chunks = []
    for i, key in enumerate(jax.random.split(rng, k)):
        history, history_poses = memory_frames(memory, cfg.history_idx)
        current = memory_frames(memory, (-1,))[0][:, 0]
        poses = jnp.concatenate([history_poses, pose_chunks[:, i]], axis=1)
        chunk = predict(model, params, history, current, poses, text_embeds, key)
        chunks.append(chunk)
        memory = append_memory(memory, chunk[:, -1], pose_chunks[:, i, -1])
    return jnp.stack(chunks, axis=1)
