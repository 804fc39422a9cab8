"""The `train_world_model` phase: Ctrl-World on D_real (+ lambda * DROID), paper Eq. 1-2.

    train_world_model_phase(config, workdir, iteration)

Data. At iteration k the world model trains on `<workdir>/demos` and every
`<workdir>/iter_{0..k}/real`, all of it, successes and failures alike: a world model must
predict what the robot's actions do, and failed rollouts are exactly the states the policy
visits (the paper's point in fine-tuning it on D_real). The demos are included because they
are real transitions of the same station and, at iteration 0, a good half of the data. With
`config.data.droid_path` set, windows are drawn from DROID with weight lambda =
`config.data.droid_weight` (Eq. 2 as a sampling mixture, `vlaw.data.mixture`). Windows are
Ctrl-World's (history every 4 or 8 frames, 15 % without history), read by `vlaw.data.windows`
(`world_model_windows`, each window with its instruction) and resized by tf.data to the
model's pixel size (`view_latent_shape` x the VAE factor: tiny 8x16, sim 64x64, paper 192x320
as Ctrl-World).
The last `world_model.eval_holdout_episodes` episodes of the newest `iter_k/real` are held out
of training for the prediction check below.

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
measured as 1/std of those changes): 24.3 dB at 600 steps, 24.4 dB at 1500, against 24.6 dB
for copying the current frame (benchmarks/RESULTS.md has the table). With residuals a model
trained from scratch starts from "nothing moves"; without them it must first learn to copy the
condition image through the UNet, which it had not done after 600 steps (22.5 dB on the
current frame itself). Training noise and the sampler's sigma_max are EDM's from-scratch
values at tiny/sim (`world_model.noise_p_mean`, `noise_p_std`, `sigma_max`), Ctrl-World's at
paper.

Text. `paper`: CLIP ViT-B/32 `text_embeds` per instruction (`vlaw.convert.ctrl_world.
clip_text_embeddings`, from the local `world_model.clip_path`). `tiny`/`sim`: a fixed vector
per distinct instruction string, N(0, 0.5^2) entries from a generator seeded by the string's
SHA-256: deterministic across runs and machines, distinct per task, and, like CLIP's, frozen.
Either way the table of every instruction seen is written to `text_embeddings.json` beside
the checkpoints.

Weights, in order: resume (the trainer restores the newest checkpoint of this iteration's
directory with its data position); else the previous iteration's checkpoint; else
`world_model.train.init_from` (a vlaw run's checkpoint directory, or Ctrl-World's released
`checkpoint-10000.pt` converted by `vlaw.convert.ctrl_world`); else a fresh UNet.
Checkpoints: `<workdir>/checkpoints/world_model/iter_NN/` (+ `world_model.json`, the spec).

Check. After training, one chunk is predicted for `eval_windows` windows of the held-out
episodes (history and current frame given, `predict` with the config's sampler) and decoded;
the summary reports the PSNR of the predicted future frames against the true ones, beside the
copy-the-current-frame baseline and the VAE's own reconstruction PSNR (the ceiling).

Mesh guard: jax 0.10.2 gives wrong UNet values with ONE example per batch shard when weights
are sharded over both fsdp and tensor (tests/models/world_model/test_sharding_bug.py); the
phase refuses such a configuration (`check_mesh_batch`).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vlaw.data import droid, mixture, rlds, transforms, windows
from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model.vae import TemporalVAE, VAEConfig, encode_latents
from vlaw.train import mesh as mesh_lib
from vlaw.train import optim

SPEC_FILE, VAE_SPEC_FILE, TEXT_FILE = "world_model.json", "vae.json", "text_embeddings.json"
HISTORY_SPACING = (4, 8)  # Ctrl-World's training recipe (ctrl_world.md §1.3)


def checkpoint_dir(workdir: str, iteration: int) -> str:
    return os.path.join(workdir, "checkpoints", "world_model", f"iter_{iteration:02d}")


def vae_checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints", "vae")


def _latest_step(directory: str) -> int | None:
    steps = [int(os.path.basename(p)) for p in glob.glob(os.path.join(directory, "[0-9]*"))]
    steps = [s for s in steps if os.path.isdir(os.path.join(directory, str(s)))]
    return max(steps) if steps else None


def _write_json(path: str, payload: dict) -> None:
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(temp, path)


def _seed(config, iteration: int, salt: int) -> int:
    # One seed per (run, phase, iteration): iterations draw different noise and data orders.
    sequence = np.random.SeedSequence([int(config.seed), 5, salt, iteration])
    return int(sequence.generate_state(1)[0] >> 1)


# --------------------------------------------------------------------------------------------
# Configuration.


def model_config(
    config: ml_collections.ConfigDict,
    scaling_factor: float | None = None,
    residual_scale: float = 0.0,
):
    """The CtrlWorldConfig of `world_model.variant` with the run's frames, dtypes and remat.

    `num_history`/`num_future` come from `config.world_model` (the data windows use them);
    when they differ from the preset's, the memory indices fall back to Ctrl-World's own
    (6 history frames) or an evenly spaced set.
    """
    w = config.world_model
    t = w.train
    remat = t.remat_policy if t.remat_policy not in ("", None) else "none"
    base = cw.CtrlWorldConfig.preset(w.variant)
    unet = dataclasses.replace(
        base.unet, dtype=t.compute_dtype, param_dtype=t.param_dtype, remat_policy=remat
    )
    vae = dataclasses.replace(base.vae, dtype=t.compute_dtype, param_dtype=t.param_dtype)
    if w.space == "pixel":
        # The UNet grid is the latent variant's: `patch` x `patch` pixels per cell, on channels.
        patch = int(w.pixel_patch) or vae.downsample_factor
        vae = VAEConfig.pixel_codec(patch, dtype=vae.dtype, param_dtype=vae.param_dtype)
        channels = vae.latent_channels
        unet = dataclasses.replace(unet, in_channels=2 * channels, out_channels=channels)
    elif w.space != "latent":
        raise ValueError(f"world_model.space={w.space!r}; choose 'latent' or 'pixel'")
    if scaling_factor is not None:
        vae = dataclasses.replace(vae, scaling_factor=float(scaling_factor))
    overrides: dict[str, Any] = dict(unet=unet, vae=vae)
    num_history, num_future = int(w.num_history), int(w.num_future)
    if num_history != base.num_history:
        default = cw.CtrlWorldConfig().history_idx
        idx = (
            default
            if len(default) == num_history
            else (0,) + tuple(-3 * k for k in range(num_history - 1, 0, -1))
        )
        overrides.update(history_idx=idx, initial_buffer_copies=4 * num_history)
    overrides.update(
        residual_scale=float(residual_scale),
        num_history=num_history,
        num_future=num_future,
        num_steps=int(w.num_sampling_steps),
        max_guidance=float(w.max_guidance),
        p_mean=float(w.noise_p_mean),
        p_std=float(w.noise_p_std),
        sigma_max=float(w.sigma_max),
    )
    return dataclasses.replace(base, **overrides)


def model_config_from_spec(config: ml_collections.ConfigDict, spec: dict):
    """`model_config` with the scales a run measured and stored in world_model.json."""
    return model_config(config, spec["scaling_factor"], spec.get("residual_scale", 0.0))


def pixel_size(model_cfg: cw.CtrlWorldConfig) -> tuple[int, int]:
    """(H, W) of one camera view as the model sees it: latent view size x VAE factor."""
    factor = model_cfg.vae.downsample_factor
    return model_cfg.view_latent_shape[0] * factor, model_cfg.view_latent_shape[1] * factor


def check_mesh_batch(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Refuses fewer than 2 examples per batch shard when fsdp > 1 and tensor > 1.

    jax 0.10.2's SPMD partitioner returns wrong values for the UNet's spatial -> temporal token
    re-layout when a batch shard holds one example and the weights are sharded over both fsdp
    and tensor (tests/models/world_model/test_sharding_bug.py reproduces it in pure JAX); the
    loss and gradients would be silently wrong, so this is an error, not a warning.
    """
    num_devices = len(jax.devices()) if num_devices is None else num_devices
    data, fsdp, tensor = mesh_lib.resolve_mesh_shape(config.mesh, num_devices)
    batch = int(config.world_model.train.batch_size)
    per_shard = batch // (data * fsdp)
    if fsdp > 1 and tensor > 1 and per_shard < 2:
        raise ValueError(
            f"world_model.train.batch_size={batch} on mesh data={data} fsdp={fsdp} "
            f"tensor={tensor} puts {per_shard} example(s) on each batch shard; with weights "
            "sharded over both fsdp and tensor, jax 0.10.2 computes the UNet's temporal "
            "re-layout wrongly at one example per shard (see "
            "tests/models/world_model/test_sharding_bug.py). Use >= 2 examples per shard "
            "(batch_size >= 2 * data * fsdp), or fsdp=1 or tensor=1."
        )


