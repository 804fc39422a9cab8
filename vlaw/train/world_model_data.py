"""Paths, seeds, model configuration and training data of the `train_world_model` phase.

Shared by the phase (`vlaw.train.world_model`), its frame codec (`world_model_codec`) and its
held-out check (`world_model_eval`): where a run's checkpoints and JSON files live, the
per-iteration seeds, the CtrlWorldConfig that a run's config (and world_model.json) describe,
Ctrl-World's training windows at the model's pixel size, and the frozen instruction embeddings.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from vlaw.data import mixture, rlds_read, windows
from vlaw.data.world_model_windows import world_model_batches
from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model.vae import VAEConfig
from vlaw.train import mesh as mesh_lib

SPEC_FILE, VAE_SPEC_FILE, TEXT_FILE = "world_model.json", "vae.json", "text_embeddings.json"
HISTORY_SPACING = (4, 8)  # Ctrl-World's training recipe (ctrl_world.md §1.3)


def checkpoint_dir(workdir: str, iteration: int) -> str:
    return os.path.join(workdir, "checkpoints", "world_model", f"iter_{iteration:02d}")


def vae_checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints", "vae")


def latest_step(directory: str) -> int | None:
    steps = [int(os.path.basename(p)) for p in glob.glob(os.path.join(directory, "[0-9]*"))]
    steps = [s for s in steps if os.path.isdir(os.path.join(directory, str(s)))]
    return max(steps) if steps else None


def write_json(path: str, payload: dict) -> None:
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(temp, path)


def phase_seed(config, iteration: int, salt: int) -> int:
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
    layout = rlds_read.open_dataset(dataset_dir)
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
    """`vlaw.data.world_model_windows.world_model_batches` over `sources` at the model's pixel
    size, with Ctrl-World's recipe, minus the `exclude`d (shard path, record index) episodes
    (the held-out ones).

    Batches: history_frames (B, Th, V, H, W, 3) uint8, current_frame (B, V, H, W, 3),
    future_frames (B, F-1, V, H, W, 3), history_poses (B, Th, 7), future_poses (B, F, 7),
    action_chunk, instruction (B,) bytes. `batch_size` is the global batch.
    """
    data, model = config.data, config.world_model
    return world_model_batches(
        list(sources),
        batch_size=windows.host_batch_size(batch_size),
        num_history=model.num_history,
        num_future=model.num_future,
        frame_stride=model.frame_stride,
        # Ctrl-World's training recipe (ctrl_world.md §1.3): history every 4 or 8 frames, and
        # 15 % of windows without history.
        history_spacing=(4, 8),
        no_history_probability=0.15,
        seed=seed,
        # `data.shuffle_buffer` counts frames; a window carries the JPEGs of
        # num_history + num_future frames, so this keeps the buffer's memory the same.
        shuffle_buffer=max(1, data.shuffle_buffer // (model.num_history + model.num_future)),
        num_parallel_reads=data.num_parallel_reads,
        image_size=image_size,
        skip_corrupt=data.skip_corrupt,
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
    per-instruction vector of `vlaw.train.world_model`'s docstring (tiny/sim, where no CLIP is
    at hand).
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
        write_json(self.path, {"kind": self.kind, "clip_path": self.clip_path, "vectors": vectors})
