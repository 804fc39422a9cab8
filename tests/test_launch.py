"""launch.py as a user runs it: flags, overrides, the resolved config, and clear errors."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _launch(*args, workdir):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.run(
        [sys.executable, "launch.py", *args, f"--workdir={workdir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_collect_through_the_launcher(tmp_path):
    result = _launch(
        "--config=experiments/stack.py:tiny",
        "--phase=collect",
        "--config.loop.warmstart_demos_per_task=1",
        "--config.loop.real_rollouts_per_task=1",
        "--config.sim.max_steps=5",
        workdir=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["loop"]["real_rollouts_per_task"] == 1
    assert config["tasks"] == ["stack"]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["iter_00"]["collect"]["demos"]["num_episodes"] == 1
    assert (tmp_path / "demos" / "dataset_info.json").exists()


def test_misspelt_config_field_is_named(tmp_path):
    result = _launch(
        "--config=experiments/stack.py:tiny", "--config.policy.lerning_rate=1", workdir=tmp_path
    )
    assert result.returncode != 0
    # One line naming the override, not ml_collections' traceback.
    assert result.stderr.strip().splitlines() == [
        "FATAL Flags parsing error: --config.policy.lerning_rate: the config has no field "
        "'lerning_rate'"
    ]


def test_unknown_phase_lists_the_choices(tmp_path):
    result = _launch("--config=experiments/stack.py:tiny", "--phase=dream", workdir=tmp_path)
    assert result.returncode != 0
    assert "collect" in result.stderr and "train_policy" in result.stderr


def test_relative_workdir_through_a_checkpointing_phase(tmp_path):
    """A relative --workdir, as people type it, reaches orbax (which refuses relative paths)
    resolved against the directory the launcher started in."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    common = [
        "--config=" + str(ROOT / "experiments" / "scoop.py") + ":tiny",
        "--config.loop.warmstart_demos_per_task=1",
        "--config.loop.real_rollouts_per_task=1",
        "--config.sim.max_steps=8",
        "--config.policy.train.steps=2",
        "--workdir=runs/relative",
    ]
    for phase in ("collect", "train_policy"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), *common, f"--phase={phase}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    workdir = tmp_path / "runs" / "relative"
    state = json.loads((workdir / "state.json").read_text())
    assert state["iter_00"]["train_policy"]["step"] == 2
    assert (workdir / "checkpoints" / "policy" / "iter_00" / "2").is_dir()