# --------------------------------------------------------------------------------------------
# Data.


def training_dataset_dirs(workdir: str, iteration: int) -> list[str]:
    """demos, then iter_00/real ... iter_k/real: those that exist."""
    from vlaw.pipeline import iteration_dir

    candidates = [os.path.join(workdir, "demos")]
    candidates += [os.path.join(iteration_dir(workdir, i), "real") for i in range(iteration + 1)]
    return [d for d in candidates if os.path.isdir(d)]


def heldout_episodes(dataset_dir: str, count: int) -> list[tuple[str, int]]:
    """(shard path, record index) of the last `count` episodes of `dataset_dir` in file order,
    or none when that would leave the dataset empty."""
    layout = rlds.open_dataset(dataset_dir)
    if count <= 0 or layout.num_episodes <= count:
        return []
    every = [
        (path, index)
        for path, length in zip(layout.shard_paths, layout.shard_lengths, strict=True)
        for index in range(length)
    ]
    return every[-count:]


def world_model_windows(
    config: ml_collections.ConfigDict,
    sources: Sequence[mixture.Source],
    *,
    batch_size: int,
    seed: int,
    image_size: tuple[int, int],
    exclude: Sequence[tuple[str, int]] = (),
) -> windows.WindowBatches:
    """`windows.world_model_batches` over `sources` at the model's pixel size, minus the
    `exclude`d (shard path, record index) episodes (the held-out ones).

    Batches: history_frames (B, Th, V, H, W, 3) uint8, current_frame (B, V, H, W, 3),
    future_frames (B, F-1, V, H, W, 3), history_poses (B, Th, 7), future_poses (B, F, 7),
    action_chunk, instruction (B,) bytes. `batch_size` is the global batch.
    """
    return windows.world_model_batches_from_config(
        config,
        (),
        sources=list(sources),
        batch_size=batch_size,
        image_size=image_size,
        seed=seed,
        exclude=exclude,
    )


