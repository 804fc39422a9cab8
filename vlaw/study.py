"""The paper's comparison (§5.3, Figure 7) and ablations (Figure 9, Tables 1 and 3) as one
resumable command: the base policy, filtered BC, DSRL and VLAW after each iteration, on several
task families and seeds.

    python -m vlaw.study --config=experiments/scoop.py:sim --study_dir=runs/study
    python -m vlaw.study --config=experiments/scoop.py:sim --study_dir=runs/study \\
        --ablations=wm_demos_only,half_synthetic,no_real,reward_threshold
    python -m vlaw.study ... --max_runs=2           # two more unfinished runs, then the report
    python -m vlaw.study ... --only='draw/seed_1/*' # runs matching a glob (and their base)
    python -m vlaw.study ... --max_runs=0           # the report alone, from what is done

What runs: for each task of `--tasks` (default `config.study.tasks`: scoop and draw) and each
seed of `--seeds` (default `config.study.seeds`: 0, 1, 2), the `--config` experiment with its
tasks replaced by that one task (as `experiments/<task>.py` with the same preset and
`--config.*` overrides) and `config.seed` set. One run directory per (task, seed, method)
under `<study_dir>/runs/` (`vlaw.workdir.study_run_dir`):

- `base`: the warm start alone (demonstrations, base policy, its evaluation), computed once.
- each method of `--methods` (default filtered_bc, dsrl, vlaw): a normal loop run directory
  whose iteration-0 artifacts are hard links to base's and whose state.json marks the warm
  start done (`share_warm_start`), so it runs iterations 1..N only, and resumes on its own.
- each ablation of `--ablations` that retrains (`ABLATIONS`): one more VLAW run.

A finished run is skipped; an unfinished one resumes where its phases stopped (the loop's own
resume). Each policy is evaluated on `evaluate.episodes_per_task` held-out episodes per task.
The report, `<study_dir>/reports/study/` (`write_reports`), is rewritten at the end of every
sitting from every evaluation done so far: table.md and table.json (success per method, task and
iteration: pooled over seeds with a Wilson 95 % interval, and the across-seed mean and
spread), figure7.svg, and with ablations figure9.svg and ablations.md/json.

Cost: the study at defaults is 2 tasks x 3 seeds x (1 base + 3 methods) = 24 runs; each
retraining ablation adds 6 VLAW runs. Measured at tiny (one task, one seed, all methods, two
iterations; 2 shared CPU cores): base 80 s, filtered BC 106 s, DSRL 33 s, VLAW 599 s of
phases, 825 s for the command; sharing the warm start saved the 3 x 80 s it would have
repeated. The sim study has not been timed; expect 6 times the `sim` loop of
experiments/scoop.py for VLAW alone.
"""

import copy
import dataclasses
import fnmatch
import os
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from vlaw import pipeline
from vlaw import workdir as workdir_lib
from vlaw.data import rlds_read
from vlaw.eval import study_report
from vlaw.eval.confusion import confusion
from vlaw.phases import loop
from vlaw.phases.evaluate import METRICS_FILE
from vlaw.train import mesh as mesh_lib

BASE = study_report.BASE


def _world_model_on_demos(c: ml_collections.ConfigDict) -> None:
    c.loop.world_model_online_rollouts = False


