"""Filtered BC end to end at tiny: the warm start, then one iteration of collect,
train_policy and evaluate, with no world model, reward model or synthetic data."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


@pytest.mark.slow  # the warm start and an iteration through launch.py (~3 min on 2 cores)
def test_filtered_bc_runs_through_evaluate(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    command = [
        sys.executable,
        "launch.py",
        "--config=experiments/scoop.py:tiny",
        "--config.method=filtered_bc",
        "--config.loop.iterations=1",
        f"--workdir={tmp_path}",
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "iteration 1" in result.stdout.split("VLAW success rates")[1]
    state = json.loads((tmp_path / "state.json").read_text())
    assert set(state["iter_01"]) == {"collect", "train_policy", "evaluate"}
    assert state["iter_01"]["train_policy"]["dataset_dirs"] == [
        str(tmp_path / "demos"),
        str(tmp_path / "iter_01" / "real"),
    ]
    assert not (tmp_path / "iter_01" / "synthetic").exists()
    assert not (tmp_path / "checkpoints" / "world_model").exists()
    for iteration in ("iter_00", "iter_01"):
        assert (tmp_path / "reports" / iteration / "metrics.json").exists()
