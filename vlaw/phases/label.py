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

The scoring itself is `vlaw.agents.reward.score_episodes` (the `train_reward` phase reports
train accuracy with it).

In a multi-host job (`vlaw.multihost`) the chief alone scores and rewrites: two writers of one
dataset would collide, and scoring is small beside `imagine` (one forward pass per episode
against dozens of world-model chunks). Every process loads the reward model (a checkpoint's
restore is a collective of all processes); the others then wait at a barrier until the scores
are written, and return a summary without them.
"""

import os
import time

import ml_collections
from absl import logging

from vlaw import multihost
from vlaw import workdir as workdir_lib
from vlaw.agents import reward as reward_agent
from vlaw.data import rlds_read, rlds_write
from vlaw.eval.confusion import confusion_report

SCORE_FIELD = "episode_metadata/reward_score"
KEPT_FIELD = "episode_metadata/kept"


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
    r = config.reward
    dirs = label_dataset_dirs(config, workdir, iteration)
    trained = workdir_lib.newest_checkpoint_dir(
        workdir, "reward", iteration, reward_agent.is_trained
    )
    params, params_from = reward_agent.load_trained_params(config, trained)
    if not multihost.is_chief():
        multihost.barrier(f"vlaw_label_iter_{iteration:02d}_written")
        return {"dataset_dirs": dirs, "reward_params": params_from, "alpha": float(r.alpha)}
    model_cfg = reward_agent.model_config(config)
    tokenizer = reward_agent.reward_tokenizer(config)
    image_hw = rlds_read.open_dataset(dirs[0]).image_shape[:2]
    length = reward_agent.prompt_length(tokenizer, model_cfg, image_hw, config)
    start = time.perf_counter()
    scores = reward_agent.score_episodes_for_config(
        config, dirs, params=params, model_cfg=model_cfg, tokenizer=tokenizer, length=length
    )
    seconds = time.perf_counter() - start
    kept = scores.p_yes > r.alpha
    by_key = {
        k: {SCORE_FIELD: float(s), KEPT_FIELD: bool(x)}
        for k, s, x in zip(scores.keys, scores.p_yes, kept, strict=True)
    }
    for dataset_dir in dirs:
        shards = set(rlds_read.open_dataset(dataset_dir).shard_paths)
        rlds_write.rewrite_episode_metadata(
            dataset_dir, {k: v for k, v in by_key.items() if k[0] in shards}
        )
    report = confusion_report(scores, r.alpha, known_sources=tuple(r.known_label_sources))
    logging.info("label: %d episodes, %d kept; confusion %s", len(scores), kept.sum(), report)
    multihost.barrier(f"vlaw_label_iter_{iteration:02d}_written")
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
