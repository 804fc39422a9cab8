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

Latent or pixel space (`world_model.space`), the frame codec and why pixels at tiny/sim:
`vlaw.train.world_model_codec`.

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
With `world_model.train.ema_decay` > 0 the check below and `load_world_model` (imagination)
use the moving average of the weights; the next iteration starts from the raw weights.

Check. After training, the summary reports the held-out prediction PSNR
(`vlaw.train.world_model_eval`).

Mesh guard: jax 0.10.2 gives wrong UNet values with ONE example per batch shard when weights
are sharded over both fsdp and tensor (tests/models/world_model/test_sharding_bug.py); the
phase refuses such a configuration (`check_mesh_batch`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vlaw.data import mixture, rlds
from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model.vae import TemporalVAE, encode_latents
from vlaw.train import checkpoints, optim
from vlaw.train.world_model_codec import (
    load_vae_params,
    measure_residual_scale,
    prepare_vae,
    restore_on_one_device,
    restore_vae,
    vae_init_fn,
)
from vlaw.train.world_model_data import (
    SPEC_FILE,
    TEXT_FILE,
    TextEmbeddings,
    check_mesh_batch,
    checkpoint_dir,
    heldout_episodes,
    latest_step,
    model_config_from_spec,
    phase_seed,
    pixel_size,
    stack_frames,
    training_dataset_dirs,
    world_model_windows,
    write_json,
)
from vlaw.train.world_model_eval import evaluate_prediction, evaluation_windows

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
            "vae": vae_init_fn(vae, image_size)(k_vae),
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
    return os.path.isdir(path) and latest_step(path) is not None


def _choose_init(config, workdir: str, iteration: int) -> dict:
    previous = checkpoint_dir(workdir, iteration - 1) if iteration > 0 else ""
    init_from = str(config.world_model.train.init_from or "")
    if previous and latest_step(previous) is not None:
        return {"kind": "previous_iteration", "path": previous}
    if init_from:
        return {"kind": "vlaw" if _is_vlaw_run(init_from) else "ctrl_world", "path": init_from}
    return {"kind": "scratch", "path": ""}


def _initial_params(config, spec, model, vae, image_size, seed):
    """Initial weights of a fresh run that does not continue a vlaw run (host arrays)."""
    init, vae_source = spec["init"], spec["vae"]
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
        vae_params = restore_vae(vae_source["path"], vae, image_size)
    elif vae_source["kind"] == "import":
        vae_params = load_vae_params(vae_source["path"], model_cfg.vae, image_size)
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
    if not os.path.exists(spec_path) or latest_step(directory) is None:
        raise FileNotFoundError(
            f"no world model checkpoint in {directory}; run the train_world_model phase first"
        )
    with open(spec_path) as f:
        spec = json.load(f)
    _check_space(config, spec, directory)
    model_cfg = model_config_from_spec(config, spec)
    model, vae = cw.CtrlWorld(model_cfg), TemporalVAE(model_cfg.vae)
    init_fn = world_model_init_fn(model, vae, pixel_size(model_cfg))
    # A run trained with an EMA is evaluated and imagined with it (as the phase's check).
    key = "ema_params" if spec.get("ema_decay", 0.0) > 0 else "params"
    params = restore_on_one_device(directory, init_fn, key=key)
    clip_path = str(config.world_model.clip_path or "")
    text = TextEmbeddings(model_cfg.text_dim, clip_path, os.path.join(directory, TEXT_FILE))
    return TrainedWorldModel(model, vae, params, text, spec)


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
        vae_source = prepare_vae(config, workdir, sources, exclude, progress=progress)
    base_scale = cw.CtrlWorldConfig.preset(config.world_model.variant).vae.scaling_factor
    scaling_factor = vae_source["scaling_factor"] or base_scale
    if init["kind"] == "previous_iteration":
        residual_scale = previous.get("residual_scale", 0.0)
    elif config.world_model.diffuse_residuals:
        residual_scale = measure_residual_scale(
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
        "ema_decay": float(config.world_model.train.ema_decay),
    }
    write_json(spec_path, spec)  # last: its presence means "prepared"
    return spec


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
    seed = phase_seed(config, iteration, salt=2)
    text = TextEmbeddings(
        model_cfg.text_dim, str(w.clip_path or ""), os.path.join(directory, TEXT_FILE)
    )
    train_config = w.train
    if spec["init"]["kind"] in ("previous_iteration", "vlaw"):
        initial_params = checkpoints.params_loader(spec["init"]["path"])
    else:  # called only when there is no checkpoint to resume

        def initial_params(target):
            return _initial_params(config, spec, model, vae, image_size, seed)

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
            initial_params=initial_params,
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
        params = jax.device_get(state.params if state.ema_params is None else state.ema_params)
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
