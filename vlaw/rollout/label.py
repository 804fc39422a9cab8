"""The `label` phase: the reward model scores rollouts, and the score decides what is kept.

    label_phase(config, workdir, iteration)

Algorithm 1, line "label D_syn": every episode of the datasets named by
`reward.label_dataset_dirs` (default `iter_{k}/synthetic`, written by `imagine`) is scored with
P(first answer token = "yes") over 16 uniformly sampled frames of `reward.camera`, and its
metadata gets `reward_score = P(yes)` and `kept = P(yes) > alpha` (Eq. 3, alpha = 0.8).

Writing back is lossless and atomic (`vlaw.data.rlds_write.rewrite_episode_metadata`): only
the two metadata features change, no JPEG is decoded and re-encoded, and a crash leaves either
the old dataset or the new one (or, between two renames, a complete backup beside it).

Where an episode's success is known (`reward.known_label_sources`: real rollouts and demos
labelled by the station, DROID's path labels, and synthetic episodes when `imagine` stores the
simulator's replayed outcome), the summary holds the confusion matrix at alpha and at the raw
argmax decision P(yes) > P(no): the paper's Table 3 comparison.

`score_episodes` is the reusable part (the `train_reward` phase reports train accuracy with it):
batched, jitted, one compilation per run (fixed batch and prompt length), host preprocessing of
the next batch overlapping the device's work on the previous one (results fetched once, at the
end), with a progress bar.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from vlaw.models.reward.qwen3_vl import Qwen3VLConfig, answer_logits
from vlaw.models.reward.tokenizer import answer_token_ids

SCORE_FIELD = "episode_metadata/reward_score"
KEPT_FIELD = "episode_metadata/kept"


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
    video: jax.Array,
    attention_mask: jax.Array,
    *,
    config: Qwen3VLConfig,
    yes_token_id: int,
    no_token_id: int,
) -> tuple[jax.Array, jax.Array]:
    """(P(yes), P(no)) of the first answer token, full-vocabulary softmax. Shapes: -> (B,), (B,).

    Both from one forward: P(yes) > alpha is the paper's decision, P(yes) > P(no) the argmax
    one it is compared with.
    """
    logits = answer_logits(params, input_ids, video, attention_mask, config=config)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.exp(log_probs[:, yes_token_id]), jnp.exp(log_probs[:, no_token_id])


def _episode_clips(layouts, camera: str, num_frames: int):
    """(key, clip (num_frames, H, W, 3) uint8, instruction, success, source) per episode; only
    the sampled frames' JPEGs are decoded."""
    from vlaw.data import rlds_read
    from vlaw.data.transforms import uniform_frame_indices

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
    """Scores every episode of `dataset_dirs` with the reward model.

    `params` are cast to `model_cfg.dtype` once; `length` is the padded prompt length
    (`vlaw.train.reward.prompt_length`). The last batch is padded by repeating its last
    episode (the padding's scores are dropped), so the jitted function sees one shape.
    """
    from vlaw.data import rlds_read
    from vlaw.train import optim
    from vlaw.train.reward import model_inputs

    layouts = [rlds_read.open_dataset(d) for d in dataset_dirs]
    total = sum(layout.num_episodes for layout in layouts)
    yes, no = answer_token_ids(tokenizer)
    params = jax.jit(functools.partial(optim.cast_floating, dtype=model_cfg.dtype))(params)
    score = functools.partial(
        answer_probabilities, config=model_cfg, yes_token_id=yes, no_token_id=no
    )
    outputs, keys, success, source = [], [], [], []
    pending: list[tuple[np.ndarray, str]] = []

    def flush() -> None:
        real = len(pending)
        clips = [c for c, _ in pending] + [pending[-1][0]] * (batch_size - real)
        texts = [t for _, t in pending] + [pending[-1][1]] * (batch_size - real)
        inputs = model_inputs(tokenizer, clips, texts, model_cfg=model_cfg, length=length)
        # Dispatch is asynchronous: the next batch is decoded while this one runs.
        p_yes, p_no = score(params, inputs["input_ids"], inputs["video"], inputs["attention_mask"])
        outputs.append((p_yes, p_no, real))
        pending.clear()

    with tqdm(total=total, unit="episode", desc="reward", disable=not progress) as bar:
        for key, clip, instruction, label, src in _episode_clips(layouts, camera, num_frames):
            pending.append((clip, instruction))
            keys.append(key)
            success.append(label)
            source.append(src)
            if len(pending) == batch_size:
                flush()
                bar.update(batch_size)
        if pending:
            bar.update(len(pending))
            flush()
        fetched = jax.device_get(outputs)  # the one device->host read
    if not keys:
        raise ValueError(f"no episodes in {list(dataset_dirs)}")
    p_yes = np.concatenate([y[:n] for y, _, n in fetched]).astype(np.float32)
    p_no = np.concatenate([q[:n] for _, q, n in fetched]).astype(np.float32)
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