def _half_synthetic(c: ml_collections.ConfigDict) -> None:
    c.loop.synthetic_rollouts_per_task = max(1, int(c.loop.synthetic_rollouts_per_task) // 2)


def _no_real_rollouts(c: ml_collections.ConfigDict) -> None:
    c.loop.policy_real_rollouts = False


# name -> how its VLAW run's config differs, or None: computed from the vlaw runs' stored
# data, no run of its own.
ABLATIONS: dict[str, Callable[[ml_collections.ConfigDict], None] | None] = {
    # (a) Table 1: the world model fine-tuned on the demonstrations alone vs with the online
    # rollouts too (the vlaw run): held-out PSNR and imagined-vs-replayed outcome confusion.
    "wm_demos_only": _world_model_on_demos,
    # (b) Figure 9: half the synthetic rollouts per task.
    "half_synthetic": _half_synthetic,
    # (c) Figure 9: the policy trained without the real rollouts (demos + kept synthetic).
    "no_real": _no_real_rollouts,
    # (d) Table 3: P(yes) > alpha vs the plain answer P(yes) > 0.5, scored against the
    # simulator-replayed outcome of the vlaw runs' labelled synthetic episodes.
    "reward_threshold": None,
}


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory of the study: BASE, a method of `loop.METHODS`, or an ablation."""

    task: str
    seed: int
    name: str

    @property
    def key(self) -> str:
        return f"{self.task}/seed_{self.seed}/{self.name}"

    def workdir(self, study_dir: str) -> str:
        return workdir_lib.study_run_dir(study_dir, self.task, self.seed, self.name)


def run_config(config: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
    """The experiment config of one run: `config` on the run's task and seed, its method (the
    base run: the warm start alone) and ablation."""
    c = copy.deepcopy(config)
    c.tasks = (run.task,)
    c.seed = int(run.seed)
    if run.name == BASE:
        c.method, c.loop.iterations = "vlaw", 0  # iteration 0 is the same for every method
    elif run.name in loop.METHODS:
        c.method = run.name
    elif ABLATIONS.get(run.name) is not None:
        c.method = "vlaw"
        ABLATIONS[run.name](c)
    else:
        raise ValueError(f"{run.name!r} is no method {sorted(loop.METHODS)} nor a run ablation")
    return c


def check_study(config: ml_collections.ConfigDict) -> None:
    s = config.study
    unknown = [m for m in s.methods if m not in loop.METHODS]
    unknown += [a for a in s.ablations if a not in ABLATIONS]
    if unknown:
        raise ValueError(
            f"unknown {unknown}: methods {sorted(loop.METHODS)}, ablations {sorted(ABLATIONS)}"
        )
    if not s.tasks or not s.seeds:
        raise ValueError("a study needs at least one task and one seed")


def plan_runs(config: ml_collections.ConfigDict) -> list[Run]:
    """Every run of the study in the order they run: per (task, seed), base first."""
    check_study(config)
    s = config.study
    variants = [*s.methods, *(a for a in s.ablations if ABLATIONS[a] is not None)]
    if s.ablations and "vlaw" not in variants:
        variants.append("vlaw")  # every ablation is measured against the vlaw runs
    return [
        Run(task, int(seed), name)
        for task in s.tasks
        for seed in s.seeds
        for name in (BASE, *dict.fromkeys(variants))
    ]


def select_runs(runs: Sequence[Run], only: Sequence[str]) -> list[Run]:
    """The runs whose key matches a glob of `only` (all when empty), with the base run each
    selected method needs."""
    if not only:
        return list(runs)
    chosen = {r for r in runs if any(fnmatch.fnmatch(r.key, pattern) for pattern in only)}
    chosen |= {Run(r.task, r.seed, BASE) for r in chosen}
    return [r for r in runs if r in chosen]


def is_finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Every phase of the run's schedule is marked done in its state.json."""
    state = pipeline.load_state(workdir)
    return all(name in state.get(f"iter_{i:02d}", {}) for i, name in loop.schedule(config))


def share_warm_start(base_workdir: str, workdir: str) -> bool:
    """Gives `workdir` the base run's iteration 0: its artifacts as hard links
    (`vlaw.workdir.link_tree`) and its phases marked done with base's summaries. Returns False
    when `workdir` already has it. The base run must be finished."""
    if all(name in pipeline.load_state(workdir).get("iter_00", {}) for name in loop.WARM_START):
        return False
    with workdir_lib.locked(workdir):
        sources = workdir_lib.warm_start_paths(base_workdir)
        for source, target in zip(sources, workdir_lib.warm_start_paths(workdir), strict=True):
            # An artifact linked before an interruption is whole (link_tree renames it in).
            if os.path.isdir(source) and not os.path.exists(target):
                workdir_lib.link_tree(source, target)
        pipeline.adopt_phases(workdir, base_workdir, 0, loop.WARM_START)
    return True


