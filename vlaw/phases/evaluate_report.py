"""What `evaluate` does after the station episodes: the world-model checks and the report.

    world_model_checks(config, workdir, iteration) -> world_model.json's payload
    write_reports(workdir, iteration) -> reports/iter_NN/report.html (and reports/index.html)

World-model checks (`evaluate.world_model_checks`; from the first iteration with a trained world
model, the newest at or before NN; the reward model likewise, else `reward.train.init_from`):

1. Action replay (Table 1, `vlaw.eval.action_replay`): `evaluate.replay_clips` clips of this
   iteration's evaluate episodes, which no trainer reads, each `evaluate.replay_seconds` long;
   PSNR, SSIM, LPIPS of `evaluate.camera` against the recording, beside the copy-the-start
   baseline, and strips (recorded | imagined) of the first `evaluate.report_clips`.
2. Event confusion (Table 1, right): `evaluate.confusion_clips` whole episodes replayed from
   their first frame; the imagined outcome (the reward model on `reward.camera`, or the label
   file `evaluate.confusion_labels`) against the episode's recorded `success`.
3. The world model as a policy evaluator (`vlaw.eval.policy_ranking`), when two or more
   policies have station metrics (this run's up to NN, and those of the baseline runs in
   `evaluate.baseline_workdirs`): each imagined from the first frames of iteration 0's
   evaluate episodes (`evaluate.evaluator_starts_per_task` starts x
   `evaluate.evaluator_rollouts_per_start` rollouts per task), decided by the reward model, and
   the imagined rates correlated with the station's; rollout grids (Fig. 8) of the newest.

Noise: one key from the "evaluate_world_model" seed stream, split three ways; every policy is
imagined with the same key (common random numbers: the comparison sees the policies, not the
sampler's luck). A part whose inputs are missing is skipped with the reason in the report.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from absl import logging

from vlaw import workdir as workdir_lib
from vlaw.agents import policy as policy_agent
from vlaw.agents import reward as reward_agent
from vlaw.agents import world_model as world_model_agent
from vlaw.convert import metric_nets
from vlaw.data import droid, rlds_read
from vlaw.data.atomic_json import read_json, write_json
from vlaw.eval import action_replay as replay_lib
from vlaw.eval import images
from vlaw.eval import policy_ranking as ranking_lib
from vlaw.eval import report as report_lib
from vlaw.eval.prediction import resize_frames
from vlaw.rollout.imagine import steps_per_interaction
from vlaw.rollout.imagine_plan import start_states
from vlaw.train.trainer import read_metrics

FIGURES = report_lib.FIGURES


def _relative_figure(figures_dir: str, name: str, image: np.ndarray) -> str:
    images.write_png(os.path.join(figures_dir, name), image)
    return f"{FIGURES}/{name}"


def _lpips_params(config, frame_size) -> tuple[dict | None, str | None]:
    """(LPIPS params, None) or (None, why LPIPS is not computed)."""
    ev = config.evaluate
    if not ev.lpips_weights:
        return None, (
            "LPIPS not computed: no weights (set evaluate.lpips_weights to an lpips.LPIPS "
            "state dict; the backbone is not shipped in any wheel)"
        )
    minimum = 63 if ev.lpips_backbone == "alex" else 16  # vlaw.eval.video_metrics.lpips
    if min(frame_size) < minimum:
        return None, f"LPIPS not computed: frames {frame_size} below its {minimum} px minimum"
    state = metric_nets.load_torch_state_dict(ev.lpips_weights)
    return metric_nets.lpips_params(ev.lpips_backbone, state, state), None


def _episode_count_and_longest(dataset_dir: str) -> tuple[int, int]:
    steps = rlds_read.episode_lengths(dataset_dir)
    return len(steps), max(steps, default=0)


def action_replay_check(config, world, dataset_dir: str, figures_dir: str, rng) -> dict:
    """Part 1 of the module docstring: the replay scores and their strips."""
    ev = config.evaluate
    num_episodes, _ = _episode_count_and_longest(dataset_dir)
    if num_episodes == 0 or int(ev.replay_clips) <= 0:
        return {"skipped": f"no clips (evaluate.replay_clips={ev.replay_clips}, {dataset_dir})"}
    stride, steps = int(config.world_model.frame_stride), steps_per_interaction(config)
    chunks = replay_lib.chunks_for_seconds(config, float(ev.replay_seconds))
    camera = droid.CAMERA_NAMES.index(ev.camera)
    # Frames past replay_seconds (whole chunks overshoot it) are not scored.
    scored_steps = round(float(ev.replay_seconds) * droid.FRAME_RATE_HZ)
    in_time = stride * np.arange(1, chunks * steps // stride + 1) <= scored_steps
    clips = replay_lib.replay_clips(
        rlds_read.read_episodes(dataset_dir),
        num_clips=int(ev.replay_clips),
        num_episodes=num_episodes,
        num_steps=chunks * steps,
        stride=stride,
    )
    size = world.pixel_size
    lpips_params, lpips_note = _lpips_params(config, size)
    per_batch, rows = [], []
    batches = replay_lib.replay_in_world_model(
        world, clips, config=config, rng=rng, batch_size=int(config.loop.imagine_batch_size)
    )
    for part, predicted in batches:
        recorded = replay_lib.frames_at_model_size(part, camera, size)
        valid = np.stack([c.valid for c in part]) & in_time
        scores = replay_lib.clip_scores(
            predicted[:, :, camera],
            recorded,
            valid,
            replay_lib.start_frames_at_model_size(part, camera, size),
            lpips_params=lpips_params,
        )
        per_batch.append(scores)
        for b, clip in enumerate(part):
            row = {"clip_id": clip.clip_id, "task": clip.task}
            row.update({k: None if v is None else float(v[b]) for k, v in scores.items()})
            if len(rows) < int(ev.report_clips):
                strip = images.replay_strip(recorded[b], predicted[b, :, camera], valid[b])
                row["strip"] = _relative_figure(figures_dir, f"replay_{len(rows):02d}.png", strip)
            rows.append(row)
    notes = [lpips_note] if lpips_note else []
    if min(size) < 11:
        notes.append(f"SSIM not computed: frames {size} smaller than its 11x11 window")
    return {
        "dataset_dir": dataset_dir,
        "camera": ev.camera,
        "seconds": float(ev.replay_seconds),
        "chunks": chunks,
        "frame_size": list(size),
        "summary": replay_lib.summarize_scores(per_batch),
        "notes": notes,
        "clips": rows,
    }


def event_confusion_check(config, world, scorer, dataset_dir: str, figures_dir: str, rng) -> dict:
    """Part 2 of the module docstring: the confusion counts and each clip's outcomes."""
    ev = config.evaluate
    labels = read_json(ev.confusion_labels) if ev.confusion_labels else {}
    if scorer is None and not labels:
        return {"skipped": "no reward model and no evaluate.confusion_labels to decide outcomes"}
    num_episodes, longest = _episode_count_and_longest(dataset_dir)
    if num_episodes == 0 or int(ev.confusion_clips) <= 0:
        return {"skipped": f"no clips (evaluate.confusion_clips={ev.confusion_clips})"}
    stride, steps = int(config.world_model.frame_stride), steps_per_interaction(config)
    camera = droid.CAMERA_NAMES.index(config.reward.camera)
    clips = replay_lib.replay_clips(
        rlds_read.read_episodes(dataset_dir),
        num_clips=int(ev.confusion_clips),
        num_episodes=num_episodes,
        num_steps=-(-longest // steps) * steps,
        stride=stride,
        from_first_step=True,
    )
    size = world.pixel_size
    rows, p_yes = [], []
    batches = replay_lib.replay_in_world_model(
        world, clips, config=config, rng=rng, batch_size=int(config.loop.imagine_batch_size)
    )
    for part, predicted in batches:
        starts = replay_lib.start_frames_at_model_size(part, camera, size)
        if scorer is not None:
            videos = [
                replay_lib.held_frames(s, p[:, camera], stride) for s, p in zip(starts, predicted)
            ]
            p_yes += list(scorer.p_yes(videos, [c.start.instruction for c in part]))
        recorded = replay_lib.frames_at_model_size(part, camera, size)
        for b, clip in enumerate(part):
            row = {"clip_id": clip.clip_id, "task": clip.task, "recorded": clip.success}
            if len(rows) < int(ev.report_clips):
                strip = images.replay_strip(recorded[b], predicted[b, :, camera], part[b].valid)
                name = f"confusion_{len(rows):02d}.png"
                row["strip"] = _relative_figure(figures_dir, name, strip)
            rows.append(row)
    ids = [row["clip_id"] for row in rows]
    scores = np.asarray(p_yes, np.float32) if scorer is not None else None
    imagined, decided_by = replay_lib.imagined_outcomes(
        ids, scores, float(config.reward.alpha), labels
    )
    for i, row in enumerate(rows):
        row.update(imagined=bool(imagined[i]), decided_by=decided_by[i])
        row["p_yes"] = None if scores is None else float(scores[i])
    recorded = np.asarray([row["recorded"] for row in rows], bool)
    return {
        "dataset_dir": dataset_dir,
        "description": (
            f"{len(rows)} whole episodes of {dataset_dir} replayed from their first frame; "
            "recorded outcome: the episode's success label (on the simulated station the "
            "true outcome of the replayed actions); imagined outcome: "
            + (
                f"the reward model's P(yes) > {config.reward.alpha} on {config.reward.camera}"
                if scorer is not None
                else "none"
            )
            + (f", or the label file {ev.confusion_labels}" if labels else "")
            + "."
        ),
        "counts": replay_lib.event_confusion(recorded, imagined),
        "clips": rows,
    }


def evaluated_policies(
    workdir: str, iteration: int, *, method: str, prefix: str = ""
) -> list[tuple[str, str, float]]:
    """(name, checkpoint dir, station success rate over all tasks) of a run's policies with
    station metrics up to `iteration`, names prefixed by `prefix` (DSRL's steered policies,
    iterations >= 1 of a "dsrl" run, act per station episode and are not imagined)."""
    found = []
    for i in range(iteration + 1):
        path = workdir_lib.report_file(workdir, i, report_lib.METRICS_FILE)
        directory = workdir_lib.checkpoint_dir(workdir, "policy", i)
        steered = method == "dsrl" and i > 0
        if steered or not os.path.exists(path) or not policy_agent.is_trained(directory):
            continue
        metrics = read_json(path)
        tasks = metrics["tasks"].values()
        rate = sum(t["successes"] for t in tasks) / sum(t["episodes"] for t in tasks)
        found.append((prefix + report_lib.policy_name(metrics), directory, rate))
    return found


def baseline_policies(config) -> list[tuple[str, str, float]]:
    """`evaluated_policies` of every run in `evaluate.baseline_workdirs`, all its iterations,
    named "<method> <policy>" after the method its config.json records."""
    found = []
    for directory in config.evaluate.baseline_workdirs:
        method = read_json(os.path.join(directory, "config.json")).get("method", "baseline")
        iterations = workdir_lib.report_iterations(directory)
        last = max(iterations, default=-1)
        found += evaluated_policies(directory, last, method=method, prefix=f"{method} ")
    return found


def policy_evaluator_check(config, workdir: str, iteration: int, world, scorer, figures_dir, rng):
    """Part 3 of the module docstring: the ranking report and the newest policy's grids."""
    ev = config.evaluate
    policies = baseline_policies(config)
    policies += evaluated_policies(workdir, iteration, method=config.method)
    if len(policies) < 2:
        return {"skipped": f"{len(policies)} policy with station metrics; the comparison needs 2"}
    if scorer is None:
        return {"skipped": "no reward model to decide imagined rollouts"}
    per_start = int(ev.evaluator_rollouts_per_start)
    found = start_states(config.tasks, [workdir_lib.evaluation_dir(workdir, 0)])
    starts = [
        state
        for task in config.tasks
        for state in found[task][: int(ev.evaluator_starts_per_task)]
        for _ in range(per_start)
    ]
    batch_size = int(config.loop.imagine_batch_size)
    camera = droid.CAMERA_NAMES.index(config.reward.camera)
    imagined_rates, grids = [], []
    for index, (name, directory, _) in enumerate(policies):
        policy = policy_agent.load_policy(directory)
        frames = ranking_lib.imagine_policy(
            world, policy, starts, config=config, rng=rng, batch_size=batch_size
        )
        success = ranking_lib.imagined_p_yes(scorer, frames, starts, config) > config.reward.alpha
        imagined_rates.append(float(success.mean()))
        logging.info("evaluate: %s imagined success %.2f", name, imagined_rates[-1])
        if index != len(policies) - 1:
            continue
        for g, first in enumerate(range(0, len(starts), per_start)[: int(ev.report_clips)]):
            start = resize_frames(starts[first].images[camera], world.pixel_size)
            futures = [
                (frames[k, 1:, camera], bool(success[k])) for k in range(first, first + per_start)
            ]
            image = images.rollout_grid(start, futures)
            grids.append(
                {
                    "policy": name,
                    "start": starts[first].episode_id,
                    "image": _relative_figure(figures_dir, f"grid_{g:02d}.png", image),
                }
            )
    report = ranking_lib.ranking_report(
        [name for name, _, _ in policies], [rate for _, _, rate in policies], imagined_rates
    )
    return {**report, "rollouts_per_policy": len(starts), "grids": grids}


def world_model_checks(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> dict:
    """Runs the three checks of the module docstring; returns world_model.json's payload."""
    world_dir = workdir_lib.newest_checkpoint_dir(
        workdir, "world_model", iteration, world_model_agent.is_trained
    )
    if world_dir is None:
        return {"skipped": f"no trained world model at or before iteration {iteration}"}
    world = world_model_agent.load_world_model(config, world_dir)
    reward_dir = workdir_lib.newest_checkpoint_dir(
        workdir, "reward", iteration, reward_agent.is_trained
    )
    scorer = None
    if reward_dir or config.reward.train.init_from:
        scorer = reward_agent.load_reward_scorer(config, reward_dir)
    figures_dir = os.path.join(workdir_lib.reports_dir(workdir, iteration), FIGURES)
    os.makedirs(figures_dir, exist_ok=True)
    dataset_dir = workdir_lib.evaluation_dir(workdir, iteration)
    seed = workdir_lib.phase_seed(config.seed, "evaluate_world_model", iteration)
    replay_rng, confusion_rng, ranking_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {
        "world_model_checkpoint_dir": world_dir,
        "reward_params": scorer.params_from if scorer is not None else None,
        "replay": action_replay_check(config, world, dataset_dir, figures_dir, replay_rng),
        "confusion": event_confusion_check(
            config, world, scorer, dataset_dir, figures_dir, confusion_rng
        ),
        "ranking": policy_evaluator_check(
            config, workdir, iteration, world, scorer, figures_dir, ranking_rng
        ),
    }


def write_world_model_checks(config, workdir: str, iteration: int) -> dict:
    analysis = world_model_checks(config, workdir, iteration)
    write_json(workdir_lib.report_file(workdir, iteration, report_lib.WORLD_MODEL_FILE), analysis)
    return analysis


def write_reports(workdir: str, iteration: int) -> str:
    """reports/iter_NN/report.html from the run directory, and reports/index.html."""

    def payload(i: int, name: str) -> dict | None:
        path = workdir_lib.report_file(workdir, i, name)
        return read_json(path) if os.path.exists(path) else None

    history = [m for i in range(iteration + 1) if (m := payload(i, report_lib.METRICS_FILE))]
    logs = {
        model: [
            (f"iter_{i:02d}", read_metrics(workdir_lib.checkpoint_dir(workdir, model, i)))
            for i in range(iteration + 1)
        ]
        for model in report_lib.MODELS
    }
    path = report_lib.write_report(
        workdir_lib.reports_dir(workdir, iteration),
        iteration=iteration,
        history=history,
        analysis=payload(iteration, report_lib.WORLD_MODEL_FILE) or {},
        training_logs=logs,
    )
    entries = [
        (f"iter_{i:02d}/{report_lib.REPORT_FILE}", i, payload(i, report_lib.METRICS_FILE))
        for i in workdir_lib.report_iterations(workdir)
        if os.path.exists(workdir_lib.report_file(workdir, i, report_lib.REPORT_FILE))
    ]
    report_lib.write_index(workdir_lib.reports_index(workdir), entries)
    return path
