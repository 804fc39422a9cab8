"""Algorithm 1's policy update: pi0.5 post-trained on D_real+ and D_syn+ (Eq. 4).

    train_policy_phase(config, workdir, iteration)

At iteration k the policy trains on the demonstrations, every `iter_{0..k}/real` and every
`iter_{0..k}/synthetic` that exists (`vlaw.workdir.policy_training_dirs`; no real rollouts with
`loop.policy_real_rollouts=False`, Figure 9's ablation). Each example carries
its episode's weight (Eq. 4): the station's `success` label for demos and real rollouts, the
reward model's `kept` decision (P("yes") > alpha, Eq. 3) for synthetic ones; failures weigh 0,
contribute nothing to the self-normalised loss, and are left out of the batches.

Steps: `policy.warmstart_steps` for the base policy (iteration 0) where set, else
`policy.train.steps` (`train_section`). Starting point (`vlaw.workdir.model_start`): the
previous iteration's policy; else `policy.train.init_from` (an openpi checkpoint directory
holding `params/`, or a vlaw policy directory); else a fresh initialisation. Resume (the same
iteration interrupted) is separate and always wins: the trainer restores the newest checkpoint
of the iteration's own directory, with its data position. The checkpoint directory's layout:
`vlaw.agents.policy`.
"""

import dataclasses
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from vlaw import workdir as workdir_lib
from vlaw.agents import policy as policy_agent
from vlaw.data import policy_windows, rlds_read
from vlaw.models.policy import pi05
from vlaw.models.policy.tokenizer import clean_prompt
from vlaw.train import trainer


@dataclasses.dataclass
class DataSummary:
    """What one pass over the training episodes' records finds (images stay encoded)."""

    num_episodes: int = 0
    num_steps: int = 0
    weighted_episodes: int = 0  # episodes of weight 1 (Eq. 4)
    weighted_steps: int = 0
    instructions: tuple[str, ...] = ()
    skipped_corrupt: int = 0  # unreadable records skipped (data.skip_corrupt)


def scan_episodes(
    dataset_dirs: Sequence[str], skip_corrupt: bool = False, failed_demos: bool = False
) -> DataSummary:
    summary, instructions, report = DataSummary(), set(), rlds_read.ReadReport()
    for dataset_dir in dataset_dirs:
        layout = rlds_read.open_dataset(dataset_dir)
        raws = rlds_read.iter_raw_episodes(layout, skip_corrupt=skip_corrupt, report=report)
        for raw in raws:
            weight = policy_windows.episode_weight(rlds_read.metadata_from_raw(raw), failed_demos)
            summary.num_episodes += 1
            summary.num_steps += int(raw["num_steps"])
            summary.weighted_episodes += int(weight > 0)
            summary.weighted_steps += int(weight > 0) * int(raw["num_steps"])
            instructions.add(clean_prompt(rlds_read.instruction_from_raw(raw)))
    summary.instructions = tuple(sorted(instructions))
    summary.skipped_corrupt = report.num_skipped
    return summary


