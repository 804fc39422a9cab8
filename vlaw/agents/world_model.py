"""Ctrl-World as an experiment configures it: the model config a run's config and spec
describe, its training windows and frozen instruction embeddings, the trainer's init, loss and
batch preparation, where its weights start, and a trained checkpoint directory loaded back for
imagination (`load_world_model`) or written from parameters in hand (`save_world_model`).

A trained world model is one directory (iteration k's at `checkpoints/world_model/iter_NN/`):
its orbax steps (the UNet and the frozen frame codec in one tree), `world_model.json` (the spec:
start, codec and its scales, data) and `text_embeddings.json` (every instruction's vector).
The frame codec (pixels or a VAE) and its measured scales: `vlaw.agents.world_model_codec`.

Text. `paper`: CLIP ViT-B/32 `text_embeds` per instruction (`vlaw.convert.ctrl_world.
clip_text_embeddings`, from the local `world_model.clip_path`). `tiny`/`sim`: a fixed vector
per distinct instruction string, N(0, 0.5^2) entries from a generator seeded by the string's
SHA-256: deterministic across runs and machines, distinct per task, and, like CLIP's, frozen.

Mesh guard: jax 0.10.2 gives wrong UNet values with ONE example per batch shard when weights
are sharded over both fsdp and tensor (tests/models/world_model/test_sharding_bug.py);
`check_mesh_batch` refuses such a configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlaw.data import cameras, mixture, rlds_read, windows
from vlaw.data.atomic_json import read_json, write_json
from vlaw.data.world_model_windows import world_model_batches
from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model.pose_maps import POSE_MAP_CHANNELS
from vlaw.models.world_model.vae import TemporalVAE, VAEConfig, encode_latents
from vlaw.train import checkpoints, optim
from vlaw.train import mesh as mesh_lib

SPEC_FILE, VAE_SPEC_FILE, TEXT_FILE = "world_model.json", "vae.json", "text_embeddings.json"
HISTORY_SPACING = (4, 8)  # Ctrl-World's training recipe (ctrl_world.md §1.3)
# `world_model.pose_maps` by name: image aspect (height / width) -> cameras per view, or None
# for "" (no pose maps: Ctrl-World). "sim": the simulated station's fixed exterior cameras.
POSE_MAP_CAMERAS = {"": None, "sim": cameras.camera_projections}


# --------------------------------------------------------------------------------------------
# Configuration.


def model_config(
    config: ml_collections.ConfigDict,
    scaling_factor: float | None = None,
    residual_scale: float = 0.0,
    pose_normalization: str | None = None,
    pose_maps: str | None = None,
):
    """The CtrlWorldConfig of `world_model.variant` with the run's frames, dtypes and remat.

    `num_history`/`num_future` come from `config.world_model` (the data windows use them);
    when they differ from the preset's, the memory indices fall back to Ctrl-World's own
    (6 history frames) or an evenly spaced set. `pose_normalization` (a key of
    `cw.POSE_NORMALIZATIONS`) defaults to `world_model.pose_normalization`, and `pose_maps`
    (a key of `POSE_MAP_CAMERAS`) to `world_model.pose_maps`; a trained model's own come from
    its spec (`model_config_from_spec`).
    """
    w = config.world_model
    t = w.train
    remat = t.remat_policy if t.remat_policy not in ("", None) else "none"
    base = cw.CtrlWorldConfig.preset(w.variant)
    unet = dataclasses.replace(
        base.unet, dtype=t.compute_dtype, param_dtype=t.param_dtype, remat_policy=remat
    )
    vae = dataclasses.replace(base.vae, dtype=t.compute_dtype, param_dtype=t.param_dtype)
    view_latent_shape = base.view_latent_shape
    if w.space == "pixel":
        # The frames are the latent variant's (its grid x its VAE's factor), cut into `patch` x
        # `patch` pixel cells packed onto channels: a larger patch, a coarser and cheaper grid.
        frame = [s * vae.downsample_factor for s in base.view_latent_shape]
        patch = int(w.pixel_patch) or vae.downsample_factor
        if frame[0] % patch or frame[1] % patch:
            raise ValueError(
                f"world_model.pixel_patch={patch} does not divide the {frame[0]}x{frame[1]} "
                "frames of the preset"
            )
        view_latent_shape = (frame[0] // patch, frame[1] // patch)
        vae = VAEConfig.pixel_codec(patch, dtype=vae.dtype, param_dtype=vae.param_dtype)
        channels = vae.latent_channels
        unet = dataclasses.replace(unet, in_channels=2 * channels, out_channels=channels)
    elif w.space != "latent":
        raise ValueError(f"world_model.space={w.space!r}; choose 'latent' or 'pixel'")
    if scaling_factor is not None:
        vae = dataclasses.replace(vae, scaling_factor=float(scaling_factor))
    overrides: dict[str, Any] = dict(unet=unet, vae=vae, view_latent_shape=view_latent_shape)
    num_history, num_future = int(w.num_history), int(w.num_future)
    if num_history != base.num_history:
        default = cw.CtrlWorldConfig().history_idx
        idx = (
            default
            if len(default) == num_history
            else (0,) + tuple(-3 * k for k in range(num_history - 1, 0, -1))
        )
        overrides.update(history_idx=idx, initial_buffer_copies=4 * num_history)
    pose_normalization = pose_normalization or str(w.pose_normalization)
    if pose_normalization not in cw.POSE_NORMALIZATIONS:
        raise ValueError(
            f"world_model.pose_normalization={pose_normalization!r}; choose one of "
            f"{sorted(cw.POSE_NORMALIZATIONS)}"
        )
    pose_low, pose_high, angle_center = cw.POSE_NORMALIZATIONS[pose_normalization]
    pose_maps = str(w.pose_maps if pose_maps is None else pose_maps)
    if pose_maps not in POSE_MAP_CAMERAS:
        raise ValueError(
            f"world_model.pose_maps={pose_maps!r}; choose one of {sorted(POSE_MAP_CAMERAS)}"
        )
    if pose_maps:
        aspect = float(config.data.image_height) / float(config.data.image_width)
        overrides.update(view_cameras=POSE_MAP_CAMERAS[pose_maps](aspect))
        unet = overrides["unet"]
        overrides["unet"] = dataclasses.replace(
            unet, in_channels=unet.in_channels + POSE_MAP_CHANNELS
        )
    if not 0.0 < float(w.sampler_sigma_min) <= float(w.sigma_max):
        raise ValueError(
            f"world_model.sampler_sigma_min={w.sampler_sigma_min} must lie in (0, sigma_max="
            f"{w.sigma_max}]"
        )
    overrides.update(
        pose_low=pose_low,
        pose_high=pose_high,
        pose_angle_center=angle_center,
        residual_scale=float(residual_scale),
        num_history=num_history,
        num_future=num_future,
        num_steps=int(w.num_sampling_steps),
        max_guidance=float(w.max_guidance),
        p_mean=float(w.noise_p_mean),
        p_std=float(w.noise_p_std),
        sigma_max=float(w.sigma_max),
        sigma_min=float(w.sampler_sigma_min),
    )
    return dataclasses.replace(base, **overrides)


def model_config_from_spec(config: ml_collections.ConfigDict, spec: dict):
    """`model_config` with the scales a run measured and the pose normalisation it trained
    with, as stored in world_model.json (specs written before the key existed: "droid")."""
    return model_config(
        config,
        spec["scaling_factor"],
        spec.get("residual_scale", 0.0),
        spec.get("pose_normalization", "droid"),
        spec.get("pose_maps", ""),
    )


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
        history_spacing=HISTORY_SPACING,
        no_history_probability=0.15,
        # `data.shuffle_buffer` counts frames; a window carries the JPEGs of
        # num_history + num_future frames, so this keeps the buffer's memory the same.
        shuffle_buffer=max(1, data.shuffle_buffer // (model.num_history + model.num_future)),
        num_parallel_reads=data.num_parallel_reads,
        image_size=image_size,
        seed=seed,
        exclude=exclude,
        skip_corrupt=data.skip_corrupt,
    )


def stack_frames(batch: dict[str, np.ndarray]) -> np.ndarray:
    """History, current and future frames -> (B, Th + F, V, H, W, 3) uint8, oldest first."""
    return np.concatenate(
        [batch["history_frames"], batch["current_frame"][:, None], batch["future_frames"]], axis=1
    )


class TextEmbeddings:
    """Instruction -> frozen text vector (text_dim,), cached and saved as JSON.

    `clip_path` set: CLIP ViT-B/32 `text_embeds` (Ctrl-World's text path). Empty: the seeded
    per-instruction vector of this module's docstring (tiny/sim, where no CLIP is
    at hand).
    """

    def __init__(self, text_dim: int, clip_path: str = "", path: str = ""):
        self.text_dim, self.clip_path, self.path = text_dim, clip_path, path
        self.table: dict[str, np.ndarray] = {}
        if path and os.path.exists(path):
            stored = read_json(path)
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
        payload = {"kind": self.kind, "clip_path": self.clip_path, "vectors": vectors}
        write_json(self.path, payload)


# --------------------------------------------------------------------------------------------
# The trainer's functions.


def vae_init_fn(vae: TemporalVAE, image_size: tuple[int, int]):
    # .get: the pixel codec has no parameters, and Flax then returns no "params" collection.
    return lambda rng: vae.init(rng, jnp.zeros((1, *image_size, 3))).get("params", {})


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


# --------------------------------------------------------------------------------------------
# Where the weights start; a trained directory saved and loaded.


def is_trained(directory: str) -> bool:
    """True once `directory` holds a committed checkpoint and its spec (a loadable model)."""
    return (
        os.path.exists(os.path.join(directory, SPEC_FILE))
        and checkpoints.latest_step(directory) is not None
    )


def restore_vae(directory: str, vae: TemporalVAE, image_size) -> Any:
    """The tiny/sim VAE trained by `world_model_codec.train_vae`, on the host."""
    abstract = jax.eval_shape(lambda: nn.unbox(vae_init_fn(vae, image_size)(jax.random.key(0))))
    return jax.device_get(checkpoints.restore_on_one_device(directory, abstract))


def load_vae_params(path: str, vae_cfg: VAEConfig, image_size) -> Any:
    """The SVD VAE from a diffusers safetensors file or a Ctrl-World `.pt` (`vae.` prefix)."""
    del image_size  # the converter derives every shape from the state dict and the config
    from vlaw.convert.ctrl_world import convert_vae, load_torch_state_dict  # torch: paper only

    state_dict = load_torch_state_dict(path)
    prefix = "vae." if any(k.startswith("vae.") for k in state_dict) else ""
    return convert_vae(state_dict, vae_cfg, prefix=prefix)


def resolve_start_kind(start_kind: str, start_path: str) -> str:
    """`vlaw.workdir.Start.kind` with "init_from" resolved by what the path holds: another vlaw
    run's world model ("vlaw") or Ctrl-World's released checkpoint ("ctrl_world")."""
    if start_kind != "init_from":
        return start_kind
    if not (os.path.isdir(start_path) and checkpoints.latest_step(start_path) is not None):
        return "ctrl_world"
    if not is_trained(start_path):  # checkpoints, but not a world model's directory
        raise FileNotFoundError(
            f"world_model.train.init_from={start_path!r} holds checkpoints but no {SPEC_FILE}: "
            "point it at a run's checkpoints/world_model/iter_NN directory"
        )
    return "vlaw"


def initial_params(
    spec: dict, model: cw.CtrlWorld, vae: TemporalVAE, image_size, seed: int
) -> Callable[[Any], Any]:
    """The trainer's `initial_params` for the spec's start and frame codec: a vlaw checkpoint's
    `params` restored into the target shardings, or {"world_model", "vae"} assembled from a
    converted Ctrl-World checkpoint or a fresh UNet, and an imported, trained or parameter-free
    codec."""
    init, vae_source = spec["init"], spec["vae"]
    if init["kind"] in ("previous_iteration", "vlaw"):
        return checkpoints.params_loader(init["path"])

    def assemble(target):
        del target  # the trainer checks the shapes and places the host arrays
        model_cfg = model.config
        state_dict = None
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
        elif state_dict is not None:
            from vlaw.convert.ctrl_world import convert_vae

            vae_params = convert_vae(state_dict, model_cfg.vae, prefix="vae.")
        else:
            raise ValueError(
                "world_model.variant='paper' needs the SVD VAE: set world_model.vae_init_from "
                "(a diffusers vae safetensors file) or world_model.train.init_from (Ctrl-World's "
                "checkpoint-10000.pt, which holds it under 'vae.')"
            )
        return {"world_model": wm_params, "vae": vae_params}

    return assemble


def check_space(config: ml_collections.ConfigDict, spec: dict, directory: str) -> None:
    """A checkpoint trained in pixel space cannot be read as a latent one, or the reverse."""
    trained_in = "pixel" if spec["vae"]["kind"] == "pixels" else "latent"
    if trained_in != config.world_model.space:
        raise ValueError(
            f"the world model in {directory} was trained in {trained_in} space but "
            f"world_model.space={config.world_model.space!r}; set it to {trained_in!r}"
        )


def read_spec(directory: str) -> dict:
    return read_json(os.path.join(directory, SPEC_FILE))


def write_spec(directory: str, spec: dict) -> None:
    """world_model.json, atomically (its presence means "prepared")."""
    write_json(os.path.join(directory, SPEC_FILE), spec)


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


def _model_and_codec(config, spec) -> tuple[cw.CtrlWorld, TemporalVAE]:
    model_cfg = model_config_from_spec(config, spec)
    return cw.CtrlWorld(model_cfg), TemporalVAE(model_cfg.vae)


def abstract_params(config: ml_collections.ConfigDict, spec: dict) -> Any:
    """Shapes and dtypes of the {"world_model", "vae"} tree a spec describes (nothing built)."""
    model, vae = _model_and_codec(config, spec)
    init = world_model_init_fn(model, vae, pixel_size(model.config))
    return jax.eval_shape(lambda: nn.unbox(init(jax.random.PRNGKey(0))))


def load_world_model(config: ml_collections.ConfigDict, directory: str) -> TrainedWorldModel:
    """The newest checkpoint in `directory` with its VAE scale and its text-embedding table
    (new instructions get vectors the same way training made them). A run trained with an EMA
    is imagined with it, as the phase's check evaluates it."""
    if not is_trained(directory):
        raise FileNotFoundError(
            f"no world model checkpoint in {directory}; run the train_world_model phase first"
        )
    spec = read_spec(directory)
    check_space(config, spec, directory)
    model, vae = _model_and_codec(config, spec)
    key = "ema_params" if spec.get("ema_decay", 0.0) > 0 else "params"
    abstract = abstract_params(config, spec)
    params = checkpoints.restore_on_one_device(directory, abstract, key=key)
    clip_path = str(config.world_model.clip_path or "")
    text = TextEmbeddings(model.config.text_dim, clip_path, os.path.join(directory, TEXT_FILE))
    return TrainedWorldModel(model, vae, params, text, spec)


def save_world_model(
    directory: str, params: Any, *, spec: dict, step: int, ckpt_config: Any
) -> None:
    """Writes `params` ({"world_model", "vae"}, shaped as `abstract_params(config, spec)`) and
    `spec` as a directory `load_world_model` reads: for tools and tests that make a world model
    without the trainer."""
    write_spec(directory, spec)
    checkpoints.save_params(directory, step, params, ckpt_config)