def stack_frames(batch: dict[str, np.ndarray]) -> np.ndarray:
    """History, current and future frames -> (B, Th + F, V, H, W, 3) uint8, oldest first."""
    return np.concatenate(
        [batch["history_frames"], batch["current_frame"][:, None], batch["future_frames"]], axis=1
    )


class TextEmbeddings:
    """Instruction -> frozen text vector (text_dim,), cached and saved as JSON.

    `clip_path` set: CLIP ViT-B/32 `text_embeds` (Ctrl-World's text path). Empty: the seeded
    per-instruction vector of the module docstring (tiny/sim, where no CLIP is at hand).
    """

    def __init__(self, text_dim: int, clip_path: str = "", path: str = ""):
        self.text_dim, self.clip_path, self.path = text_dim, clip_path, path
        self.table: dict[str, np.ndarray] = {}
        if path and os.path.exists(path):
            with open(path) as f:
                stored = json.load(f)
            self.table = {k: np.asarray(v, np.float32) for k, v in stored["vectors"].items()}

    @property
    def kind(self) -> str:
        return "clip" if self.clip_path else "seeded_random"

    @staticmethod
    def seeded_vector(instruction: str, dim: int) -> np.ndarray:
        digest = hashlib.sha256(instruction.encode("utf-8")).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return (0.5 * rng.standard_normal(dim)).astype(np.float32)

    def __call__(self, instructions: Sequence[str]) -> np.ndarray:
        """(N,) strings -> (N, text_dim) float32."""
        missing = sorted({s for s in instructions if s not in self.table})
        if missing and self.clip_path:
            from vlaw.convert.ctrl_world import clip_text_embeddings

            vectors = clip_text_embeddings(missing, self.clip_path)
            if vectors.shape[-1] != self.text_dim:
                raise ValueError(
                    f"CLIP at {self.clip_path} gives {vectors.shape[-1]}-d embeddings; the model "
                    f"expects text_dim={self.text_dim}"
                )
            self.table.update(zip(missing, np.asarray(vectors, np.float32), strict=True))
        elif missing:
            self.table.update((s, self.seeded_vector(s, self.text_dim)) for s in missing)
        return np.stack([self.table[s] for s in instructions]).astype(np.float32)

    def save(self) -> None:
        vectors = {k: v.tolist() for k, v in sorted(self.table.items())}
        _write_json(self.path, {"kind": self.kind, "clip_path": self.clip_path, "vectors": vectors})


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


