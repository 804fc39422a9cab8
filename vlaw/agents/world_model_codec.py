"""The world model's frame codec: a pixel packing or a VAE, and the scales measured for it.

Latent or pixel space (`world_model.space`). The diffusion runs on "latents" encoded on the
fly inside the train step (one sample of the posterior, as Ctrl-World stores them), with the
codec's parameters in the same tree and frozen (`trainable`), so every checkpoint is
self-contained.
- `pixel` (the tiny/sim default): the codec is `VAEConfig.pixel_codec`, a lossless packing of
  `patch` x `patch` pixel blocks onto channels, so the UNet's grid is the latent variant's and
  nothing is trained first; the scale is 1/std of the training pixels (`vae.kind = "pixels"`).
- `latent`, `paper`: the SVD VAE, from `world_model.vae_init_from` (a diffusers `vae/`
  safetensors file or a Ctrl-World `.pt` holding `vae.` tensors) or else from the `vae.`
  tensors of `world_model.train.init_from`; scaling factor 0.18215.
- `latent`, `tiny`/`sim`: no pretrained VAE exists for sim frames, so the phase first trains the
  small VAE (`VAEConfig.preset`) as an autoencoder on the same windows (per-view 5-frame clips
  through the temporal decoder; pixel MSE + `vae_kl_weight` x KL), through the same trainer,
  into `<workdir>/checkpoints/vae/`, once: later iterations reuse it, frozen. Its scaling
  factor is then measured, 1/std of the training latents (how SD's 0.18215 was chosen), so
  the EDM preconditioning's sigma_data = 1 holds; it is stored in `vae.json`.

Why pixels at tiny/sim: measured on scoop (tiny: 8x16 views, 6 demos + 2 rollouts, batch 4,
600 steps, 2 shared CPU cores), the latent route spent 157 s training the VAE and reached
18.5 dB held-out prediction PSNR under its own 18.9 dB reconstruction ceiling; pixel space
reached 20.5 dB in less total time, with no ceiling. `world_model.diffuse_residuals` (tiny/sim)
then diffuses each frame's change from the current frame (`CtrlWorldConfig.residual_scale`,
measured as 1/std of those changes): 24.3 dB at 600 steps against 24.6 dB for copying the
current frame. With residuals a model trained from scratch starts from "nothing moves";
without them it must first learn to copy the condition image through the UNet, which it had
not done after 600 steps (22.5 dB on the current frame itself). Finally the training noise
is centred at large sigma (`world_model.noise_p_mean`, `noise_p_std` = 1.0, 1.0 at tiny/sim;
Ctrl-World's 0.7, 1.6 at paper), where a residual's content is decided: 24.9 dB at 600 steps
and 25.4 dB at 1500, against 24.4 dB for the copy (benchmarks/RESULTS.md has both tables).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlaw.agents.world_model import (
    VAE_SPEC_FILE,
    model_config,
    pixel_size,
    restore_vae,
    stack_frames,
    vae_init_fn,
    world_model_windows,
)
from vlaw.data import mixture, windows
from vlaw.data.atomic_json import read_json, write_json
from vlaw.models.world_model.vae import TemporalVAE, encode_latents
from vlaw.train import checkpoints, trainer

# --------------------------------------------------------------------------------------------
# The VAE: trained first at tiny/sim, imported at paper.


def vae_loss_fn(vae: TemporalVAE, kl_weight: float):
    """Autoencoder loss on clips: batch "clips" (N, F, H, W, 3) uint8 -> pixel MSE in [-1, 1]
    of the temporally decoded posterior sample + kl_weight x KL(q(z|x) || N(0, I))."""

    def loss_fn(params, batch, rng):
        clips = batch["clips"].astype(jnp.float32) / 127.5 - 1.0
        n, f = clips.shape[:2]
        frames = clips.reshape(n * f, *clips.shape[2:])
        mean, logvar = vae.apply({"params": params}, frames, method=TemporalVAE.encode)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
        recon = vae.apply({"params": params}, z, f, method=TemporalVAE.decode)
        mse = jnp.mean(jnp.square(recon - frames))
        kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
        return mse + kl_weight * kl, {"mse": mse, "kl": kl, "latent_std": jnp.std(mean)}

    return loss_fn


def vae_clips(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host side: the current + future frames of each view as clips (B*V, F, H, W, 3)."""
    chunk = np.concatenate([batch["current_frame"][:, None], batch["future_frames"]], axis=1)
    b, f, v = chunk.shape[:3]
    return {"clips": np.moveaxis(chunk, 2, 1).reshape(b * v, f, *chunk.shape[3:])}


def _inverse_std(batches, values_of, num_batches: int = 4) -> float:
    """1 / std of `values_of(batch)` over the next `num_batches` batches: the scale that gives
    a diffused variable unit spread (EDM's sigma_data = 1)."""
    values = [np.asarray(values_of(next(batches))).ravel() for _ in range(num_batches)]
    return float(1.0 / max(np.std(np.concatenate(values)), 1e-6))


def _measure_scaling_factor(vae, params, batches) -> float:
    """1 / std of the VAE posterior means over a few training batches (SD's recipe)."""
    encode = jax.jit(lambda p, x: vae.apply({"params": p}, x, method=TemporalVAE.encode)[0])

    def means(batch):
        clips = vae_clips(batch)["clips"]
        return encode(params, clips.reshape(-1, *clips.shape[2:]).astype(np.float32) / 127.5 - 1)

    return _inverse_std(batches, means)


