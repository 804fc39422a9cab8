"""DSRL through the loop at tiny: `launch.py --config.method=dsrl` runs the warm start, then
train_dsrl (steered rollouts, SAC) and evaluate (the deterministic noise policy steering the
frozen base policy); a second launch with one more iteration continues from the saved SAC
state and replay instead of redoing anything."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vlaw.baselines import sac
from vlaw.config import experiment_config
from vlaw.data import rlds_read
from vlaw.phases import loop

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_dsrl_schedule_trains_the_noise_policy_then_evaluates():
    config = experiment_config(("scoop",), "tiny")
    config.method = "dsrl"
    plan = loop.schedule(config)
    assert plan[:3] == [(0, "collect"), (0, "train_policy"), (0, "evaluate")]
    assert [phase for it, phase in plan if it == 2] == ["train_dsrl", "evaluate"]


def _launch(workdir, iterations: int) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "launch.py",
        "--config=experiments/scoop.py:tiny",
        "--config.method=dsrl",
        f"--config.loop.iterations={iterations}",
        f"--workdir={workdir}",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow  # the warm start trains the tiny pi0.5: ~5 min on 2 busy cores
def test_dsrl_runs_end_to_end_through_evaluate_and_continues(tmp_path):
    workdir = tmp_path / "dsrl"
    result = _launch(workdir, 1)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((workdir / "state.json").read_text())
    assert sorted(state["iter_01"]) == ["evaluate", "train_dsrl"]
    trained = state["iter_01"]["train_dsrl"]
    config = experiment_config(("scoop",), "tiny")
    per_task = config.loop.real_rollouts_per_task
    # The real-rollout budget of the other methods, the base policy steered by N(0, I).
    assert trained["real"]["num_episodes"] == per_task
    assert trained["acting_noise_policy"] == "base"
    decisions = -(-config.sim.max_steps // config.policy.open_loop_steps)
    assert trained["new_transitions"] == per_task * decisions
    assert trained["sac_step"] == trained["new_transitions"] * 2  # tiny's UTD
    real = list(rlds_read.read_episodes(str(workdir / "iter_01" / "real")))
    assert all("steered by noise policy base" in e.metadata.policy_checkpoint for e in real)
    evaluated = list(rlds_read.read_episodes(str(workdir / "iter_01" / "evaluate")))
    assert len(evaluated) == config.evaluate.episodes_per_task
    assert all("checkpoints/dsrl/iter_01" in e.metadata.policy_checkpoint for e in evaluated)
    metrics = json.loads((workdir / "reports" / "iter_01" / "metrics.json").read_text())
    scoop = metrics["tasks"]["scoop"]
    assert scoop["ci95_low"] <= scoop["success_rate"] <= scoop["ci95_high"]
    assert "iteration 1" in result.stdout.split("VLAW success rates")[1]

    # One more iteration: explores with iteration 1's actor, keeps iteration 1's replay.
    result = _launch(workdir, 2)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((workdir / "state.json").read_text())
    assert state["iter_01"]["train_dsrl"] == trained  # not redone
    second = state["iter_02"]["train_dsrl"]
    assert second["acting_noise_policy"] == "explore"
    assert second["replay_transitions"] == 2 * trained["new_transitions"]
    assert second["sac_step"] == 2 * trained["sac_step"]
    first = sac.ReplayBuffer.load(str(workdir / "checkpoints/dsrl/iter_01/replay.npz"))
    both = sac.ReplayBuffer.load(str(workdir / "checkpoints/dsrl/iter_02/replay.npz"))
    for name, value in first.data.items():
        np.testing.assert_array_equal(both.data[name][: len(first)], value)
    assert (workdir / "reports" / "iter_02" / "metrics.json").exists()
