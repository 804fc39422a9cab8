"""The study (`python -m vlaw.study`): the plan of runs, the sharing of one warm start, the
aggregation over seeds checked against numbers worked by hand, and (slow) the command at tiny
with every method."""

import json
import os
import pathlib
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from vlaw import pipeline, study
from vlaw import workdir as workdir_lib
from vlaw.config import experiment_config
from vlaw.eval import study_report
from vlaw.phases.evaluate import METRICS_FILE

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _config(preset="tiny"):
    return experiment_config(("scoop",), preset)


# --------------------------------------------------------------------------------------------
# Aggregation, by hand.


def test_pooled_wilson_interval_and_seed_spread_by_hand():
    # Seeds: 3/10, 5/10, 8/10. Pooled: 16/30. Wilson (z = 1.959964, z^2 = 3.841459):
    #   centre = (16/30 + z^2/60) / (1 + z^2/30) = 0.597358 / 1.128049 = 0.529550
    #   half   = z sqrt(0.533333 * 0.466667 / 30 + z^2 / 3600) / 1.128049
    #          = 1.959964 * sqrt(0.0082963 + 0.0010671) / 1.128049 = 0.168127
    # Per-seed rates 0.3, 0.5, 0.8: mean 0.533333, sample sd sqrt(0.063333) = 0.251661.
    figures = study_report.pool_seeds({0: (3, 10), 1: (5, 10), 2: (8, 10)})
    assert (figures["successes"], figures["episodes"]) == (16, 30)
    assert figures["success_rate"] == pytest.approx(16 / 30)
    assert figures["ci95_low"] == pytest.approx(0.529550 - 0.168127, abs=2e-6)
    assert figures["ci95_high"] == pytest.approx(0.529550 + 0.168127, abs=2e-6)
    assert figures["seed_mean"] == pytest.approx(0.533333, abs=1e-6)
    assert figures["seed_sd"] == pytest.approx(0.251661, abs=1e-6)
    assert (figures["seed_min"], figures["seed_max"], figures["num_seeds"]) == (0.3, 0.8, 3)
    # One seed: no spread to report, the interval is that seed's own.
    alone = study_report.pool_seeds({4: (0, 5)})
    assert alone["seed_sd"] is None and alone["ci95_low"] == 0.0
    assert alone["ci95_high"] == pytest.approx(0.434482, abs=1e-6)  # 0/5: (z^2/5) / (1 + z^2/5)


def _write_metrics(workdir: str, iteration: int, per_task: dict) -> None:
    tasks = {t: {"successes": s, "episodes": n} for t, (s, n) in per_task.items()}
    path = os.path.join(workdir_lib.reports_dir(workdir, iteration), METRICS_FILE)
    workdir_lib.write_json(path, {"iteration": iteration, "tasks": tasks})


