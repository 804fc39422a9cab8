"""Qwen3-VL as the reward model an experiment configures: its model config, tokenizer and
prompt length, the host inputs of a clip and its question, the trainer's init, trained
parameters loaded back, and the scoring of whole datasets (paper Eq. 3's P("yes")).

The same `model_inputs` serves training (`train_reward`'s batches) and scoring (`label`,
`train_reward`'s train accuracy), so both see identical prompts: 16 uniformly sampled frames
of one camera stamped as consecutive 15 Hz frames, then the task's question.

`score_episodes`: batched, jitted, one compilation per run (fixed batch and prompt length),
host preprocessing of the next batch overlapping the device's work on the previous one
(results fetched once, at the end), with a progress bar.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from vlaw.data import rlds_read
from vlaw.data.transforms import uniform_frame_indices
from vlaw.losses import yes_no_loss
from vlaw.models.reward.qwen3_vl import Qwen3VL, Qwen3VLConfig, _dummy_inputs, answer_logits
from vlaw.models.reward.tokenizer import (
    answer_token_ids,
    build_small_tokenizer,
    load_tokenizer,
    model_video,
    prompt_inputs,
)
from vlaw.train import checkpoints, optim
from vlaw.train import mesh as mesh_lib

FPS = 15.0  # DROID's control and camera rate: the clock of the prompt's timestamps


def is_hf_checkpoint(path: str) -> bool:
    """A Hugging Face model directory (config.json + *.safetensors) rather than a vlaw run."""
    return bool(path) and (
        os.path.isfile(os.path.join(path, "config.json"))
        and bool(glob.glob(os.path.join(path, "*.safetensors")))
    )


def model_config(config: ml_collections.ConfigDict) -> Qwen3VLConfig:
    """The Qwen3-VL sizes of `reward.variant` (or of the HF `init_from` checkpoint's
    config.json), with the compute dtype and remat policy of `reward.train`."""
    r = config.reward
    init_from = r.train.init_from
    if is_hf_checkpoint(init_from):
        from vlaw.convert.qwen3_vl import config_from_hf

        with open(os.path.join(init_from, "config.json")) as f:
            base = config_from_hf(json.load(f))
    else:
        base = Qwen3VLConfig.from_preset(r.variant)
    remat = r.train.remat_policy
    return dataclasses.replace(
        base,
        dtype=r.train.compute_dtype,
        param_dtype=r.train.param_dtype,
        remat_policy=None if remat in ("", "none", None) else remat,
    )


def reward_tokenizer(config: ml_collections.ConfigDict):
    """Qwen's tokenizer from a local path, or the small on-the-fly one at tiny/sim."""
    r = config.reward
    if r.tokenizer_path:
        return load_tokenizer(r.tokenizer_path)
    init_from = r.train.init_from
    if is_hf_checkpoint(init_from) and os.path.isfile(os.path.join(init_from, "tokenizer.json")):
        return load_tokenizer(init_from)
    if r.variant == "paper":
        raise ValueError(
            "reward.variant='paper' needs Qwen3-VL's tokenizer: set reward.tokenizer_path (or "
            "reward.train.init_from) to a local Qwen3-VL-4B-Instruct directory holding "
            "tokenizer.json"
        )
    return build_small_tokenizer(vocab_size=Qwen3VLConfig.from_preset(r.variant).text.vocab_size)