def train_vae(
    config: ml_collections.ConfigDict,
    directory: str,
    sources: Sequence[mixture.Source],
    exclude: Sequence[tuple[str, int]],
    *,
    seed: int,
    progress: bool = True,
) -> tuple[Any, dict]:
    """Trains (or resumes, or finds finished) the tiny/sim VAE in `directory`; returns
    (params, vae.json)."""
    w = config.world_model
    spec_path = os.path.join(directory, VAE_SPEC_FILE)
    model_cfg = model_config(config)
    vae = TemporalVAE(dataclasses.replace(model_cfg.vae, dtype=w.vae_train.compute_dtype))
    image_size = pixel_size(model_cfg)
    vae_train = ml_collections.ConfigDict(w.vae_train.to_dict())
    # vae_train.batch_size counts clips (one view's chunk); each window gives one per view.
    if int(vae_train.batch_size) % windows.NUM_VIEWS:
        raise ValueError(
            f"world_model.vae_train.batch_size={vae_train.batch_size} must be a multiple of "
            f"{windows.NUM_VIEWS} (one clip per camera view of each window)"
        )
    batch_size = int(vae_train.batch_size) // windows.NUM_VIEWS  # global, in windows
    batches = world_model_windows(
        config, sources, batch_size=batch_size, seed=seed, image_size=image_size, exclude=exclude
    )
    try:
        state = trainer.train(
            vae_train,
            config.ckpt,
            config.mesh,
            workdir=directory,
            init_fn=vae_init_fn(vae, image_size),
            loss_fn=vae_loss_fn(vae, float(w.vae_kl_weight)),
            batches=batches,
            host_fn=vae_clips,
            # vae_train.init_from: a vlaw VAE run to start from (the trainer reads no config).
            initial_params=(
                checkpoints.params_loader(vae_train.init_from) if vae_train.init_from else None
            ),
            seed=seed,
            progress=progress,
        )
        params = jax.device_get(state.params)
        if os.path.exists(spec_path):
            spec = read_json(spec_path)
        else:
            # Measured on batches the training run has not seen (the iterator has moved on).
            spec = {
                "variant": str(w.variant),
                "scaling_factor": _measure_scaling_factor(vae, params, batches),
                "steps": int(jax.device_get(state.step)),
                "final": (trainer.read_metrics(directory) or [{}])[-1],
            }
            write_json(spec_path, spec)
    finally:
        batches.close()
    return params, spec


# --------------------------------------------------------------------------------------------
# A run's codec: where it comes from, and its scales.


def prepare_vae(config, vae_directory: str, sources, exclude, *, seed: int, progress: bool) -> dict:
    """The VAE's provenance and scaling factor; trains it first (into `vae_directory`, with
    `seed`) at tiny/sim when needed."""
    w = config.world_model
    if w.space == "pixel":
        return _pixel_codec_source(config, sources, exclude, seed=seed)
    if w.vae_init_from:
        return {"kind": "import", "path": str(w.vae_init_from), "scaling_factor": None}
    if w.variant == "paper":
        return {"kind": "ctrl_world_checkpoint", "path": "", "scaling_factor": None}
    start = time.time()
    _, spec = train_vae(config, vae_directory, sources, exclude, seed=seed, progress=progress)
    return {
        "kind": "trained",
        "path": vae_directory,
        "scaling_factor": spec["scaling_factor"],
        "seconds": round(time.time() - start, 2),
        "final_loss": spec["final"].get("loss"),
        "final_mse": spec["final"].get("mse"),
    }


def _pixel_codec_source(config, sources, exclude, *, seed: int) -> dict:
    """Pixel space: nothing to train; the scaling factor is 1/std of the training pixels, so
    EDM's sigma_data = 1 holds as it does for a VAE's latents."""
    model_cfg = model_config(config)
    vae = TemporalVAE(model_cfg.vae)
    batches = world_model_windows(
        config,
        sources,
        batch_size=max(1, int(config.world_model.vae_train.batch_size) // windows.NUM_VIEWS),
        seed=seed,
        image_size=pixel_size(model_cfg),
        exclude=exclude,
    )
    try:
        scale = _measure_scaling_factor(vae, {}, batches)
    finally:
        batches.close()
    return {"kind": "pixels", "path": "", "scaling_factor": scale}


def measure_residual_scale(
    config, vae_source, scaling_factor, sources, exclude, *, seed: int
) -> float:
    """1 / std of (frame - current frame) in diffusion units over a few training batches, so
    the residuals, like the frames, have unit scale (EDM's sigma_data = 1)."""
    if vae_source["kind"] not in ("pixels", "trained"):
        raise ValueError(
            "world_model.diffuse_residuals needs a pixel-space model or a VAE trained by this "
            f"phase (this run's VAE comes from {vae_source['kind']!r}); set it to False"
        )
    model_cfg = model_config(config, scaling_factor)
    vae = TemporalVAE(model_cfg.vae)
    image_size = pixel_size(model_cfg)
    params = (
        {} if vae_source["kind"] == "pixels" else restore_vae(vae_source["path"], vae, image_size)
    )
    th = model_cfg.num_history
    encode = jax.jit(lambda p, x: encode_latents(vae, p, x))

    def residuals(batch):
        latents = np.asarray(encode(params, stack_frames(batch).astype(np.float32) / 127.5 - 1))
        return np.delete(latents - latents[:, th : th + 1], th, axis=1)  # all but the current

    batches = world_model_windows(
        config,
        sources,
        batch_size=4,
        seed=seed,
        image_size=image_size,
        exclude=exclude,
    )
    try:
        return _inverse_std(batches, residuals)
    finally:
        batches.close()