def training_dirs(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> list[str]:
    """The datasets of iteration `iteration`'s update (`vlaw.workdir.policy_training_dirs`),
    without the real rollouts when `loop.policy_real_rollouts` is off (Figure 9)."""
    real = bool(config.loop.policy_real_rollouts)
    return workdir_lib.policy_training_dirs(workdir, iteration, real_rollouts=real)


def train_section(config: ml_collections.ConfigDict, iteration: int) -> ml_collections.ConfigDict:
    """`policy.train` for iteration `iteration`: at iteration 0 the base policy, trained from
    scratch (or `init_from`), runs `policy.warmstart_steps` steps when set (warmup scaled
    alike); later iterations post-train from the previous policy for `policy.train.steps`."""
    train = config.policy.train
    warm = int(config.policy.warmstart_steps)
    if iteration > 0 or warm <= 0 or warm == int(train.steps):
        return train
    section = ml_collections.ConfigDict(train.to_dict())
    section.warmup_steps = max(1, round(int(train.warmup_steps) * warm / int(train.steps)))
    section.steps = warm
    return section


def prepare(
    config: ml_collections.ConfigDict, workdir: str, iteration: int
) -> tuple[dict, str, DataSummary]:
    """(spec, checkpoint directory, training data) of iteration `iteration`'s policy, prepared
    for training: its start resolved, its tokenizer, norm stats and spec written (once)."""
    dataset_dirs = training_dirs(config, workdir, iteration)
    if not dataset_dirs:
        raise FileNotFoundError(
            f"train_policy: no dataset under {workdir} (demos, iter_NN/real, iter_NN/synthetic); "
            "run the collect phase first"
        )
    directory = workdir_lib.checkpoint_dir(workdir, "policy", iteration)
    start = workdir_lib.model_start(
        workdir,
        "policy",
        iteration,
        str(config.policy.train.init_from or ""),
        is_trained=policy_agent.is_trained,
    )
    data = scan_episodes(dataset_dirs, config.data.skip_corrupt, config.policy.failed_demos)
    spec = policy_agent.prepare_checkpoint_dir(
        config,
        directory,
        start_kind=start.kind,
        start_path=start.path,
        assets_dir=workdir_lib.assets_dir(workdir),
        dataset_dirs=dataset_dirs,
        instructions=data.instructions,
        iteration=iteration,
    )
    return spec, directory, data


def train_policy_phase(
    config: ml_collections.ConfigDict,
    workdir: str,
    iteration: int,
    *,
    stop_at_step: int | None = None,
    progress: bool = True,
) -> dict:
    """Algorithm 1's policy update (see the module docstring). Returns the summary.

    `stop_at_step` ends the call early with a checkpoint, as a preemption would (tests,
    time-limited jobs); calling again resumes exactly.
    """
    spec, directory, data = prepare(config, workdir, iteration)
    dataset_dirs = training_dirs(config, workdir, iteration)
    if data.weighted_episodes == 0:
        logging.warning(
            "train_policy: none of the %d episodes succeeded (or was kept): every example has "
            "weight 0 (Eq. 4), so the policy will not change",
            data.num_episodes,
        )
    model_config = policy_agent.model_config_from_spec(spec)
    preprocessor = policy_agent.preprocessor_for(directory, model_config)
    seed = workdir_lib.phase_seed(config.seed, "train_policy", iteration)
    # Weight-0 examples add nothing to Eq. 4's self-normalised loss (sum w l / sum w), so
    # sampling them only shrinks the batch that trains: 29 % of the sim warm start's (its
    # failed demonstrations), most of an iteration's where few rollouts succeed or are kept.
    # They are left out, unless nothing has weight (the update is then an exact no-op).
    drop_failures = data.weighted_episodes > 0
    # A shuffle buffer larger than the data only mixes epochs, and fills slowly: reading the
    # tiny preset's 120 steps 17 times over before the first batch of a 2000-step buffer.
    steps = data.weighted_steps if drop_failures else data.num_steps
    buffer = min(int(config.data.shuffle_buffer), steps)
    batches = policy_agent.weighted_policy_batches(
        config, dataset_dirs, seed, buffer, drop_failures=drop_failures
    )
    try:
        state = trainer.train(
            train_section(config, iteration),
            config.ckpt,
            config.mesh,
            workdir=directory,
            init_fn=lambda rng: pi05.init_params(model_config, rng)["params"],
            loss_fn=policy_agent.make_loss_fn(pi05.Pi05(model_config)),
            batches=batches,
            host_fn=preprocessor.host_batch,
            initial_params=policy_agent.initial_params(spec, model_config),
            seed=seed,
            progress=progress,
            stop_at_step=stop_at_step,
        )
    finally:
        batches.close()
    curve = trainer.read_metrics(directory)
    summary = {
        "checkpoint": directory,
        "step": int(jax.device_get(state.step)),
        "init": spec["init"]["kind"],
        "init_path": spec["init"]["path"],
        "dataset_dirs": dataset_dirs,
        "norm_stats": spec["norm_stats_origin"],
        "num_episodes": data.num_episodes,
        "num_steps": data.num_steps,
        "weighted_episodes": data.weighted_episodes,
        "weighted_steps": data.weighted_steps,
        "skipped_corrupt_records": data.skipped_corrupt,
        "nonfinite_count": int(jax.device_get(state.nonfinite_count)),
    }
    if curve:
        summary["first_loss"] = curve[0]["loss"]
        summary["final_loss"] = curve[-1]["loss"]
        summary["mean_weight"] = float(np.mean([m["weight_sum"] for m in curve]))
        summary["mean_weight"] /= int(config.policy.train.batch_size)
    logging.info("train_policy iter_%02d: %s", iteration, summary)
    return summary