def prompt_length(tokenizer, model_cfg: Qwen3VLConfig, image_hw: tuple[int, int], config) -> int:
    """One padded prompt length for every query of a run, so each jitted function compiles
    once: the tokens of a query with an empty instruction plus `reward.max_instruction_tokens`,
    rounded up to a multiple of 16."""
    r = config.reward
    input_ids, _, _ = prompt_inputs(
        tokenizer,
        [r.num_frames],
        [""],
        frame_hw=tuple(image_hw),
        config=model_cfg,
        fps=FPS,
        num_frames=r.num_frames,
    )
    length = input_ids.shape[1] + int(r.max_instruction_tokens)
    return -(-length // 16) * 16


def model_inputs(
    tokenizer,
    clips: list[np.ndarray],
    instructions: list[str],
    *,
    model_cfg: Qwen3VLConfig,
    length: int,
) -> dict[str, np.ndarray]:
    """Host-side model inputs for clips already sampled to `num_frames` frames: input_ids and
    attention_mask (B, length) int32 and the clips themselves, `frames` (B, T, H, W, 3) uint8.
    The resize and normalisation run on the device (`model_video`, inside the jitted loss and
    scoring functions): a quarter of float32's bytes cross to the device, and no host sync.

    The same function serves training (`reward_batches` samples the frames) and labelling
    (`score_episodes` samples them with the same `uniform_frame_indices`), so both see
    identical prompts: the clip's frames are stamped as consecutive 15 Hz frames.
    """
    frames = np.stack(clips)
    input_ids, attention_mask, _ = prompt_inputs(
        tokenizer,
        [len(clip) for clip in clips],
        instructions,
        frame_hw=frames.shape[2:4],
        config=model_cfg,
        fps=FPS,
        num_frames=frames.shape[1],  # every frame of an already-sampled clip
        length=length,
    )
    return {"input_ids": input_ids, "attention_mask": attention_mask, "frames": frames}


def init_fn_for(model_cfg: Qwen3VLConfig):
    """rng -> boxed parameters with logical axis names (what the trainer shards)."""
    ids, video = _dummy_inputs(model_cfg)
    return lambda rng: Qwen3VL(model_cfg).init(rng, ids, video)["params"]


def make_loss_fn(model_cfg: Qwen3VLConfig, tokenizer) -> Any:
    """(params, batch, rng) -> (loss, metrics): the one-token yes/no answer's cross-entropy
    (`vlaw.losses.yes_no_loss`) on the masters cast to the compute dtype."""
    yes, no = answer_token_ids(tokenizer)

    def loss_fn(params, batch, rng):
        del rng  # deterministic forward: Qwen3-VL has no dropout
        logits = answer_logits(
            optim.cast_for_compute(params, model_cfg.dtype),
            batch["input_ids"],
            model_video(batch["frames"], model_cfg),
            batch["attention_mask"],
            config=model_cfg,
        )
        return yes_no_loss(logits, batch["label"], yes_token_id=yes, no_token_id=no)

    return loss_fn


def initial_params(config: ml_collections.ConfigDict, start_path: str):
    """The trainer's `initial_params` from `start_path` (`vlaw.workdir.Start.path`): a Hugging
    Face Qwen3-VL directory converted, a vlaw reward checkpoint (an earlier iteration's, or
    another run's) restored, or None when empty (from scratch)."""
    if is_hf_checkpoint(start_path):
        dtype = np.dtype(model_config(config).param_dtype)

        def from_hf(target):
            del target  # the trainer checks the shapes and places the host arrays
            from vlaw.convert.qwen3_vl import load_checkpoint

            return load_checkpoint(start_path, dtype=dtype)[1]

        return from_hf
    if start_path:
        return checkpoints.params_loader(start_path)
    return None


def is_trained(directory: str) -> bool:
    return checkpoints.latest_step(directory) is not None


def load_trained_params(
    config: ml_collections.ConfigDict, directory: str | None
) -> tuple[Any, str]:
    """(params on one device, where they came from): the newest checkpoint in `directory` (a
    `train_reward` run), else `reward.train.init_from` (zero-shot labelling)."""
    model_cfg = model_config(config)
    init = init_fn_for(model_cfg)
    abstract = jax.eval_shape(
        lambda: optim.cast_floating(nn.unbox(init(jax.random.PRNGKey(0))), model_cfg.param_dtype)
    )
    if directory and is_trained(directory):
        return checkpoints.restore_on_one_device(directory, abstract), directory
    init_from = config.reward.train.init_from
    if is_hf_checkpoint(init_from):
        from vlaw.convert.qwen3_vl import load_checkpoint

        _, params = load_checkpoint(init_from, dtype=np.dtype(model_cfg.param_dtype))
        checkpoints.check_compatible(params, abstract, f"Hugging Face checkpoint {init_from}")
        return jax.device_put(params, jax.local_devices()[0]), init_from
    if init_from:
        return checkpoints.restore_on_one_device(init_from, abstract), init_from
    raise FileNotFoundError(
        f"no reward model to score with: {directory} holds no checkpoint (run the train_reward "
        "phase first) and reward.train.init_from is empty"
    )


@dataclasses.dataclass
class EpisodeScores:
    """Reward-model read-outs of N episodes, in dataset order (dir, shard, record)."""

    p_yes: np.ndarray  # (N,) float32: full-vocabulary P(first answer token = "yes")
    p_no: np.ndarray  # (N,) float32: the same for "no"
    success: np.ndarray  # (N,) bool: the stored `success` label
    source: np.ndarray  # (N,) str: the stored `source` (real, synthetic, demo, droid)
    keys: list[tuple[str, int]]  # (shard path, record index) of each episode

    def __len__(self) -> int:
        return len(self.p_yes)


@functools.partial(jax.jit, static_argnames=("config", "yes_token_id", "no_token_id"))
def answer_probabilities(
    params,
    input_ids: jax.Array,
    frames: jax.Array,
    attention_mask: jax.Array,
    *,
    config: Qwen3VLConfig,
    yes_token_id: int,
    no_token_id: int,
) -> tuple[jax.Array, jax.Array]:
    """(P(yes), P(no)) of the first answer token, full-vocabulary softmax. Shapes: input_ids,
    attention_mask (B, L), frames (B, T, H, W, 3) uint8 (resized here, on the device) ->
    (B,), (B,).

    Both from one forward: P(yes) > alpha is the paper's decision, P(yes) > P(no) the argmax
    one it is compared with.
    """
    video = model_video(frames, config)
    logits = answer_logits(params, input_ids, video, attention_mask, config=config)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.exp(log_probs[:, yes_token_id]), jnp.exp(log_probs[:, no_token_id])


def _episode_clips(layouts, camera: str, num_frames: int):
    """(key, clip (num_frames, H, W, 3) uint8, instruction, success, source) per episode; only
    the sampled frames' JPEGs are decoded."""
    field = f"{rlds_read.STEPS}observation/{camera}"
    for layout in layouts:
        for raw in rlds_read.iter_raw_episodes(layout):
            if raw["num_steps"] == 0:
                raise ValueError(
                    f"{raw['shard_path']} record {raw['record_index']}: episode has no steps"
                )
            index = uniform_frame_indices(raw["num_steps"], num_frames)
            clip = rlds_read.decode_images(raw[field][index], layout.image_shape)
            metadata = rlds_read.metadata_from_raw(raw)
            key = (raw["shard_path"], int(raw["record_index"]))
            yield key, clip, rlds_read.instruction_from_raw(raw), metadata.success, metadata.source


def score_clips(
    clips: Iterable[tuple[np.ndarray, str]],
    *,
    params: Any,
    model_cfg: Qwen3VLConfig,
    tokenizer: Any,
    length: int,
    batch_size: int,
    total: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(P(yes), P(no)), (N,) float32 each, of N (clip (num_frames, H, W, 3) uint8, instruction)
    pairs, the clips already sampled (`uniform_frame_indices`).

    `params` are cast to `model_cfg.dtype` once and replicated over `mesh_lib.rows_mesh`,
    whose devices each score their rows of a batch; `length` is the padded prompt length
    (`prompt_length`). The last batch is padded by repeating its last clip (the padding's
    scores are dropped), so the jitted function sees one shape. `clips` is consumed lazily:
    the host prepares the next batch while the device runs the previous one.
    """
    yes, no = answer_token_ids(tokenizer)
    mesh = mesh_lib.rows_mesh(batch_size)
    rows = NamedSharding(mesh, PartitionSpec("data"))
    cast = functools.partial(optim.cast_floating, dtype=model_cfg.dtype)
    params = jax.device_put(jax.jit(cast)(params), NamedSharding(mesh, PartitionSpec()))
    score = functools.partial(
        answer_probabilities, config=model_cfg, yes_token_id=yes, no_token_id=no
    )
    outputs = []
    pending: list[tuple[np.ndarray, str]] = []

    def flush() -> None:
        real = len(pending)
        batch = pending + [pending[-1]] * (batch_size - real)
        inputs = model_inputs(
            tokenizer,
            [c for c, _ in batch],
            [t for _, t in batch],
            model_cfg=model_cfg,
            length=length,
        )
        # Dispatch is asynchronous: the next batch is decoded while this one runs.
        inputs = jax.device_put(inputs, rows)
        p_yes, p_no = score(params, inputs["input_ids"], inputs["frames"], inputs["attention_mask"])
        outputs.append((p_yes, p_no, real))
        pending.clear()

    with tqdm(total=total, unit="clip", desc="reward", disable=not progress) as bar:
        for clip, instruction in clips:
            pending.append((clip, instruction))
            if len(pending) == batch_size:
                flush()
                bar.update(batch_size)
        if pending:
            bar.update(len(pending))
            flush()
        fetched = jax.device_get(outputs)  # the one device->host read
    if not fetched:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    p_yes = np.concatenate([y[:n] for y, _, n in fetched]).astype(np.float32)
    p_no = np.concatenate([q[:n] for _, q, n in fetched]).astype(np.float32)
    return p_yes, p_no


def score_episodes(
    dataset_dirs: Sequence[str],
    *,
    params: Any,
    model_cfg: Qwen3VLConfig,
    tokenizer: Any,
    camera: str,
    num_frames: int,
    length: int,
    batch_size: int,
    progress: bool = True,
) -> EpisodeScores:
    """Scores every episode of `dataset_dirs` with the reward model (`score_clips` on
    `num_frames` uniformly sampled frames of `camera`)."""
    layouts = [rlds_read.open_dataset(d) for d in dataset_dirs]
    keys, success, source = [], [], []

    def clips():
        for key, clip, instruction, label, src in _episode_clips(layouts, camera, num_frames):
            keys.append(key)
            success.append(label)
            source.append(src)
            yield clip, instruction

    p_yes, p_no = score_clips(
        clips(),
        params=params,
        model_cfg=model_cfg,
        tokenizer=tokenizer,
        length=length,
        batch_size=batch_size,
        total=sum(layout.num_episodes for layout in layouts),
        progress=progress,
    )
    if not keys:
        raise ValueError(f"no episodes in {list(dataset_dirs)}")
    return EpisodeScores(
        p_yes=p_yes,
        p_no=p_no,
        success=np.asarray(success, bool),
        source=np.asarray(source, dtype=str),
        keys=keys,
    )


def score_episodes_for_config(
    config,
    dataset_dirs: Sequence[str],
    *,
    params: Any,
    model_cfg: Qwen3VLConfig,
    tokenizer: Any,
    length: int,
) -> EpisodeScores:
    """`score_episodes` with the camera, frame count, batch and progress of `config.reward`."""
    r = config.reward
    return score_episodes(
        dataset_dirs,
        params=params,
        model_cfg=model_cfg,
        tokenizer=tokenizer,
        camera=r.camera,
        num_frames=r.num_frames,
        length=length,
        batch_size=r.label_batch_size,
        progress=r.progress,
    )


@dataclasses.dataclass
class RewardScorer:
    """A loaded reward model with the run's prompt settings, for clips evaluation makes itself
    (imagined or replayed in the world model) rather than reads from a dataset."""

    params: Any
    model_cfg: Qwen3VLConfig
    tokenizer: Any
    config: ml_collections.ConfigDict
    params_from: str  # the checkpoint directory (or init_from) the weights came from

    def p_yes(self, videos: Sequence[np.ndarray], instructions: Sequence[str]) -> np.ndarray:
        """(N,) P(yes) of N episodes' 15 Hz frames of `reward.camera`, each (T, H, W, 3) uint8
        of one size, `reward.num_frames` sampled uniformly as `label` samples them."""
        if not videos:
            return np.zeros(0, np.float32)
        r = self.config.reward
        length = prompt_length(self.tokenizer, self.model_cfg, videos[0].shape[1:3], self.config)
        clips = (
            (video[uniform_frame_indices(len(video), r.num_frames)], instruction)
            for video, instruction in zip(videos, instructions, strict=True)
        )
        p_yes, _ = score_clips(
            clips,
            params=self.params,
            model_cfg=self.model_cfg,
            tokenizer=self.tokenizer,
            length=length,
            batch_size=int(r.label_batch_size),
            total=len(videos),
            progress=bool(r.progress),
        )
        return p_yes


def load_reward_scorer(config: ml_collections.ConfigDict, directory: str | None) -> RewardScorer:
    """`load_trained_params` (the newest checkpoint in `directory`, else `reward.train.init_from`)
    with the run's model config and tokenizer."""
    params, params_from = load_trained_params(config, directory)
    return RewardScorer(
        params, model_config(config), reward_tokenizer(config), config, str(params_from)
    )