def confusion(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | None]:
    """Counts and rates of a binary decision against known labels (success = positive); a
    rate with an empty denominator is None (state.json stays plain JSON)."""
    predicted, actual = np.asarray(predicted, bool), np.asarray(actual, bool)
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    tn = int(np.sum(~predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    n = tp + fp + tn + fn
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": (tp + tn) / n if n else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
    }


def confusion_report(
    scores: EpisodeScores, alpha: float, *, known_sources: Sequence[str]
) -> dict[str, Any]:
    """Confusion matrices at P(yes) > alpha and at P(yes) > P(no), over the episodes whose
    source carries a trusted success label."""
    known = np.isin(scores.source, list(known_sources))
    actual = scores.success[known]
    return {
        "num_known": int(known.sum()),
        "alpha": confusion(scores.p_yes[known] > alpha, actual),
        "argmax": confusion(scores.p_yes[known] > scores.p_no[known], actual),
    }


def label_dataset_dirs(config: ml_collections.ConfigDict, workdir: str, iteration: int):
    """`reward.label_dataset_dirs` formatted with the iteration, relative to the workdir."""
    dirs = [
        os.path.join(workdir, pattern.format(iteration=iteration))
        for pattern in config.reward.label_dataset_dirs
    ]
    missing = [d for d in dirs if not os.path.isdir(d)]
    if missing:
        raise FileNotFoundError(
            f"label: dataset dir(s) {missing} do not exist (reward.label_dataset_dirs="
            f"{tuple(config.reward.label_dataset_dirs)}; the default iter_NN/synthetic is "
            "written by the imagine phase)"
        )
    return dirs


def label_phase(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> dict:
    """Scores, writes `reward_score` / `kept` back, reports confusion matrices. Summary dict."""
    import time

    from vlaw.data import rlds_read, rlds_write
    from vlaw.train import reward

    r = config.reward
    dirs = label_dataset_dirs(config, workdir, iteration)
    params, params_from = reward.load_trained_params(config, workdir)
    model_cfg = reward.model_config(config)
    tokenizer = reward.reward_tokenizer(config)
    image_hw = rlds_read.open_dataset(dirs[0]).image_shape[:2]
    length = reward.prompt_length(tokenizer, model_cfg, image_hw, config)
    start = time.perf_counter()
    scores = score_episodes_for_config(
        config, dirs, params=params, model_cfg=model_cfg, tokenizer=tokenizer, length=length
    )
    seconds = time.perf_counter() - start
    kept = scores.p_yes > r.alpha
    by_key = {
        k: {SCORE_FIELD: float(s), KEPT_FIELD: bool(x)}
        for k, s, x in zip(scores.keys, scores.p_yes, kept)
    }
    for dataset_dir in dirs:
        layout = rlds_read.open_dataset(dataset_dir)
        shards = set(layout.shard_paths)
        rlds_write.rewrite_episode_metadata(
            dataset_dir, {k: v for k, v in by_key.items() if k[0] in shards}
        )
    report = confusion_report(scores, r.alpha, known_sources=tuple(r.known_label_sources))
    logging.info("label: %d episodes, %d kept; confusion %s", len(scores), kept.sum(), report)
    return {
        "dataset_dirs": dirs,
        "reward_params": params_from,
        "alpha": float(r.alpha),
        "num_episodes": len(scores),
        "num_kept": int(kept.sum()),
        "mean_score": float(scores.p_yes.mean()),
        "confusion": report,
        "episodes_per_s": len(scores) / seconds,
    }