def run_study(
    config: ml_collections.ConfigDict,
    study_dir: str,
    *,
    only: Sequence[str] = (),
    max_runs: int = -1,
) -> dict:
    """Runs the unfinished runs of the study (`max_runs` of them at most; -1: all), then
    writes the report. Returns {"ran": [keys], "skipped": [keys], "pending": [keys],
    "reports": {name: path}}."""
    study_dir = os.path.abspath(study_dir)
    runs = select_runs(plan_runs(config), only)
    ran, skipped, pending = [], [], []
    for run in runs:
        c, workdir = run_config(config, run), run.workdir(study_dir)
        if is_finished(c, workdir):
            skipped.append(run.key)
            continue
        if 0 <= max_runs <= len(ran):
            pending.append(run.key)
            continue
        if run.name != BASE:
            base = Run(run.task, run.seed, BASE)
            if not is_finished(run_config(config, base), base.workdir(study_dir)):
                pending.append(run.key)  # its base is not done (cut by max_runs)
                continue
            share_warm_start(base.workdir(study_dir), workdir)
        logging.info("study: running %s (%d run so far)", run.key, len(ran))
        print(f"\nstudy: {run.key}", flush=True)
        pipeline.write_config(c, workdir)
        pipeline.run_loop(c, workdir)
        ran.append(run.key)
    reports = write_reports(config, study_dir)
    return {"ran": ran, "skipped": skipped, "pending": pending, "reports": reports}


# --------------------------------------------------------------------------------------------
# The report, from the run directories.


def evaluation_records(config: ml_collections.ConfigDict, study_dir: str) -> list[dict]:
    """One record per (run, iteration, task) evaluated so far: the base runs' iteration 0 and
    the other runs' iterations 1..N (their iteration 0 is base's)."""
    records = []
    for run in plan_runs(config):
        c = run_config(config, run)
        iterations = [0] if run.name == BASE else range(1, int(c.loop.iterations) + 1)
        for iteration in iterations:
            path = workdir_lib.report_file(run.workdir(study_dir), iteration, METRICS_FILE)
            if not os.path.exists(path):
                continue
            for task, figures in workdir_lib.read_json(path)["tasks"].items():
                records.append(
                    {
                        "method": run.name,
                        "iteration": iteration,
                        "task": task,
                        "seed": run.seed,
                        "successes": figures["successes"],
                        "episodes": figures["episodes"],
                    }
                )
    return records


def synthetic_outcomes(dataset_dir: str) -> dict[str, np.ndarray]:
    """A labelled synthetic dataset's per-episode P(yes), kept decision and stored outcome
    (the simulator replay's, `loop.imagine_sim_replay`); metadata only, no image decoded."""
    fields = {"p_yes": [], "kept": [], "success": []}
    for raw in rlds_read.iter_raw_episodes(rlds_read.open_dataset(dataset_dir)):
        metadata = rlds_read.metadata_from_raw(raw)
        fields["p_yes"].append(metadata.reward_score)
        fields["kept"].append(metadata.kept)
        fields["success"].append(metadata.success)
    return {name: np.asarray(values) for name, values in fields.items()}


def _labelled_synthetic(workdir: str, iteration: int) -> dict[str, np.ndarray] | None:
    """`synthetic_outcomes` of a finished label phase whose outcomes are ground truth."""
    state = pipeline.load_state(workdir).get(f"iter_{iteration:02d}", {})
    if "label" not in state or not state.get("imagine", {}).get("success_is_ground_truth"):
        return None
    return synthetic_outcomes(workdir_lib.synthetic_dir(workdir, iteration))