def test_report_from_metrics_files(tmp_path):
    config = _config("sim")
    config.study.tasks, config.study.seeds = ("scoop", "draw"), (0, 1)
    config.study.methods = ("filtered_bc", "vlaw")
    study_dir = str(tmp_path)
    counts = {  # (method, iteration, seed) -> successes of 10, the same for both tasks
        ("base", 0, 0): 2,
        ("base", 0, 1): 4,
        ("filtered_bc", 1, 0): 3,
        ("filtered_bc", 2, 0): 5,
        ("filtered_bc", 1, 1): 4,
        ("vlaw", 1, 0): 6,
        ("vlaw", 2, 0): 9,
        ("vlaw", 1, 1): 7,  # vlaw seed 1 stopped after iteration 1
    }
    for (method, iteration, seed), successes in counts.items():
        for task in ("scoop", "draw"):
            workdir = workdir_lib.study_run_dir(study_dir, task, seed, method)
            _write_metrics(workdir, iteration, {task: (successes, 10)})
    # A method run's iteration 0 is base's (linked): never counted twice.
    linked = workdir_lib.study_run_dir(study_dir, "scoop", 0, "vlaw")
    _write_metrics(linked, 0, {"scoop": (2, 10)})

    paths = study.write_reports(config, study_dir)
    table = json.loads(pathlib.Path(paths["table.json"]).read_text())
    rows = {(r["label"], r["task"]): r for r in table["rows"]}
    labels = list(dict.fromkeys(r["label"] for r in table["rows"]))
    assert labels == ["base", "filtered_bc-1", "filtered_bc-2", "vlaw-1", "vlaw-2"]
    base = rows["base", "scoop"]
    assert (base["successes"], base["episodes"], base["num_seeds"]) == (6, 20, 2)
    assert base["seed_mean"] == pytest.approx(0.3)
    assert base["seed_sd"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    vlaw_2 = rows["vlaw-2", "draw"]
    assert (vlaw_2["successes"], vlaw_2["episodes"], vlaw_2["seed_sd"]) == (9, 10, None)
    markdown = pathlib.Path(paths["table.md"]).read_text()
    assert "Wilson 95 %" in markdown and "standard deviation" in markdown
    assert "| vlaw-1 | 0.65 [0.43, 0.82] (13/20)<br>0.65 ± 0.07 (n=2)" in markdown
    svg = ET.parse(paths["figure7.svg"]).getroot()
    bars = [e for e in svg.iter("{http://www.w3.org/2000/svg}rect") if e.find("*") is not None]
    assert len(bars) == 2 * len(labels)  # every (policy, task) bar, titles inside
    assert "figure9.svg" not in paths  # no ablation asked for


def test_reward_threshold_confusion_by_hand():
    p_yes = np.array([0.95, 0.85, 0.7, 0.6, 0.3, 0.9])
    success = np.array([True, False, True, False, False, True])
    at_alpha = study_report.decision_confusion(p_yes, success, 0.8)
    assert (at_alpha["tp"], at_alpha["fp"], at_alpha["tn"], at_alpha["fn"]) == (2, 1, 2, 1)
    assert at_alpha["precision"] == pytest.approx(2 / 3)
    at_half = study_report.decision_confusion(p_yes, success, 0.5)
    assert (at_half["tp"], at_half["fp"], at_half["tn"], at_half["fn"]) == (3, 2, 1, 0)
    assert at_half["recall"] == 1.0


def test_ablation_reports_from_label_outcomes(tmp_path, monkeypatch):
    config = _config("sim")
    config.study.tasks, config.study.seeds, config.loop.iterations = ("draw",), (0, 1), 1
    config.study.ablations = ("wm_demos_only", "reward_threshold")
    study_dir = str(tmp_path)
    outcomes = {  # (run, seed) -> (P(yes), success) of its labelled synthetic episodes
        ("vlaw", 0): ([0.9, 0.7, 0.2], [True, True, False]),
        ("vlaw", 1): ([0.85, 0.6], [False, False]),
        ("wm_demos_only", 0): ([0.95, 0.9, 0.9], [True, False, False]),
        ("wm_demos_only", 1): ([0.3, 0.99], [False, False]),
    }
    psnr = {"vlaw": (20.0, 22.0), "wm_demos_only": (17.0, 18.0)}
    for (name, seed), (p_yes, _) in outcomes.items():
        workdir = workdir_lib.study_run_dir(study_dir, "draw", seed, name)
        state = {
            "train_world_model": {"psnr_prediction": psnr[name][seed]},
            "imagine": {"success_is_ground_truth": True},
            "label": {"num_episodes": len(p_yes)},
        }
        workdir_lib.write_json(os.path.join(workdir, "state.json"), {"iter_01": state})

    def stored(dataset_dir):
        _, _, _, seed, name, _, _ = pathlib.Path(dataset_dir).parts[-7:]
        p_yes, success = outcomes[name, int(seed.removeprefix("seed_"))]
        p_yes = np.array(p_yes)
        return {"p_yes": p_yes, "kept": p_yes > 0.8, "success": np.array(success)}

    monkeypatch.setattr(study, "synthetic_outcomes", stored)
    paths = study.write_reports(config, study_dir)
    ablations = json.loads(pathlib.Path(paths["ablations.json"]).read_text())
    online, demos = ablations["world_model_data"]
    # Kept (P(yes) > 0.8) vs replayed: online 0.9 T, 0.85 F -> tp 1, fp 1, fn 1 (0.7 T), tn 2.
    assert (online["tp"], online["fp"], online["fn"], online["tn"]) == (1, 1, 1, 2)
    # Chance agreement (2*2 + 3*3) / 25 = 0.52; kappa = (0.6 - 0.52) / 0.48.
    assert online["kappa"] == pytest.approx(1 / 6)
    assert online["psnr_prediction"] == pytest.approx(21.0)
    # Demos only: optimistic, 0.95 T, 0.9 F, 0.9 F, 0.99 F -> tp 1, fp 3, tn 1.
    assert (demos["tp"], demos["fp"], demos["fn"], demos["tn"]) == (1, 3, 0, 1)
    assert demos["psnr_prediction"] == pytest.approx(17.5)
    at_alpha, at_half = ablations["reward_threshold"]  # the vlaw runs only
    assert (at_alpha["threshold"], at_alpha["precision"], at_alpha["recall"]) == (0.8, 0.5, 0.5)
    assert (at_half["tp"], at_half["fp"], at_half["fn"], at_half["tn"]) == (2, 2, 0, 1)
    markdown = pathlib.Path(paths["ablations.md"]).read_text()
    assert "Table 1" in markdown and "Table 3" in markdown and "| 21.00 |" in markdown
    assert "| recall | kappa |" in markdown and "| 0.17 |" in markdown


# --------------------------------------------------------------------------------------------
# The plan and the shared warm start.


def test_plan_runs_base_first_and_ablation_configs():
    config = _config("sim")
    config.study.ablations = ("half_synthetic", "no_real", "wm_demos_only", "reward_threshold")
    runs = study.plan_runs(config)
    assert len(runs) == 2 * 3 * 7  # tasks x seeds x (base, 3 methods, 3 retraining ablations)
    expected = ["base", "filtered_bc", "dsrl", "vlaw", "half_synthetic", "no_real"]
    assert [r.name for r in runs[:7]] == [*expected, "wm_demos_only"]
    base = study.run_config(config, runs[0])
    assert (base.loop.iterations, base.tasks, base.seed) == (0, ("scoop",), 0)
    half = study.run_config(config, study.Run("draw", 2, "half_synthetic"))
    assert half.tasks == ("draw",) and half.seed == 2 and half.method == "vlaw"
    assert half.loop.synthetic_rollouts_per_task == config.loop.synthetic_rollouts_per_task // 2
    assert not study.run_config(config, study.Run("draw", 0, "no_real")).loop.policy_real_rollouts
    wm = study.run_config(config, study.Run("draw", 0, "wm_demos_only"))
    assert not wm.loop.world_model_online_rollouts
    assert config.loop.world_model_online_rollouts  # the study's config is left alone
    config.study.methods = ("dsrl",)  # an ablation brings the vlaw run it is measured against
    assert [r.name for r in study.plan_runs(config)[:3]] == ["base", "dsrl", "half_synthetic"]
    assert "vlaw" in [r.name for r in study.plan_runs(config)[:6]]
    picked = study.select_runs(runs, ["draw/seed_1/dsrl"])
    assert [r.key for r in picked] == ["draw/seed_1/base", "draw/seed_1/dsrl"]
    config.study.methods = ("ppo",)
    with pytest.raises(ValueError, match="ppo"):
        study.plan_runs(config)


def test_ablation_switches_choose_the_datasets(tmp_path):
    workdir = str(tmp_path)
    for directory in (
        workdir_lib.demos_dir(workdir),
        workdir_lib.real_dir(workdir, 1),
        workdir_lib.synthetic_dir(workdir, 1),
    ):
        os.makedirs(directory)
    demos, real = workdir_lib.demos_dir(workdir), workdir_lib.real_dir(workdir, 1)
    synthetic = workdir_lib.synthetic_dir(workdir, 1)
    assert workdir_lib.world_model_training_dirs(workdir, 1, online_rollouts=False) == [demos]
    assert workdir_lib.newest_real_dir(workdir, 1) == real  # the check: online states
    assert workdir_lib.policy_training_dirs(workdir, 1, real_rollouts=False) == [demos, synthetic]
    assert workdir_lib.policy_training_dirs(workdir, 1) == [demos, real, synthetic]


def test_share_warm_start_links_iteration_zero_and_marks_it_done(tmp_path):
    base, method = str(tmp_path / "base"), str(tmp_path / "vlaw")
    for path in workdir_lib.warm_start_paths(base):
        os.makedirs(path)
        pathlib.Path(path, "file").write_text(path)
    summaries = {name: {"from": "base"} for name in ("collect", "train_policy", "evaluate")}
    workdir_lib.write_json(os.path.join(base, "state.json"), {"iter_00": summaries})

    assert study.share_warm_start(base, method)
    for source, target in zip(
        workdir_lib.warm_start_paths(base), workdir_lib.warm_start_paths(method), strict=True
    ):
        assert (
            os.stat(os.path.join(source, "file")).st_ino
            == os.stat(os.path.join(target, "file")).st_ino
        )
    state = pipeline.load_state(method)["iter_00"]
    assert state["collect"] == {"from": "base", "computed_in": base}
    assert not study.share_warm_start(base, method)  # already shared: nothing to do
    assert not [p for p in os.listdir(os.path.join(method, "checkpoints")) if p.startswith(".")]


# --------------------------------------------------------------------------------------------
# The command.


def _study(study_dir, *extra) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "vlaw.study",
        "--config=experiments/scoop.py:tiny",
        f"--study_dir={study_dir}",
        "--tasks=scoop",
        "--seeds=0",
        "--methods=filtered_bc,dsrl,vlaw",
        "--ablations=reward_threshold",
        *extra,
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)


