"""Algorithm 1's reward-model update: Qwen3-VL fine-tuned on D_real's success labels
(paper Appendix C).

    train_reward_phase(config, workdir, iteration)

The paper fine-tunes the reward model once, in the first iteration (200 steps at batch 128), as
next-token prediction of a one-token answer ("yes" for a success, "no" otherwise;
`vlaw.losses.yes_no_loss`) on 16 uniformly sampled frames of one camera. Here:

- data: every real rollout so far, labelled by the station, and, when `reward.train_on_demos`,
  the warm-start demonstrations (`vlaw.workdir.reward_training_dirs`). Demos are on by default
  for tiny/sim, where they add labelled episodes to a handful of rollouts, and off for paper,
  whose D_real is the policy's rollouts only;
- replays, when `reward.train_on_world_model_replays`: those episodes replayed whole in this
  iteration's world model with their recorded labels (`vlaw.rollout.recorded_replay`), written
  once to `iter_NN/reward_replays` (a rerun reuses them) and trained on beside them, so the
  model also learns how imagined episodes look; the summary gives its accuracy on them apart;
- weights: from scratch at tiny/sim, or `reward.train.init_from`: a Hugging Face
  Qwen3-VL-4B-Instruct directory (config.json + safetensors, via `vlaw.convert.qwen3_vl`) or
  another vlaw run's checkpoint directory;
- tokenizer: `reward.tokenizer_path` (Qwen's, from a local directory), else the HF
  `init_from` directory when it holds one, else (tiny/sim only) the small tokenizer built on
  the fly;
- after training, every training episode is scored once more and the summary reports the
  train accuracy at alpha and at the argmax decision.

It trains at iteration 1, the first with real rollouts, into `checkpoints/reward/iter_01`; later
iterations reuse it (the paper does not retrain the reward model) and the phase returns at
once, unless `loop.retrain_reward`, where each iteration continues from the previous
iteration's reward model on all labelled rollouts so far. `label` scores with the newest
reward model at or before its iteration. The model as configured, its inputs and its scoring:
`vlaw.agents.reward`.
"""

import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from vlaw import multihost
from vlaw import workdir as workdir_lib
from vlaw.agents import reward as reward_agent
from vlaw.agents import world_model as world_model_agent
from vlaw.data import reward_windows, rlds_read, rlds_write, windows
from vlaw.eval.confusion import confusion_report
from vlaw.rollout import recorded_replay
from vlaw.rollout.imagine import steps_per_interaction
from vlaw.train import trainer


