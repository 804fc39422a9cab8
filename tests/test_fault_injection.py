"""Kill -9 at random moments, rerun, and compare with an uninterrupted run (issue: nothing lost,
nothing silently mixed). One test per phase kind: a data phase (`collect`), a training phase
(`train_policy`) and `imagine` (from a world model of random weights). Each kill lands at a
seeded random moment within the uninterrupted run's duration; after the rerun the outputs equal
the uninterrupted run's and the run directory holds no temporary or staging directory. The
default run kills twice per phase; the slow run ten times.
"""

import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from vlaw.config import experiment_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
# A phase of the tiny scoop run, in a fresh interpreter (as a preempted job would be).
_RUN = """
import sys
from vlaw import pipeline
from vlaw.config import experiment_config
config = experiment_config(("scoop",), "tiny")
config.reward.progress = False
pipeline.run_phase(sys.argv[2], config, sys.argv[1], iteration=int(sys.argv[3]))
"""


def _start(workdir, phase: str, iteration: int) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.Popen(
        [sys.executable, "-c", _RUN, str(workdir), phase, str(iteration)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _finish(workdir, phase: str, iteration: int) -> float:
    start = time.time()
    process = _start(workdir, phase, iteration)
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr.decode()[-3000:]
    return time.time() - start


def _kill_at(workdir, phase: str, iteration: int, delay: float) -> None:
    process = _start(workdir, phase, iteration)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()


def _digests(workdir) -> dict[str, str]:
    """Every RLDS dataset's episodes (arrays and metadata, the workdir's path factored out)."""
    from vlaw.data import rlds_read

    found = {}
    for root, _, files in os.walk(workdir):
        if "dataset_info.json" in files:
            digest = hashlib.sha256()
            for episode in rlds_read.read_episodes(root):
                for fields in (episode.observation, episode.action_dict):
                    for key in sorted(fields):
                        digest.update(np.ascontiguousarray(fields[key]).tobytes())
                metadata = dict(vars(episode.metadata))
                metadata["policy_checkpoint"] = metadata["policy_checkpoint"].replace(
                    str(workdir), ""
                )
                digest.update(json.dumps(metadata, sort_keys=True, default=str).encode())
            found[os.path.relpath(root, workdir)] = digest.hexdigest()
    return found


def _leftovers(workdir) -> list[str]:
    """Temporary and staging directories or files that a finished run must not leave."""
    return sorted(
        os.path.relpath(os.path.join(root, name), workdir)
        for root, dirs, files in os.walk(workdir)
        for name in dirs + files
        if ".tmp" in name or name.endswith(".episodes") or "orbax-checkpoint-tmp" in name
    )


def _kills(seed: int, count: int, duration: float) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.05, 0.95) * duration for _ in range(count)]


KILLS = [pytest.param(2, id="2-kills"), pytest.param(10, id="10-kills", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, write_random_world_model):
    """The uninterrupted runs: collect (0), train_policy (0), then imagine (1) from a random
    world model (the phase's own test builds one the same way), each timed."""
    workdir = tmp_path_factory.mktemp("reference")
    durations = {"collect": _finish(workdir, "collect", 0)}
    durations["train_policy"] = _finish(workdir, "train_policy", 0)
    write_random_world_model(experiment_config(("scoop",), "tiny"), workdir, 1)
    durations["imagine"] = _finish(workdir, "imagine", 1)
    return workdir, durations


@pytest.mark.parametrize("count", KILLS)
def test_collect_killed_at_random_moments(reference, tmp_path, count):
    workdir_ref, durations = reference
    workdir = tmp_path / "run"
    for delay in _kills(1, count, durations["collect"]):
        _kill_at(workdir, "collect", 0, delay)
    _finish(workdir, "collect", 0)
    reference_demos = _digests(workdir_ref)["demos"]  # the reference run went on to imagine
    assert _digests(workdir) == {"demos": reference_demos}
    assert _leftovers(workdir) == []


@pytest.mark.parametrize("count", KILLS)
def test_train_policy_killed_at_random_moments(reference, tmp_path, count):
    from vlaw import workdir as workdir_lib
    from vlaw.agents import policy as policy_agent

    workdir_ref, durations = reference
    workdir = tmp_path / "run"
    shutil.copytree(workdir_ref / "demos", workdir / "demos")
    shutil.copyfile(workdir_ref / "state.json", workdir / "state.json")
    state = json.loads((workdir / "state.json").read_text())
    state["iter_00"].pop("train_policy")
    (workdir / "state.json").write_text(json.dumps(state))
    for delay in _kills(2, count, durations["train_policy"]):
        _kill_at(workdir, "train_policy", 0, delay)
    _finish(workdir, "train_policy", 0)
    directories = [workdir_lib.checkpoint_dir(w, "policy", 0) for w in (workdir, workdir_ref)]
    loaded = [policy_agent.load_policy(d).params for d in directories]
    jax.tree.map(np.testing.assert_array_equal, *loaded)
    metrics = [
        [
            json.loads(line)["step"]
            for line in pathlib.Path(d, "metrics.jsonl").read_text().splitlines()
        ]
        for d in directories
    ]
    assert metrics[0] == metrics[1]  # each step logged once, as in the uninterrupted run
    assert _leftovers(workdir) == []


@pytest.mark.parametrize("count", KILLS)
def test_imagine_killed_at_random_moments(reference, tmp_path, count):
    workdir_ref, durations = reference
    workdir = tmp_path / "run"
    for name in ("demos", "checkpoints", "assets"):
        shutil.copytree(workdir_ref / name, workdir / name)
    for delay in _kills(3, count, durations["imagine"]):
        _kill_at(workdir, "imagine", 1, delay)
    _finish(workdir, "imagine", 1)
    assert _digests(workdir) == _digests(workdir_ref)
    assert _leftovers(workdir) == []