def _over_seeds(config, study_dir: str, name: str, task: str, iteration: int):
    """(run directories, labelled synthetic outcomes pooled) of `name`'s runs of one task and
    iteration over the study's seeds; the outcomes None when no seed's label phase is done."""
    workdirs = [Run(task, int(seed), name).workdir(study_dir) for seed in config.study.seeds]
    found = [o for w in workdirs if (o := _labelled_synthetic(w, iteration)) is not None]
    pooled = {k: np.concatenate([o[k] for o in found]) for k in found[0]} if found else None
    return workdirs, pooled, len(found)


def world_model_ablation(config, study_dir: str) -> list[dict]:
    """(a): per task and iteration, the world model on demos + online rollouts ("vlaw") and on
    demos alone: held-out one-chunk PSNR (mean over seeds) and the reward model's kept decision
    on its imagined episodes against their replayed outcome (pooled over seeds)."""
    entries = []
    for name in ("vlaw", "wm_demos_only"):
        for task in config.study.tasks:
            for iteration in range(1, int(config.loop.iterations) + 1):
                workdirs, pooled, seeds = _over_seeds(config, study_dir, name, task, iteration)
                if pooled is None:
                    continue
                key = f"iter_{iteration:02d}"
                trained = [
                    pipeline.load_state(w).get(key, {}).get("train_world_model", {})
                    for w in workdirs
                ]
                entries.append(
                    {
                        "name": f"{name} {task} iter {iteration}",
                        "world_model_data": "demos + online" if name == "vlaw" else "demos",
                        "psnr_prediction": study_report.mean_or_none(
                            [t.get("psnr_prediction") for t in trained]
                        ),
                        "psnr_copy_current_frame": study_report.mean_or_none(
                            [t.get("psnr_copy_current_frame") for t in trained]
                        ),
                        "num_seeds": seeds,
                        **confusion(pooled["kept"], pooled["success"]),
                    }
                )
    return entries


def reward_threshold_ablation(config, study_dir: str) -> list[dict]:
    """(d): per task and iteration, the vlaw runs' synthetic episodes pooled over seeds, the
    decision P(yes) > alpha and P(yes) > 0.5 against the replayed outcome."""
    entries = []
    alpha = float(config.reward.alpha)
    for task in config.study.tasks:
        for iteration in range(1, int(config.loop.iterations) + 1):
            _, pooled, seeds = _over_seeds(config, study_dir, "vlaw", task, iteration)
            if pooled is None:
                continue
            for threshold in (alpha, study_report.ARGMAX_THRESHOLD):
                entries.append(
                    {
                        "name": f"{task} iter {iteration}: P(yes) > {threshold:g}",
                        "threshold": threshold,
                        "num_seeds": seeds,
                        **study_report.decision_confusion(
                            pooled["p_yes"], pooled["success"], threshold
                        ),
                    }
                )
    return entries


def write_reports(config: ml_collections.ConfigDict, study_dir: str) -> dict[str, str]:
    """reports/study/: table.md, table.json, figure7.svg; with ablations also figure9.svg and
    ablations.md/json. Returns {file name: path}."""
    out = workdir_lib.study_reports_dir(study_dir)
    os.makedirs(out, exist_ok=True)
    tasks = list(config.study.tasks)
    runs_with_ablations = [a for a in config.study.ablations if ABLATIONS[a] is not None]
    order = [BASE, *config.study.methods, *runs_with_ablations]
    rows = study_report.aggregate(evaluation_records(config, study_dir), order)
    compared = [r for r in rows if r["method"] in (BASE, *config.study.methods)]
    ablated = [r for r in rows if r["method"] in (BASE, "vlaw", *runs_with_ablations)]
    markdown = study_report.markdown_table(compared, tasks, "Success rate (Figure 7)")
    if runs_with_ablations:
        markdown += "\n" + study_report.markdown_table(ablated, tasks, "Ablations (Figure 9)")
    texts = {
        "table.md": markdown,
        "figure7.svg": study_report.bar_chart_svg(compared, tasks, "Success rate (Figure 7)"),
    }
    if runs_with_ablations:
        texts["figure9.svg"] = study_report.bar_chart_svg(ablated, tasks, "Ablations")
    documents = {"table.json": {"note": study_report.TABLE_NOTE, "tasks": tasks, "rows": rows}}
    ablations = {}
    if "wm_demos_only" in config.study.ablations:
        ablations["world_model_data"] = world_model_ablation(config, study_dir)
    if "reward_threshold" in config.study.ablations:
        ablations["reward_threshold"] = reward_threshold_ablation(config, study_dir)
    if ablations:
        texts["ablations.md"] = _ablations_markdown(ablations)
        documents["ablations.json"] = ablations
    paths = {name: os.path.join(out, name) for name in [*texts, *documents]}
    for name, text in texts.items():
        _write_text(paths[name], text)
    for name, document in documents.items():
        workdir_lib.write_json(paths[name], document)
    logging.info("study report in %s:\n%s", out, markdown)
    return paths