@pytest.mark.slow  # base + three methods, two iterations each, at tiny: 14 min on 2 busy cores
def test_study_command_at_tiny_shares_the_warm_start(tmp_path):
    study_dir = tmp_path / "study"
    start = time.time()
    result = _study(study_dir)
    print(f"study at tiny: {time.time() - start:.0f} s")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ran 4, already done 0, pending 0" in result.stdout

    base_dir = workdir_lib.study_run_dir(str(study_dir), "scoop", 0, "base")
    base_state = pipeline.load_state(base_dir)
    assert sorted(base_state) == ["iter_00"]  # the base run is the warm start alone
    demo_file = next(p for p in os.listdir(os.path.join(base_dir, "demos")) if "tfrecord" in p)
    for method in ("filtered_bc", "dsrl", "vlaw"):
        workdir = workdir_lib.study_run_dir(str(study_dir), "scoop", 0, method)
        state = pipeline.load_state(workdir)
        # Iteration 0 was computed once, in base: adopted, and its files are base's files.
        for phase, summary in state["iter_00"].items():
            assert summary == {**base_state["iter_00"][phase], "computed_in": base_dir}
        same = os.stat(os.path.join(base_dir, "demos", demo_file)).st_ino
        assert os.stat(os.path.join(workdir, "demos", demo_file)).st_ino == same
        assert sorted(state) == ["iter_00", "iter_01", "iter_02"]
        assert "evaluate" in state["iter_02"]
        config = json.loads(pathlib.Path(workdir, "config.json").read_text())
        assert config["method"] == method and config["tasks"] == ["scoop"]

    reports = study_dir / "reports" / "study"
    table = json.loads((reports / "table.json").read_text())
    labels = [row["label"] for row in table["rows"]]
    assert labels == [
        "base",
        "filtered_bc-1",
        "filtered_bc-2",
        "dsrl-1",
        "dsrl-2",
        "vlaw-1",
        "vlaw-2",
    ]
    episodes = _config().evaluate.episodes_per_task
    assert all(row["episodes"] == episodes for row in table["rows"])
    ET.parse(reports / "figure7.svg")
    assert "vlaw-2" in (reports / "table.md").read_text()
    thresholds = json.loads((reports / "ablations.json").read_text())["reward_threshold"]
    synthetic = _config().loop.synthetic_rollouts_per_task
    assert [e["threshold"] for e in thresholds] == [0.8, 0.5, 0.8, 0.5]
    assert all(e["tp"] + e["fp"] + e["tn"] + e["fn"] == synthetic for e in thresholds)

    # A second sitting finds everything done and only rewrites the report.
    mtime = os.stat(os.path.join(base_dir, "state.json")).st_mtime
    again = _study(study_dir)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "ran 0, already done 4, pending 0" in again.stdout
    assert os.stat(os.path.join(base_dir, "state.json")).st_mtime == mtime
