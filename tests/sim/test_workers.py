"""Stations in worker processes: expert episodes, labels, and TensorFlow kept out of them."""

import subprocess
import sys

import numpy as np
import pytest

from vlaw.data import droid
from vlaw.rollout.episodes import SuccessTally, policy_episodes
from vlaw.rollout.station import TaskSpec
from vlaw.sim.workers import StationPool, WorkerError


@pytest.fixture(scope="module")
def pool():
    with StationPool(["stack"] * 2, num_workers=2, stations_per_worker=1) as pool:
        yield pool


def test_workers_never_import_tensorflow(pool):
    modules = pool.loaded_modules()
    assert "mujoco" in modules
    assert "tensorflow" not in modules and "jax" not in modules


def test_expert_episodes_are_valid_and_labelled(pool):
    specs = [TaskSpec("stack", seed) for seed in range(3)]
    tally = SuccessTally()
    episodes = list(tally.watch(pool.expert_episodes(specs, noise=0.0, max_steps=150)))
    assert len(episodes) == 3
    assert sorted(e.metadata.episode_id for e in episodes) == [
        f"demo-00-stack-{seed}" for seed in range(3)
    ]
    for episode in episodes:
        episode.validate()
        assert episode.metadata.source == "demo"
        assert episode.image_shape == (64, 64, 3)
        assert episode.policy_actions().shape == (episode.num_steps, droid.POLICY_ACTION_DIM)
        assert episode.instruction.startswith("stack the ")
    assert tally.rates() == {"stack": 1.0}  # noise 0 on these seeds


def test_policy_episodes_on_a_pool(pool):
    """A parent-side policy drives the workers' stations chunk by chunk (open loop 8 of 10)."""
    calls = []

    def still_policy(observations):
        calls.append(len(observations))
        return np.zeros((len(observations), 10, 8))

    specs = [TaskSpec("stack", 7), TaskSpec("stack", 8), TaskSpec("stack", 9)]
    episodes = list(policy_episodes(pool, still_policy, specs, max_steps=12, open_loop_steps=8))
    assert len(episodes) == 3
    assert all(e.num_steps == 12 for e in episodes)
    assert all(not e.metadata.success for e in episodes)
    assert calls == [2, 2, 2, 2]  # two batches of two stations, two chunks each


def test_worker_errors_reach_the_parent(pool):
    with pytest.raises(WorkerError, match="built for 'stack'"):
        pool.reset([TaskSpec("draw", 0), TaskSpec("stack", 0)])


def test_a_tensorflow_script_can_drive_rendering_workers(tmp_path):
    """A main script that imports TensorFlow first still gets TensorFlow-free workers (spawned
    children do not re-import the script)."""
    script = tmp_path / "tf_first.py"
    script.write_text(
        "import tensorflow\n"
        "from vlaw.rollout.station import TaskSpec\n"
        "from vlaw.sim.workers import StationPool\n"
        "if __name__ == '__main__':\n"
        "    with StationPool(['stack'], 1, 1) as pool:\n"
        "        observation = pool.reset([TaskSpec('stack', 0)])[0]\n"
        "        assert observation.images['wrist_image_left'].std() > 5\n"
        "        assert 'tensorflow' not in pool.loaded_modules()\n"
        "    print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