def _vae_init_fn(vae: TemporalVAE, image_size: tuple[int, int]):
    # .get: the pixel codec has no parameters, and Flax then returns no "params" collection.
    return lambda rng: vae.init(rng, jnp.zeros((1, *image_size, 3))).get("params", {})


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
    workdir: str,
    sources: Sequence[mixture.Source],
    exclude: Sequence[tuple[str, int]],
    *,
    progress: bool = True,
) -> tuple[Any, dict]:
    """Trains (or resumes, or finds finished) the tiny/sim VAE; returns (params, vae.json)."""
    from vlaw.train import trainer

    w = config.world_model
    directory = vae_checkpoint_dir(workdir)
    spec_path = os.path.join(directory, VAE_SPEC_FILE)
    model_cfg = model_config(config)
    vae = TemporalVAE(dataclasses.replace(model_cfg.vae, dtype=w.vae_train.compute_dtype))
    image_size = pixel_size(model_cfg)
    seed = _seed(config, 0, salt=1)
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
            init_fn=_vae_init_fn(vae, image_size),
            loss_fn=vae_loss_fn(vae, float(w.vae_kl_weight)),
            batches=batches,
            host_fn=vae_clips,
            seed=seed,
            progress=progress,
        )
        params = jax.device_get(state.params)
        if os.path.exists(spec_path):
            with open(spec_path) as f:
                spec = json.load(f)
        else:
            # Measured on batches the training run has not seen (the iterator has moved on).
            spec = {
                "variant": str(w.variant),
                "scaling_factor": _measure_scaling_factor(vae, params, batches),
                "steps": int(jax.device_get(state.step)),
                "final": (trainer.read_metrics(directory) or [{}])[-1],
            }
            _write_json(spec_path, spec)
    finally:
        batches.close()
    return params, spec


def _load_vae_params(path: str, vae_cfg: VAEConfig, image_size) -> Any:
    """The SVD VAE from a diffusers safetensors file or a Ctrl-World `.pt` (`vae.` prefix)."""
    from vlaw.convert.ctrl_world import convert_vae, load_torch_state_dict

    state_dict = load_torch_state_dict(path)
    prefix = "vae." if any(k.startswith("vae.") for k in state_dict) else ""
    return convert_vae(state_dict, vae_cfg, prefix=prefix)


# --------------------------------------------------------------------------------------------
# The world model.