def train_reward_phase(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> dict:
    """Fine-tunes the reward model (iteration 0; later iterations keep it). Returns the summary."""
    r = config.reward
    directory = workdir_lib.checkpoint_dir(workdir, "reward", iteration)
    if iteration == 0:
        raise ValueError(
            "train_reward runs from iteration 1, the first with real rollouts to learn success "
            "from (iteration 0 collects the demonstrations and trains the base policy)"
        )
    if iteration > 1 and not config.loop.retrain_reward:
        kept = workdir_lib.newest_checkpoint_dir(
            workdir, "reward", iteration, reward_agent.is_trained
        )
        logging.info("train_reward: iteration %d keeps the reward model in %s", iteration, kept)
        return {"trained": False, "checkpoint_dir": kept, "reason": "paper: iteration 1 only"}
    start = workdir_lib.model_start(
        workdir,
        "reward",
        iteration,
        str(r.train.init_from or ""),
        is_trained=reward_agent.is_trained,
    )
    dirs = workdir_lib.reward_training_dirs(
        workdir, iteration, include_demos=bool(r.train_on_demos)
    )
    if r.train_on_world_model_replays:
        dirs = dirs + [write_world_model_replays(config, workdir, iteration, dirs)]
    image_hw = rlds_read.open_dataset(dirs[0]).image_shape[:2]
    model_cfg = reward_agent.model_config(config)
    tokenizer = reward_agent.reward_tokenizer(config)
    length = reward_agent.prompt_length(tokenizer, model_cfg, image_hw, config)
    seed = workdir_lib.phase_seed(config.seed, "train_reward", iteration)

    def host_fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        instructions = [s.decode("utf-8") for s in batch["instruction"]]
        inputs = reward_agent.model_inputs(
            tokenizer, list(batch["frames"]), instructions, model_cfg=model_cfg, length=length
        )
        return {**inputs, "label": batch["label"]}

    data_hw = (config.data.image_height, config.data.image_width)
    batches = reward_windows.reward_batches(
        dirs,
        batch_size=windows.host_batch_size(r.train.batch_size),
        num_frames=r.num_frames,
        camera=r.camera,
        seed=seed,
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
            init_fn=reward_agent.init_fn_for(model_cfg),
            loss_fn=reward_agent.make_loss_fn(model_cfg, tokenizer),
            batches=batches,
            host_fn=host_fn,
            initial_params=reward_agent.initial_params(config, start.path),
            seed=seed,
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
        "init": start.kind,
        "final_loss": logged.get("loss"),
        "final_batch_accuracy": logged.get("accuracy"),  # argmax decision, last log window
        "nonfinite_count": logged.get("nonfinite_count"),
        # Unreadable records skipped (data.skip_corrupt), counted on every pass over the data.
        "skipped_corrupt_records": batches.read_report.num_skipped,
    }
    del state
    if r.evaluate_after_training:
        params, _ = reward_agent.load_trained_params(config, directory)
        scores = reward_agent.score_episodes_for_config(
            config, dirs, params=params, model_cfg=model_cfg, tokenizer=tokenizer, length=length
        )
        report = confusion_report(scores, r.alpha, known_sources=tuple(r.known_label_sources))
        summary["train_accuracy_alpha"] = report["alpha"]["accuracy"]
        summary["train_accuracy_argmax"] = report["argmax"]["accuracy"]
        summary["train_confusion"] = report
        if r.train_on_world_model_replays:
            replays = confusion_report(scores, r.alpha, known_sources=(recorded_replay.SOURCE,))
            summary["train_confusion_replays"] = replays
    return summary


def write_world_model_replays(config, workdir: str, iteration: int, dirs: list[str]) -> str:
    """`dirs`' episodes replayed in iteration `iteration`'s world model, written once as the
    RLDS dataset `iter_NN/reward_replays` (kept when it exists: the rerun of a phase killed
    while training). In a multi-host job the chief replays (on its own devices) and writes;
    the others wait for the dataset. Returns its directory."""
    out = workdir_lib.reward_replays_dir(workdir, iteration)
    barrier = f"vlaw_reward_replays_iter_{iteration:02d}"
    exists = os.path.exists(out)
    # Every process has looked before the chief writes: one decision everywhere.
    multihost.barrier(f"{barrier}_looked")
    if exists:
        logging.info("train_reward: %s exists, keeping it", out)
        return out
    world_dir = workdir_lib.checkpoint_dir(workdir, "world_model", iteration)
    if not world_model_agent.is_trained(world_dir):
        raise FileNotFoundError(
            f"reward.train_on_world_model_replays: no world model in {world_dir}; run "
            f"train_world_model for iteration {iteration} first, or turn the option off"
        )
    # Loaded by every process, as `imagine` does: a checkpoint's restore may be a collective.
    world = world_model_agent.load_world_model(config, world_dir)
    if multihost.is_chief():
        _replay_and_write(config, world, iteration, dirs, out)
    multihost.barrier(f"{barrier}_written")
    return out


def _replay_and_write(config, world, iteration: int, dirs: list[str], out: str) -> None:
    lengths = rlds_read.episode_lengths(dirs, skip_corrupt=bool(config.data.skip_corrupt))
    size = int(config.loop.imagine_batch_size)
    interactions = -(-max(lengths) // steps_per_interaction(config))
    seed = workdir_lib.phase_seed(config.seed, "reward_replays", iteration)
    with tqdm(
        total=-(-len(lengths) // size) * interactions,
        desc="replay for reward",
        unit="interaction",
        disable=not config.reward.progress,
    ) as bar:
        replays = recorded_replay.world_model_replays(
            world,
            rlds_read.read_episodes(dirs, skip_corrupt=bool(config.data.skip_corrupt)),
            config=config,
            iteration=iteration,
            longest=max(lengths),
            rng=jax.random.PRNGKey(seed),
            batch_size=size,
            bar=bar,
        )
        written = rlds_write.write_episodes(
            out,
            replays,
            name="vlaw_reward_replays",
            episodes_per_shard=int(config.data.episodes_per_shard),
        )
    logging.info("train_reward: wrote %d world-model replays to %s", written["num_episodes"], out)
