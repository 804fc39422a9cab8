"""What the loop runs, per method (vlaw.phases.loop.schedule), and its closing table."""

import pytest

from vlaw import workdir as workdir_lib
from vlaw.config import experiment_config
from vlaw.data.atomic_json import write_json
from vlaw.eval.success import task_success
from vlaw.phases import loop


def test_vlaw_schedule_is_algorithm_1_after_the_warm_start():
    config = experiment_config(("scoop",), "tiny")
    plan = loop.schedule(config)
    assert plan[:3] == [(0, "collect"), (0, "train_policy"), (0, "evaluate")]
    assert [phase for it, phase in plan if it == 1] == list(loop.ITERATION)
    assert max(it for it, _ in plan) == config.loop.iterations


def test_filtered_bc_skips_imagination():
    config = experiment_config(("scoop",), "tiny")
    config.method = "filtered_bc"
    plan = loop.schedule(config)
    assert [phase for it, phase in plan if it == 2] == ["collect", "train_policy", "evaluate"]
    config.method = "dagger"
    with pytest.raises(ValueError, match="filtered_bc"):
        loop.schedule(config)


def test_results_table_lists_what_was_evaluated(tmp_path):
    config = experiment_config(("scoop", "draw"), "tiny")
    workdir = str(tmp_path)
    assert loop.results_table(config, workdir) == "no policy evaluated yet"
    for iteration, successes in ((0, 1), (1, 2)):
        metrics = {"policy": "base" if iteration == 0 else "iteration 1"}
        metrics["tasks"] = {"scoop": task_success(successes, 2)}
        path = f"{workdir_lib.reports_dir(workdir, iteration)}/metrics.json"
        write_json(path, metrics)
    lines = loop.results_table(config, workdir).splitlines()
    assert lines[0].split() == ["policy", "scoop", "draw"]
    assert lines[2].startswith("base") and "0.50 [0.09, 0.91] (1/2)" in lines[2]
    assert lines[3].startswith("iteration 1") and "(2/2)" in lines[3] and lines[3].endswith("-")