def loss_curve(directory: str) -> list[dict]:
    path = os.path.join(directory, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def world_model_init_fn(model: cw.CtrlWorld, vae: TemporalVAE, image_size: tuple[int, int]):
    """rng -> {"world_model": CtrlWorld params, "vae": VAE params}, boxed (logical axes)."""

    def init(rng):
        k_model, k_vae = jax.random.split(rng)
        return {
            "world_model": cw.init_params(model, k_model),
            "vae": _vae_init_fn(vae, image_size)(k_vae),
        }

    return init


def world_model_loss_fn(model: cw.CtrlWorld, vae: TemporalVAE, compute_dtype: str):
    """Eq. 1 on a batch of frames: encode every frame with the frozen VAE (a posterior sample,
    as Ctrl-World trains), stack the views, then `ctrl_world.world_model_loss`.

    Batch: frames (B, T, V, H, W, 3) uint8, poses (B, T, 7) raw, text_embeds (B, text_dim).
    """
    cfg = model.config

    def loss_fn(params, batch, rng):
        k_encode, k_loss = jax.random.split(rng)
        pixels = batch["frames"].astype(jnp.float32) / 127.5 - 1.0
        latents = encode_latents(vae, params["vae"], pixels, k_encode)  # (B, T, V, h, w, 4)
        latents = jax.lax.stop_gradient(cw.stack_views(latents))
        wm_batch = {
            "latents": latents,
            "poses": cw.normalize_poses(batch["poses"], cfg),
            "text_embeds": batch["text_embeds"],
        }
        wm_params = optim.cast_for_compute(params["world_model"], compute_dtype)
        return cw.world_model_loss(model, wm_params, wm_batch, k_loss)

    return loss_fn


def world_model_host_fn(text: TextEmbeddings):
    def host_fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        instructions = [s.decode("utf-8") for s in batch["instruction"]]
        return {
            "frames": stack_frames(batch),
            "poses": np.concatenate([batch["history_poses"], batch["future_poses"]], axis=1),
            "text_embeds": text(instructions),
        }

    return host_fn


def _is_vlaw_run(path: str) -> bool:
    return os.path.isdir(path) and _latest_step(path) is not None


def _choose_init(config, workdir: str, iteration: int) -> dict:
    previous = checkpoint_dir(workdir, iteration - 1) if iteration > 0 else ""
    init_from = str(config.world_model.train.init_from or "")
    if previous and _latest_step(previous) is not None:
        return {"kind": "previous_iteration", "path": previous}
    if init_from:
        return {"kind": "vlaw" if _is_vlaw_run(init_from) else "ctrl_world", "path": init_from}
    return {"kind": "scratch", "path": ""}


def _prepare_vae(config, workdir, sources, exclude, *, progress: bool) -> dict:
    """The VAE's provenance and scaling factor; trains it first at tiny/sim when needed."""
    w = config.world_model
    if w.space == "pixel":
        return _pixel_codec_source(config, sources, exclude)
    if w.vae_init_from:
        return {"kind": "import", "path": str(w.vae_init_from), "scaling_factor": None}
    if w.variant == "paper":
        return {"kind": "ctrl_world_checkpoint", "path": "", "scaling_factor": None}
    start = time.time()
    _, spec = train_vae(config, workdir, sources, exclude, progress=progress)
    return {
        "kind": "trained",
        "path": vae_checkpoint_dir(workdir),
        "scaling_factor": spec["scaling_factor"],
        "seconds": round(time.time() - start, 2),
        "final_loss": spec["final"].get("loss"),
        "final_mse": spec["final"].get("mse"),
    }


def _pixel_codec_source(config, sources, exclude) -> dict:
    """Pixel space: nothing to train; the scaling factor is 1/std of the training pixels, so
    EDM's sigma_data = 1 holds as it does for a VAE's latents."""
    model_cfg = model_config(config)
    vae = TemporalVAE(model_cfg.vae)
    batches = world_model_windows(
        config,
        sources,
        batch_size=max(1, int(config.world_model.vae_train.batch_size) // windows.NUM_VIEWS),
        seed=_seed(config, 0, salt=1),
        image_size=pixel_size(model_cfg),
        exclude=exclude,
    )
    try:
        scale = _measure_scaling_factor(vae, {}, batches)
    finally:
        batches.close()
    return {"kind": "pixels", "path": "", "scaling_factor": scale}


def _initial_params(config, spec, model, vae, image_size, seed):
    """Imported weights for a fresh run (None: the trainer reads `train.init_from`)."""
    init, vae_source = spec["init"], spec["vae"]
    if init["kind"] in ("previous_iteration", "vlaw"):
        return None
    model_cfg = model.config
    if init["kind"] == "ctrl_world":
        from vlaw.convert.ctrl_world import convert_ctrl_world, load_torch_state_dict

        state_dict = load_torch_state_dict(init["path"])
        wm_params = convert_ctrl_world(state_dict, model_cfg)
    else:
        wm_params = nn.unbox(cw.init_params(model, jax.random.PRNGKey(seed)))
    if vae_source["kind"] == "pixels":
        vae_params = {}
    elif vae_source["kind"] == "trained":
        vae_params = _restore_vae(vae_source["path"], vae, image_size)
    elif vae_source["kind"] == "import":
        vae_params = _load_vae_params(vae_source["path"], model_cfg.vae, image_size)
    elif init["kind"] == "ctrl_world":
        from vlaw.convert.ctrl_world import convert_vae

        vae_params = convert_vae(state_dict, model_cfg.vae, prefix="vae.")
    else:
        raise ValueError(
            "world_model.variant='paper' needs the SVD VAE: set world_model.vae_init_from (a "
            "diffusers vae safetensors file) or world_model.train.init_from (Ctrl-World's "
            "checkpoint-10000.pt, which holds it under 'vae.')"
        )
    return {"world_model": wm_params, "vae": vae_params}


def _restore_on_one_device(directory: str, init_fn) -> Any:
    """The newest checkpoint's params under `directory`, on the default device."""
    from vlaw.train import checkpoints

    abstract = jax.eval_shape(lambda: nn.unbox(init_fn(jax.random.key(0))))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract
    )
    return checkpoints.restore_params(directory, target)


def _restore_vae(directory: str, vae: TemporalVAE, image_size) -> Any:
    return jax.device_get(_restore_on_one_device(directory, _vae_init_fn(vae, image_size)))


@dataclasses.dataclass
class TrainedWorldModel:
    """What imagination needs from a `train_world_model` run (`load_world_model`)."""

    model: cw.CtrlWorld
    vae: TemporalVAE
    params: Any  # {"world_model": CtrlWorld params, "vae": VAE params}, one device
    text: TextEmbeddings
    spec: dict  # world_model.json

    @property
    def pixel_size(self) -> tuple[int, int]:
        return pixel_size(self.model.config)


def load_world_model(
    config: ml_collections.ConfigDict, workdir: str, iteration: int
) -> TrainedWorldModel:
    """The newest checkpoint of iteration `iteration`'s world model with its VAE scale and its
    text-embedding table (new instructions get vectors the same way training made them)."""
    directory = checkpoint_dir(workdir, iteration)
    spec_path = os.path.join(directory, SPEC_FILE)
    if not os.path.exists(spec_path) or _latest_step(directory) is None:
        raise FileNotFoundError(
            f"no world model checkpoint in {directory}; run the train_world_model phase first"
        )
    with open(spec_path) as f:
        spec = json.load(f)
    _check_space(config, spec, directory)
    model_cfg = model_config_from_spec(config, spec)
    model, vae = cw.CtrlWorld(model_cfg), TemporalVAE(model_cfg.vae)
    init_fn = world_model_init_fn(model, vae, pixel_size(model_cfg))
    params = _restore_on_one_device(directory, init_fn)
    clip_path = str(config.world_model.clip_path or "")
    text = TextEmbeddings(model_cfg.text_dim, clip_path, os.path.join(directory, TEXT_FILE))
    return TrainedWorldModel(model, vae, params, text, spec)


def _measure_residual_scale(config, vae_source, scaling_factor, sources, exclude) -> float:
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
        {} if vae_source["kind"] == "pixels" else _restore_vae(vae_source["path"], vae, image_size)
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
        seed=_seed(config, 0, salt=3),
        image_size=image_size,
        exclude=exclude,
    )
    try:
        return _inverse_std(batches, residuals)
    finally:
        batches.close()


