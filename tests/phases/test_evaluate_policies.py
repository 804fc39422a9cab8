"""Which policies the world model is asked to rank: this run's with station metrics and a
trained checkpoint (not DSRL's steered ones), and a baseline run's, named by its method."""

import json
import os

from vlaw import workdir as workdir_lib
from vlaw.agents import policy as policy_agent
from vlaw.config import experiment_config
from vlaw.eval.success import task_success
from vlaw.phases import evaluate_report


def _run(workdir: str, method: str, successes: dict[int, int], trained: set[int]) -> None:
    """A run directory with metrics.json per iteration and policy checkpoints (a spec and a
    committed step) for `trained`."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"method": method}, f)
    for iteration, count in successes.items():
        name = "base" if iteration == 0 else f"iteration {iteration}"
        metrics = {"policy": name, "tasks": {"scoop": task_success(count, 4)}}
        workdir_lib.write_json(workdir_lib.report_file(workdir, iteration, "metrics.json"), metrics)
    for iteration in trained:
        directory = workdir_lib.checkpoint_dir(workdir, "policy", iteration)
        os.makedirs(os.path.join(directory, "1"))
        with open(os.path.join(directory, policy_agent.SPEC_FILE), "w") as f:
            f.write("{}")


def test_policies_with_metrics_and_checkpoints_and_baselines_by_method(tmp_path):
    run = str(tmp_path / "vlaw")
    _run(run, "vlaw", {0: 1, 1: 2, 2: 3}, trained={0, 1})  # iteration 2 has no checkpoint
    found = evaluate_report.evaluated_policies(run, 2, method="vlaw")
    assert found == [
        ("base", workdir_lib.checkpoint_dir(run, "policy", 0), 0.25),
        ("iteration 1", workdir_lib.checkpoint_dir(run, "policy", 1), 0.5),
    ]
    assert [n for n, _, _ in evaluate_report.evaluated_policies(run, 0, method="vlaw")] == ["base"]
    dsrl = str(tmp_path / "dsrl")
    _run(dsrl, "dsrl", {0: 0, 1: 4}, trained={0, 1})
    bc = str(tmp_path / "bc")
    _run(bc, "filtered_bc", {0: 0, 1: 4}, trained={0, 1})
    config = experiment_config(("scoop",), "tiny")
    config.evaluate.baseline_workdirs = (dsrl, bc)
    names = [name for name, _, _ in evaluate_report.baseline_policies(config)]
    # DSRL's iteration 1 steers the base policy's noise per station episode: not imagined.
    assert names == ["dsrl base", "filtered_bc base", "filtered_bc iteration 1"]
