"""A policy on the station: per-task success with Wilson 95 % intervals.

    evaluate_phase(config, workdir, iteration)

Evaluates the policy that `train_policy` trained at `iteration` (iteration 0: the base policy,
fine-tuned on the demonstrations) for `evaluate.episodes_per_task` episodes per task, on
layouts from the "evaluate" seed stream, which no training phase draws from; every iteration
is evaluated on the same layouts, so policies are compared on equal footing. The episodes go
through the Station protocol (`vlaw.rollout.episodes`), are recorded as RLDS to
`iter_NN/evaluate` (source "evaluate": never trained on) and resume like `collect`'s. The
figures go to `reports/iter_NN/metrics.json` and are printed as a table. With
`config.method = "dsrl"`, iteration k >= 1 evaluates the base policy steered by iteration k's
noise policy (`vlaw.baselines.dsrl.load_steered_policy`).

Then, with `evaluate.world_model_checks`, the world model is checked against the station
(action replay, event confusion, the world model as a policy evaluator:
`vlaw.phases.evaluate_report`) into `reports/iter_NN/world_model.json`, and the iteration's
`report.html` and the run's `reports/index.html` are written.
"""

import collections
import os

import ml_collections
from absl import logging

from vlaw import workdir as workdir_lib
from vlaw.data import rlds_read
from vlaw.eval.report import METRICS_FILE
from vlaw.eval.success import success_table, task_success
from vlaw.robot.recording import station_recorder


def evaluated_successes(dataset_dir: str) -> dict[str, dict]:
    """{task: task_success(...) and the mean steps per episode} from a recorded dataset's
    metadata (no image is decoded). Episodes run `sim.max_steps` steps: the station labels the
    final state, after the success's holding period (Appendix B)."""
    successes, steps = collections.Counter(), collections.defaultdict(list)
    for raw in rlds_read.iter_raw_episodes(rlds_read.open_dataset(dataset_dir)):
        metadata = rlds_read.metadata_from_raw(raw)
        successes[metadata.task] += int(metadata.success)
        steps[metadata.task].append(int(raw["num_steps"]))
    return {
        task: {
            **task_success(successes[task], len(lengths)),
            "mean_episode_steps": sum(lengths) / len(lengths),
        }
        for task, lengths in sorted(steps.items())
    }


def evaluate_phase(config: ml_collections.ConfigDict, workdir: str, iteration: int) -> dict:
    """Evaluates iteration `iteration`'s policy (see the module docstring). Returns the summary
    (the metrics.json payload)."""
    record = station_recorder(config)
    from vlaw.agents import policy as policy_agent  # JAX: only once a policy acts
    from vlaw.baselines import dsrl  # JAX too (method "dsrl": a steered base policy)
    from vlaw.phases import evaluate_report  # JAX too (the world model, the report's curves)

    if config.method == "dsrl" and iteration > 0:
        # DSRL: the base policy steered by this iteration's noise policy (loaded below).
        directory = workdir_lib.checkpoint_dir(workdir, "dsrl", iteration)
        is_trained, trained_by = dsrl.is_trained, "train_dsrl"
    else:
        directory = workdir_lib.checkpoint_dir(workdir, "policy", iteration)
        is_trained, trained_by = policy_agent.is_trained, "train_policy"
    if not is_trained(directory):
        raise FileNotFoundError(
            f"evaluate iter_{iteration:02d}: no policy in {directory}; run the {trained_by} "
            f"phase of iteration {iteration} first"
        )
    dataset_dir = workdir_lib.evaluation_dir(workdir, iteration)
    if not os.path.exists(dataset_dir):
        per_task = int(config.evaluate.episodes_per_task)
        # Iteration 0's layouts for every iteration: the same starts for every policy.
        specs = workdir_lib.task_specs(config, "evaluate", 0, per_task)
        seed = workdir_lib.phase_seed(config.seed, "evaluate", iteration)
        if trained_by == "train_dsrl":
            base_policy_dir = workdir_lib.checkpoint_dir(workdir, "policy", 0)
            policy = dsrl.load_steered_policy(
                config, directory, base_policy_dir=base_policy_dir, specs=specs, seed=seed
            )
        else:
            policy = policy_agent.load_policy(directory, seed=seed)
        record(config, dataset_dir, specs, "evaluate", iteration, "vlaw_evaluate", policy=policy)
    per_task = evaluated_successes(dataset_dir)
    metrics = {
        "iteration": iteration,
        "policy": "base" if iteration == 0 else f"iteration {iteration}",
        "policy_checkpoint_dir": directory,
        "dataset_dir": dataset_dir,
        "tasks": per_task,
    }
    path = workdir_lib.report_file(workdir, iteration, METRICS_FILE)
    workdir_lib.write_json(path, metrics)
    table = success_table([(metrics["policy"], per_task)], list(per_task))
    logging.info("evaluate iter_%02d (%s):\n%s", iteration, path, table)
    print(table, flush=True)
    if config.evaluate.world_model_checks:
        evaluate_report.write_world_model_checks(config, workdir, iteration)
    report = evaluate_report.write_reports(workdir, iteration)
    logging.info("evaluate iter_%02d: report %s", iteration, report)
    return metrics