def _ablations_markdown(ablations: dict) -> str:
    parts = []
    if "world_model_data" in ablations:
        note = (
            "Predicted: the reward model kept the imagined episode; actual: its actions "
            "replayed in the simulator succeeded; pooled over seeds. PSNR: the world-model "
            "phase's held-out one-chunk check on the newest real rollouts (dB, mean over "
            "seeds), beside copying the current frame."
        )
        extra = (("PSNR", "psnr_prediction"), ("PSNR copy", "psnr_copy_current_frame"))
        parts.append(
            study_report.confusion_markdown(
                ablations["world_model_data"], "World model data (Table 1)", note, extra
            )
        )
    if "reward_threshold" in ablations:
        note = (
            "The vlaw runs' labelled synthetic episodes pooled over seeds; actual: the "
            "simulator-replayed outcome."
        )
        parts.append(
            study_report.confusion_markdown(
                ablations["reward_threshold"], "Reward decision threshold (Table 3)", note
            )
        )
    return "\n".join(parts)


def _write_text(path: str, text: str) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


# --------------------------------------------------------------------------------------------
# The command.

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:preset].")
_STUDY_DIR = flags.DEFINE_string("study_dir", None, "Where the runs and the report go.")
_TASKS = flags.DEFINE_list("tasks", None, "Task families; default config.study.tasks.")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds; default config.study.seeds.")
_METHODS = flags.DEFINE_list("methods", None, "Methods; default config.study.methods.")
_ABLATIONS = flags.DEFINE_list(
    "ablations", None, f"Of {sorted(ABLATIONS)}; default config.study.ablations."
)
_ONLY = flags.DEFINE_list("only", [], "Globs of run keys (task/seed_S/method) to run.")
_MAX_RUNS = flags.DEFINE_integer("max_runs", -1, "Unfinished runs to run now (-1: all).")
flags.mark_flags_as_required(["config", "study_dir"])


def main(argv):
    del argv
    config = _CONFIG.value
    study = config.study
    study.tasks = tuple(_TASKS.value) if _TASKS.value is not None else tuple(study.tasks)
    study.seeds = tuple(int(s) for s in (_SEEDS.value if _SEEDS.value is not None else study.seeds))
    study.methods = tuple(_METHODS.value if _METHODS.value is not None else study.methods)
    if _ABLATIONS.value is not None:
        study.ablations = tuple(_ABLATIONS.value)
    check_study(config)
    mesh_lib.maybe_initialize_distributed(config.mesh)
    study_dir = os.path.abspath(os.path.expanduser(_STUDY_DIR.value))
    pipeline.write_config(config, study_dir)
    result = run_study(config, study_dir, only=_ONLY.value, max_runs=_MAX_RUNS.value)
    print(
        f"\nstudy {study_dir}: ran {len(result['ran'])}, already done {len(result['skipped'])}, "
        f"pending {len(result['pending'])}; report: {workdir_lib.study_reports_dir(study_dir)}",
        flush=True,
    )
    with open(result["reports"]["table.md"]) as table:
        print(table.read(), flush=True)


if __name__ == "__main__":
    app.run(main)
