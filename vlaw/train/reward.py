"""The `train_reward` phase: fine-tune Qwen3-VL on D_real's success labels (paper Appendix C).

    train_reward_phase(config, workdir, iteration)

The paper fine-tunes the reward model once, in the first iteration (200 steps at batch 128), as
next-token prediction of a one-token answer ("yes" for a success, "no" otherwise;
`vlaw.losses.yes_no_loss`) on 16 uniformly sampled frames of one camera. Here:

- data: `<workdir>/iter_{0..k}/real` (every real rollout so far, labelled by the station) and,
  when `reward.train_on_demos`, `<workdir>/demos` (warm-start demonstrations, labelled by the
  same station). Demos are on by default for tiny/sim, where they add labelled episodes to a
  handful of rollouts, and off for paper, whose D_real is the policy's rollouts only;
- weights: from scratch at tiny/sim, or `reward.train.init_from`: a Hugging Face
  Qwen3-VL-4B-Instruct directory (config.json + safetensors, via `vlaw.convert.qwen3_vl`) or
  another vlaw run's checkpoint directory;
- tokenizer: `reward.tokenizer_path` (Qwen's, from a local directory), else the HF
  `init_from` directory when it holds one, else (tiny/sim only) the small tokenizer built on
  the fly;
- the shared trainer (`vlaw.train.trainer.train`) with checkpoints in
  `<workdir>/checkpoints/reward/` (orbax, exact resume with the data position);
- after training, every training episode is scored once more (`vlaw.rollout.label`) and the
  summary reports the train accuracy at α and at the argmax decision.

Iterations after the first reuse that checkpoint (the paper does not retrain the reward model),
so the phase returns at once for `iteration > 0`.

The helpers shared with the `label` phase (model config, tokenizer, prompt length, loading the
trained parameters) live here too: they describe the reward model as the pipeline configures it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging

from vlaw.losses import yes_no_loss
from vlaw.models.reward.qwen3_vl import Qwen3VL, Qwen3VLConfig, _dummy_inputs, answer_logits
from vlaw.models.reward.tokenizer import (
    answer_token_ids,
    build_small_tokenizer,
    load_tokenizer,
    prepare_inputs,
)
from vlaw.train import optim

FPS = 15.0  # DROID's control and camera rate: the clock of the prompt's timestamps


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints", "reward")


def has_checkpoint(directory: str) -> bool:
    """Whether `directory` holds a committed orbax step (a directory named by its number)."""
    return os.path.isdir(directory) and any(entry.isdigit() for entry in os.listdir(directory))


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
    clip = np.zeros((r.num_frames, *image_hw, 3), np.uint8)
    with jax.transfer_guard("allow"):
        inputs = prepare_inputs(
            tokenizer, [clip], [""], config=model_cfg, fps=FPS, num_frames=r.num_frames
        )
    length = inputs["input_ids"].shape[1] + int(r.max_instruction_tokens)
    return -(-length // 16) * 16


def model_inputs(
    tokenizer,
    clips: list[np.ndarray],
    instructions: list[str],
    *,
    model_cfg: Qwen3VLConfig,
    length: int,
) -> dict[str, np.ndarray]:
    """Host-side model inputs for clips already sampled to `num_frames` frames.

    The same function serves training (`reward_batches` samples the frames) and labelling
    (`vlaw.rollout.label` samples them with the same `uniform_frame_indices`), so both see
    identical prompts: the clip's frames are stamped as consecutive 15 Hz frames.
    """
    # Resizing and normalising run through jax.image: a deliberate host->device->host round
    # trip, allowed here even under the trainer's transfer guard.
    with jax.transfer_guard("allow"):
        return prepare_inputs(
            tokenizer,
            clips,
            instructions,
            config=model_cfg,
            fps=FPS,
            num_frames=clips[0].shape[0],
            length=length,
        )


def init_fn_for(model_cfg: Qwen3VLConfig):
    """rng -> boxed parameters with logical axis names (what the trainer shards)."""
    ids, video = _dummy_inputs(model_cfg)
    return lambda rng: Qwen3VL(model_cfg).init(rng, ids, video)["params"]


def load_trained_params(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, str]:
    """(params on the default device, where they came from): the newest checkpoint of
    `train_reward`, else `reward.train.init_from` (zero-shot labelling)."""
    from vlaw.train import checkpoints

    model_cfg = model_config(config)
    init = init_fn_for(model_cfg)
    abstract = jax.eval_shape(
        lambda: optim.cast_floating(nn.unbox(init(jax.random.PRNGKey(0))), model_cfg.param_dtype)
    )
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract
    )
    trained = checkpoint_dir(workdir)
    if has_checkpoint(trained):
        return checkpoints.restore_params(trained, target), trained
    init_from = config.reward.train.init_from
    if is_hf_checkpoint(init_from):
        from vlaw.convert.qwen3_vl import load_checkpoint

        _, params = load_checkpoint(init_from, dtype=np.dtype(model_cfg.param_dtype))
        checkpoints.check_compatible(params, abstract, f"Hugging Face checkpoint {init_from}")
        return jax.device_put(params, device), init_from
    if init_from:
        return checkpoints.restore_params(init_from, target), init_from
    raise FileNotFoundError(
        f"no reward model to label with: {trained} holds no checkpoint (run the train_reward "
        "phase first) and reward.train.init_from is empty"
    )


def training_dirs(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> list[str]:
    """D_real so far (`iter_00/real` ... `iter_k/real`), plus `demos` when configured."""
    from vlaw.pipeline import iteration_dir

    dirs = [os.path.join(iteration_dir(workdir, i), "real") for i in range(iteration + 1)]
    if config.reward.train_on_demos:
        dirs.insert(0, os.path.join(workdir, "demos"))
    missing = [d for d in dirs if not os.path.isdir(d)]
    if missing:
        raise FileNotFoundError(
            f"train_reward needs labelled episodes; missing dataset dirs {missing} (run the "
            "collect phase first)"
        )
    return dirs


def train_reward_phase(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> dict:
    """Fine-tunes the reward model (iteration 0; later iterations keep it). Returns the summary."""
    from vlaw.data import rlds, windows
    from vlaw.rollout import label
    from vlaw.train import checkpoints, trainer

    r = config.reward
    directory = checkpoint_dir(workdir)
    if iteration > 0:
        logging.info("train_reward: iteration %d keeps the reward model of iteration 0", iteration)
        return {"trained": False, "checkpoint_dir": directory, "reason": "paper: iteration 0 only"}
    dirs = training_dirs(config, workdir, iteration)
    image_hw = rlds.open_dataset(dirs[0]).image_shape[:2]
    model_cfg = model_config(config)
    tokenizer = reward_tokenizer(config)
    yes, no = answer_token_ids(tokenizer)
    length = prompt_length(tokenizer, model_cfg, image_hw, config)
    compute_dtype = r.train.compute_dtype

    def host_fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        instructions = [s.decode("utf-8") for s in batch["instruction"]]
        inputs = model_inputs(
            tokenizer, list(batch["frames"]), instructions, model_cfg=model_cfg, length=length
        )
        return {**inputs, "label": batch["label"]}

    def loss_fn(params, batch, rng):
        del rng  # deterministic forward: Qwen3-VL has no dropout
        logits = answer_logits(
            optim.cast_for_compute(params, compute_dtype),
            batch["input_ids"],
            batch["video"],
            batch["attention_mask"],
            config=model_cfg,
        )
        return yes_no_loss(logits, batch["label"], yes_token_id=yes, no_token_id=no)

    initial_params = None  # from scratch (tiny/sim)
    if is_hf_checkpoint(r.train.init_from):
        from vlaw.convert.qwen3_vl import load_checkpoint

        def initial_params(target):  # called only when there is no checkpoint to resume
            return load_checkpoint(r.train.init_from, dtype=np.dtype(model_cfg.param_dtype))[1]

    elif r.train.init_from:  # a vlaw reward run
        initial_params = checkpoints.params_loader(r.train.init_from)
    data_hw = (config.data.image_height, config.data.image_width)
    batches = windows.reward_batches(
        dirs,
        batch_size=windows.host_batch_size(r.train.batch_size),
        num_frames=r.num_frames,
        camera=r.camera,
        seed=config.seed,
        shuffle_buffer=max(1, config.data.shuffle_buffer // r.num_frames),
        num_parallel_reads=config.data.num_parallel_reads,
        image_size=data_hw,
        skip_corrupt=config.data.skip_corrupt,
    )
    try:
        state = trainer.train(
            r.train,
            config.ckpt,
            config.mesh,
            workdir=directory,
            init_fn=init_fn_for(model_cfg),
            loss_fn=loss_fn,
            batches=batches,
            host_fn=host_fn,
            initial_params=initial_params,
            seed=config.seed,
            progress=r.progress,
        )
    finally:
        batches.close()
    step = int(jax.device_get(state.step))
    logged = (trainer.read_metrics(directory) or [{}])[-1]
    summary: dict[str, Any] = {
        "trained": True,
        "checkpoint_dir": directory,
        "step": step,
        "dataset_dirs": dirs,
        "final_loss": logged.get("loss"),
        "final_batch_accuracy": logged.get("accuracy"),  # argmax decision, last log window
        "nonfinite_count": logged.get("nonfinite_count"),
    }
    del state
    if r.evaluate_after_training:
        params, _ = load_trained_params(config, workdir)
        scores = label.score_episodes_for_config(
            config, dirs, params=params, model_cfg=model_cfg, tokenizer=tokenizer, length=length
        )
        report = label.confusion_report(scores, r.alpha, known_sources=tuple(r.known_label_sources))
        summary["train_accuracy_alpha"] = report["alpha"]["accuracy"]
        summary["train_accuracy_argmax"] = report["argmax"]["accuracy"]
        summary["train_confusion"] = report
    return summary
