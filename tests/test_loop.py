"""Algorithm 1 as one command: `launch.py` with no `--phase` runs the warm start and two
iterations at `tiny` (collect to evaluate), prints the success table and writes every
iteration's metrics; a loop killed with SIGKILL and started again finishes with the datasets
and summaries of an uninterrupted run."""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARGS = ("--config=experiments/scoop.py:tiny",)
# Summary fields that measure time (or how much of a resumed phase was already done).
UNSTABLE = {
    "seconds",
    "train_seconds",
    "imagine_seconds",
    "seconds_per_interaction",
    "eval_seconds",
    "episodes_per_s",
    "vae_train_seconds",
    "resumed_episodes",
}


def _command(workdir) -> list[str]:
    return [sys.executable, "launch.py", *ARGS, f"--workdir={workdir}"]


def _env() -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _run(workdir) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(workdir), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1500
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("loop")
    result = _run(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, result


def test_bare_launch_runs_the_warm_start_and_two_iterations(straight):
    workdir, result = straight
    assert "VLAW success rates" in result.stdout
    table = result.stdout.split("VLAW success rates")[1]
    for row in ("base", "iteration 1", "iteration 2"):
        assert row in table, table
    assert "scoop" in table
    state = json.loads((workdir / "state.json").read_text())
    assert set(state["iter_00"]) == {"collect", "train_policy", "evaluate"}
    for iteration in ("iter_01", "iter_02"):
        assert set(state[iteration]) == {
            "collect",
            "train_world_model",
            "train_reward",
            "imagine",
            "label",
            "train_policy",
            "evaluate",
        }
    assert state["iter_01"]["train_reward"]["trained"]
    assert not state["iter_02"]["train_reward"]["trained"]  # the paper: iteration 1 only
    assert state["iter_01"]["collect"]["policy_checkpoint"].endswith(
        os.path.join("checkpoints", "policy", "iter_00", "4")
    )
    for iteration in range(3):
        metrics = json.loads(
            (workdir / "reports" / f"iter_{iteration:02d}" / "metrics.json").read_text()
        )
        scoop = metrics["tasks"]["scoop"]
        assert scoop["episodes"] == 2 and 0 <= scoop["success_rate"] <= 1
        assert scoop["ci95_low"] <= scoop["success_rate"] <= scoop["ci95_high"]
    # The scripted expert made the demonstrations only: every real rollout is a policy's.
    assert not (workdir / "iter_00" / "real").exists()


def test_every_iteration_has_a_report_that_renders(straight, linked_paths, render_html):
    workdir, _ = straight
    reports = workdir / "reports"
    pages = [reports / "index.html", *(reports / f"iter_{i:02d}" / "report.html" for i in range(3))]
    for page in pages:
        for link in linked_paths(str(page)):
            assert ":" not in link and os.path.isfile(link), f"{page}: {link}"
    analysis = json.loads((reports / "iter_02" / "world_model.json").read_text())
    assert analysis["replay"]["summary"]["num_clips"] == 2
    assert [p["name"] for p in analysis["ranking"]["policies"]] == [
        "base",
        "iteration 1",
        "iteration 2",
    ]
    screenshot, widths = render_html(str(reports / "iter_02" / "report.html"))
    assert widths and all(width > 0 for _, width in widths), widths
    assert screenshot.std() > 5, "blank screenshot"


def _dataset_digests(workdir) -> dict[str, str]:
    from vlaw.data import rlds_read

    digests = {}
    for root, _, files in os.walk(workdir):
        if "dataset_info.json" not in files:
            continue
        digest = hashlib.sha256()
        for episode in rlds_read.read_episodes(root):
            for fields in (episode.observation, episode.action_dict):
                for key in sorted(fields):
                    digest.update(np.ascontiguousarray(fields[key]).tobytes())
            metadata = dict(vars(episode.metadata))
            metadata["policy_checkpoint"] = os.path.relpath(
                metadata["policy_checkpoint"] or ".", workdir
            )
            digest.update(json.dumps(metadata, sort_keys=True, default=str).encode())
        digests[os.path.relpath(root, workdir)] = digest.hexdigest()
    return digests


def _stable(value, workdir):
    if isinstance(value, dict):
        return {k: _stable(v, workdir) for k, v in value.items() if k not in UNSTABLE}
    if isinstance(value, list):
        return [_stable(v, workdir) for v in value]
    if isinstance(value, str):
        return value.replace(str(workdir), "<workdir>")
    return value


def _kill_when(workdir, ready) -> None:
    """Starts the loop and SIGKILLs it as soon as `ready(workdir)` holds."""
    process = subprocess.Popen(
        _command(workdir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 1200
        while not ready(workdir):
            assert process.poll() is None, "the loop ended before the kill"
            assert time.time() < deadline
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow  # two more loops at tiny (~10 min on 2 cores)
def test_sigkill_during_imagine_and_train_policy_then_rerun_equals_a_straight_run(
    straight, tmp_path
):
    reference, _ = straight
    workdir = tmp_path / "killed"

    def imagining(w):
        staging = w / "iter_01" / ".synthetic.episodes"
        return staging.is_dir() and any(p.suffix == ".npz" for p in staging.iterdir())

    def training_policy(w):
        return (w / "checkpoints" / "policy" / "iter_01" / "2").is_dir()

    _kill_when(workdir, imagining)
    _kill_when(workdir, training_policy)
    result = _run(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    assert _dataset_digests(workdir) == _dataset_digests(reference)
    killed = json.loads((workdir / "state.json").read_text())
    straight_state = json.loads((reference / "state.json").read_text())
    assert _stable(killed, workdir) == _stable(straight_state, reference)