def _check_space(config, spec: dict, directory: str) -> None:
    """A checkpoint trained in pixel space cannot be read as a latent one, or the reverse."""
    trained_in = "pixel" if spec["vae"]["kind"] == "pixels" else "latent"
    if trained_in != config.world_model.space:
        raise ValueError(
            f"the world model in {directory} was trained in {trained_in} space but "
            f"world_model.space={config.world_model.space!r}; set it to {trained_in!r}"
        )


def _prepare(config, workdir, iteration, dataset_dirs, sources, exclude, *, progress) -> dict:
    """world_model.json: init, VAE source and scale, text embeddings. Written once per
    iteration, so a resumed run sees exactly the setup it started with."""
    directory = checkpoint_dir(workdir, iteration)
    spec_path = os.path.join(directory, SPEC_FILE)
    if os.path.exists(spec_path):
        with open(spec_path) as f:
            spec = json.load(f)
        _check_space(config, spec, directory)
        return spec
    os.makedirs(directory, exist_ok=True)
    init = _choose_init(config, workdir, iteration)
    if init["kind"] == "previous_iteration":
        with open(os.path.join(init["path"], SPEC_FILE)) as f:
            previous = json.load(f)
        _check_space(config, previous, init["path"])
        vae_source = previous["vae"]  # the same frozen VAE, carried in the params
    else:
        vae_source = _prepare_vae(config, workdir, sources, exclude, progress=progress)
    base_scale = cw.CtrlWorldConfig.preset(config.world_model.variant).vae.scaling_factor
    scaling_factor = vae_source["scaling_factor"] or base_scale
    if init["kind"] == "previous_iteration":
        residual_scale = previous.get("residual_scale", 0.0)
    elif config.world_model.diffuse_residuals:
        residual_scale = _measure_residual_scale(
            config, vae_source, scaling_factor, sources, exclude
        )
    else:
        residual_scale = 0.0
    spec = {
        "variant": str(config.world_model.variant),
        "iteration": iteration,
        "init": init,
        "vae": vae_source,
        "scaling_factor": scaling_factor,
        "residual_scale": residual_scale,
        "text_embeddings": "clip" if config.world_model.clip_path else "seeded_random",
        "dataset_dirs": list(dataset_dirs),
        "droid_path": str(config.data.droid_path or ""),
        "droid_weight": float(config.data.droid_weight),
        "heldout_episodes": [list(e) for e in exclude],
    }
    _write_json(spec_path, spec)  # last: its presence means "prepared"
    return spec


# --------------------------------------------------------------------------------------------
# Held-out prediction check.


def psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of uint8-range images (any shape), over all pixels."""
    mse = np.mean(np.square(prediction.astype(np.float64) - target.astype(np.float64)))
    return float(10.0 * np.log10(255.0**2 / max(mse, 1e-10)))


def evaluation_windows(
    config, episodes: Sequence[tuple[str, int]], dataset_dir: str, num_windows: int, image_size
) -> dict[str, Any]:
    """`num_windows` evenly spaced windows of the held-out episodes (history spacing 4):
    frames (N, T, V, H, W, 3) uint8 at the model's pixel size, poses (N, T, 7), instructions."""
    w = config.world_model
    layout = rlds.open_dataset(dataset_dir)
    wanted = {(str(p), int(i)) for p, i in episodes}
    shards = sorted({p for p, _ in episodes})
    frames, poses, instructions = [], [], []
    for raw in rlds.iter_raw_episodes(layout, shards):
        if (str(raw["shard_path"]), int(raw["record_index"])) not in wanted:
            continue
        episode = rlds.episode_from_raw(raw, layout)
        per_episode = max(1, -(-num_windows // len(episodes)))
        starts = np.linspace(0, episode.num_steps - 1, per_episode + 2)[1:-1].round().astype(int)
        idx = transforms.world_model_indices(
            episode.num_steps,
            num_history=int(w.num_history),
            num_future=int(w.num_future),
            frame_stride=int(w.frame_stride),
            history_spacing=HISTORY_SPACING[0],
            starts=starts,
        )
        steps = np.concatenate([idx["history"], idx["future"]], axis=1)  # (N, T)
        cams = np.stack([episode.observation[f"observation/{n}"] for n in droid.CAMERA_NAMES], 1)
        frames.append(_resize(cams, image_size)[steps])
        poses.append(droid.world_model_poses(episode.observation)[steps])
        instructions += [episode.instruction] * len(starts)
    return {
        "frames": np.concatenate(frames)[:num_windows],
        "poses": np.concatenate(poses)[:num_windows],
        "instructions": instructions[:num_windows],
    }


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., h, w, 3) uint8, antialiased (as the training pipeline)."""
    if images.shape[-3:-1] == tuple(size):
        return images
    out = jax.image.resize(
        jnp.asarray(images, jnp.float32), (*images.shape[:-3], *size, 3), "linear", antialias=True
    )
    return np.asarray(jnp.clip(jnp.round(out), 0, 255)).astype(np.uint8)


def evaluate_prediction(
    model: cw.CtrlWorld, vae: TemporalVAE, params, windows_: dict[str, Any], text, seed: int
) -> dict[str, float]:
    """One chunk per window from its history and current frame: PSNR of the decoded future
    frames vs the truth, beside copying the current frame and the VAE's reconstruction."""
    cfg = model.config
    th = cfg.num_history
    frames = jnp.asarray(windows_["frames"])  # (N, T, V, H, W, 3)
    pixels = frames.astype(jnp.float32) / 127.5 - 1.0
    encode = jax.jit(lambda p, x: cw.stack_views(encode_latents(vae, p, x)))
    decode = jax.jit(lambda p, z: cw.decode_views(vae, p, z, cfg.num_views, cfg.decode_chunk_size))
    latents = encode(params["vae"], pixels)  # posterior mode, (N, T, V*h, w, 4)
    poses = cw.normalize_poses(jnp.asarray(windows_["poses"]), cfg)
    text_embeds = jnp.asarray(text(windows_["instructions"]))
    chunk = cw.predict(
        model,
        params["world_model"],
        latents[:, :th],
        latents[:, th],
        poses,
        text_embeds,
        jax.random.PRNGKey(seed),
    )

    def to_uint8(latent_frames):
        views = jnp.moveaxis(decode(params["vae"], latent_frames), 1, 2)  # (N, F, V, H, W, 3)
        return np.asarray(jnp.clip(jnp.round((views + 1.0) * 127.5), 0, 255))

    truth = np.asarray(frames[:, th + 1 :])
    predicted = to_uint8(chunk)[:, 1:]
    reconstructed = to_uint8(latents[:, th:])[:, 1:]
    copied = np.broadcast_to(np.asarray(frames[:, th : th + 1]), truth.shape)
    return {
        "psnr_prediction": psnr(predicted, truth),
        "psnr_copy_current_frame": psnr(copied, truth),
        "psnr_vae_reconstruction": psnr(reconstructed, truth),
        "num_windows": int(truth.shape[0]),
    }


# --------------------------------------------------------------------------------------------
# The phase.


def train_world_model_phase(
    config: ml_collections.ConfigDict,
    workdir: str,
    iteration: int,
    *,
    stop_at_step: int | None = None,
    progress: bool = True,
) -> dict:
    """Algorithm 1's world-model update (see the module docstring). Returns the summary.

    `stop_at_step` ends the call early with a checkpoint, as a preemption would; calling again
    resumes exactly.
    """
    from vlaw.train import trainer

    check_mesh_batch(config)
    w = config.world_model
    dataset_dirs = training_dataset_dirs(workdir, iteration)
    if not dataset_dirs:
        raise FileNotFoundError(
            f"train_world_model: no dataset under {workdir} (demos, iter_NN/real); run the "
            "collect phase first"
        )
    newest_real = dataset_dirs[-1]
    exclude = heldout_episodes(newest_real, int(w.eval_holdout_episodes))
    sources = mixture.sources_from_config(dataset_dirs, config.data)
    spec = _prepare(config, workdir, iteration, dataset_dirs, sources, exclude, progress=progress)
    directory = checkpoint_dir(workdir, iteration)

    model_cfg = model_config_from_spec(config, spec)
    model = cw.CtrlWorld(model_cfg)
    vae = TemporalVAE(model_cfg.vae)
    image_size = pixel_size(model_cfg)
    seed = _seed(config, iteration, salt=2)
    text = TextEmbeddings(
        model_cfg.text_dim, str(w.clip_path or ""), os.path.join(directory, TEXT_FILE)
    )
    train_config = ml_collections.ConfigDict(w.train.to_dict())
    init_params = None
    if spec["init"]["kind"] in ("previous_iteration", "vlaw"):
        train_config.init_from = spec["init"]["path"]  # the trainer reads only its `params`
    else:
        train_config.init_from = ""
        if _latest_step(directory) is None:  # resuming needs no initial weights
            init_params = _initial_params(config, spec, model, vae, image_size, seed)

    batches = world_model_windows(
        config,
        sources,
        batch_size=int(train_config.batch_size),
        seed=seed,
        image_size=image_size,
        exclude=exclude,
    )
    start = time.time()
    try:
        state = trainer.train(
            train_config,
            config.ckpt,
            config.mesh,
            workdir=directory,
            init_fn=world_model_init_fn(model, vae, image_size),
            loss_fn=world_model_loss_fn(model, vae, train_config.compute_dtype),
            batches=batches,
            host_fn=world_model_host_fn(text),
            init_params=init_params,
            trainable=lambda path, leaf: path.startswith("world_model/"),
            seed=seed,
            progress=progress,
            stop_at_step=stop_at_step,
        )
    finally:
        batches.close()
    train_seconds = time.time() - start
    text.save()
    step = int(jax.device_get(state.step))
    curve = loss_curve(directory)
    losses = [entry["loss"] for entry in curve]
    summary = {
        "checkpoint": directory,
        "step": step,
        "init": spec["init"]["kind"],
        "vae": spec["vae"]["kind"],
        "vae_scaling_factor": spec["scaling_factor"],
        "text_embeddings": spec["text_embeddings"],
        "dataset_dirs": dataset_dirs,
        "co_trained_with_droid": bool(config.data.droid_path),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "nonfinite_count": int(jax.device_get(state.nonfinite_count)),
        "train_seconds": round(train_seconds, 2),
        "heldout_episodes": len(exclude),
    }
    if spec["vae"].get("seconds") is not None:
        summary["vae_train_seconds"] = spec["vae"]["seconds"]
        summary["vae_final_mse"] = spec["vae"].get("final_mse")
    if stop_at_step is not None and step < int(train_config.steps):
        return summary
    if int(w.eval_windows) > 0:
        start = time.time()
        episodes = exclude or _last_episode(newest_real)
        eval_windows = evaluation_windows(
            config, episodes, newest_real, int(w.eval_windows), image_size
        )
        params = jax.device_get(state.params)
        # One device: the sampler's batch (N windows x 2 for guidance) is not the train batch.
        with jax.default_device(jax.devices()[0]):
            params = jax.device_put(params, jax.devices()[0])
            metrics = evaluate_prediction(model, vae, params, eval_windows, text, seed)
        summary.update(metrics)
        summary["eval_heldout"] = bool(exclude)
        summary["eval_seconds"] = round(time.time() - start, 2)
    logging.info("train_world_model: %s", summary)
    return summary


def _last_episode(dataset_dir: str) -> list[tuple[str, int]]:
    """The dataset's last episode (the check runs on training data when none was held out)."""
    layout = rlds.open_dataset(dataset_dir)
    return [(layout.shard_paths[-1], layout.shard_lengths[-1] - 1)]
