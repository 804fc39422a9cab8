"""Stations in worker processes: expert episodes, labels, and TensorFlow kept out of them."""

import multiprocessing
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from vlaw.data import droid
from vlaw.rollout.episodes import SuccessTally, policy_episodes
from vlaw.rollout.station import Observation, TaskSpec
from vlaw.sim import station as sim_station
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


def test_expert_corrections_change_the_recorded_actions_only(pool):
    """DART: the noisy expert moves the arm as it would without corrections (same observations,
    same label) while its episodes record the noise-free expert's commands from those states."""
    spec = [TaskSpec("stack", 4)]
    plain, corrected = (
        next(pool.expert_episodes(spec, noise=1.0, max_steps=40, corrections=c))
        for c in (False, True)
    )
    for key, value in plain.observation.items():
        np.testing.assert_array_equal(corrected.observation[key], value, err_msg=key)
    assert corrected.metadata.success == plain.metadata.success
    assert corrected.metadata.policy_checkpoint == "scripted_expert(noise=1, corrections)"
    executed, recorded = plain.policy_actions(), corrected.policy_actions()
    # From the reset state both runs share, the correction is the noise-free expert's command
    # (no waypoint offset, no tremor), which the noisy expert's is not.
    clean = next(pool.expert_episodes(spec, noise=0.0, max_steps=1)).policy_actions()[0]
    np.testing.assert_allclose(recorded[0], clean, atol=1e-12)
    assert np.abs(executed[0, :7] - clean[:7]).max() > 1e-3
    np.testing.assert_array_equal(recorded[:, 7], executed[:, 7])  # the gripper is not perturbed
    # Noise 1.0 puts a tremor of 0.15 on every arm command; the corrections carry none of it.
    assert np.std(np.diff(recorded[:, :7], axis=0)) < 0.5 * np.std(np.diff(executed[:, :7], axis=0))
    # The whole action dict is the correction's: its joint target is one step of the recorded
    # velocity from the observed joints (as for any command the station executes).
    start = corrected.observation["observation/joint_position"]
    target = corrected.action_dict["action_dict/joint_position"]
    np.testing.assert_allclose(
        target - start, recorded[:, :7] * sim_station.JOINT_DELTA_PER_UNIT, atol=1e-9
    )


def test_expert_corrections_are_the_executed_actions_without_noise(pool):
    spec = [TaskSpec("stack", 5)]
    plain, corrected = (
        next(pool.expert_episodes(spec, noise=0.0, max_steps=30, corrections=c))
        for c in (False, True)
    )
    np.testing.assert_allclose(corrected.policy_actions(), plain.policy_actions(), atol=1e-12)


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


@pytest.mark.parametrize("failing_worker", [0, 1])
def test_a_failed_reset_leaves_the_pool_in_step(pool, failing_worker):
    """One worker's reset raises: the error names that worker, the pool refuses episode calls
    until a reset succeeds (never mixing stale and fresh stations), and stays usable."""
    specs = [TaskSpec("stack", 0), TaskSpec("stack", 1)]
    specs[failing_worker] = TaskSpec("draw", 0)  # the station was built for stack
    with pytest.raises(WorkerError, match=f"worker {failing_worker} ") as error:
        pool.reset(specs)
    assert f"worker {1 - failing_worker} " not in str(error.value)
    for call in (pool.label, pool.observe, lambda: pool.act(np.zeros((2, 1, 8)))):
        with pytest.raises(WorkerError, match="needs a successful reset"):
            call()
    assert "mujoco" in pool.loaded_modules()  # every worker answers its own command
    observations = pool.reset([TaskSpec("stack", 2), TaskSpec("stack", 3)])
    assert [type(o) for o in observations] == [Observation, Observation]
    assert [type(o) for o in pool.observe()] == [Observation, Observation]
    records = pool.act(np.zeros((2, 2, 8)))
    assert [len(r) for r in records] == [2, 2]
    assert [type(label) for label in pool.label()] == [bool, bool]


def test_invalid_actions_are_refused_before_any_worker_moves(pool):
    pool.reset([TaskSpec("stack", 4), TaskSpec("stack", 5)])
    with pytest.raises(ValueError, match=r"\(T, 8\)"):
        pool.act(np.zeros((2, 3, 7)))
    with pytest.raises(ValueError, match="non-finite"):
        pool.act(np.full((2, 3, 8), np.nan))
    assert [type(label) for label in pool.label()] == [bool, bool]  # still in step


def test_a_killed_worker_raises_and_closes_the_pool():
    """A worker killed mid-episode surfaces as a WorkerError naming it; the pool closes at once
    (the surviving worker exits on its own, exit code 0, instead of being terminated after a
    join timeout) and leaves no process behind."""
    pool = StationPool(["stack"] * 2, num_workers=2, stations_per_worker=1)
    try:
        pool.reset([TaskSpec("stack", 0), TaskSpec("stack", 1)])
        pool.act(np.zeros((2, 3, 8)))
        os.kill(pool.worker_pids[1], signal.SIGKILL)
        with pytest.raises(WorkerError, match="worker 1 .*exit code -9"):
            pool.act(np.zeros((2, 3, 8)))
        assert pool.closed
        with pytest.raises(WorkerError, match="closed"):
            pool.observe()
        processes = pool._processes
        assert not any(process.is_alive() for process in processes)
        assert [process.exitcode for process in processes] == [0, -signal.SIGKILL]
        assert not set(pool.worker_pids) & {p.pid for p in multiprocessing.active_children()}
    finally:
        pool.close()


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


def test_an_expert_episode_error_waits_for_the_other_workers(pool):
    """Worker 0's episode fails at once while worker 1 still runs one: the error is raised
    after worker 1 has replied, so the next command gets its own replies."""
    specs = [TaskSpec("stack", -1), TaskSpec("stack", 0)]  # a negative seed: reset raises
    with pytest.raises(WorkerError, match="worker 0 "):
        list(pool.expert_episodes(specs, noise=0.0, max_steps=30))
    assert "mujoco" in pool.loaded_modules()
    with pytest.raises(WorkerError, match="needs a successful reset"):
        pool.label()
    observations = pool.reset([TaskSpec("stack", 1), TaskSpec("stack", 2)])
    assert [type(o) for o in observations] == [Observation, Observation]


def test_stopping_expert_episodes_early_keeps_the_pool_in_step(pool):
    episodes = pool.expert_episodes(
        [TaskSpec("stack", seed) for seed in range(4)], noise=0.0, max_steps=30
    )
    next(episodes)  # worker 1 may still owe its episode when the consumer stops
    episodes.close()
    assert "mujoco" in pool.loaded_modules()
    observations = pool.reset([TaskSpec("stack", 1), TaskSpec("stack", 2)])
    assert [o.instruction.startswith("stack the ") for o in observations] == [True, True]


def test_same_seed_and_actions_give_identical_episodes_across_processes():
    """Two worker processes, the same seeds: the scripted expert (whose actions follow from the
    seed and the state) records identical frames, actions and labels in both, and so does a
    fixed action chunk; erase (ink as task state) and scoop (many contacts) included."""
    tasks = ["erase", "scoop"]
    with StationPool(tasks * 2, num_workers=2, stations_per_worker=2) as pool:
        specs = [TaskSpec(task, 3) for task in tasks]
        episodes = list(pool.expert_episodes(specs * 2, noise=0.3, max_steps=60))
        by_task = {task: [e for e in episodes if e.metadata.task == task] for task in tasks}
        for task, (a, b) in by_task.items():
            assert a.metadata.success == b.metadata.success, task
            for key in a.observation:
                np.testing.assert_array_equal(a.observation[key], b.observation[key], key)
            for key in a.action_dict:
                np.testing.assert_array_equal(a.action_dict[key], b.action_dict[key], key)
        pool.reset(specs * 2)
        chunk = np.random.default_rng(0).uniform(-0.6, 0.6, (1, 12, 8)).repeat(4, axis=0)
        records = pool.act(chunk)
        observations, labels = pool.observe(), pool.label()
        for s in range(2):  # station s of worker 0 against station s of worker 1
            first, second = observations[s], observations[s + 2]
            np.testing.assert_array_equal(first.joint_position, second.joint_position)
            for name in droid.CAMERA_NAMES:
                np.testing.assert_array_equal(first.images[name], second.images[name])
            assert labels[s] == labels[s + 2]
            np.testing.assert_array_equal(
                records[s][-1].action_dict["cartesian_position"],
                records[s + 2][-1].action_dict["cartesian_position"],
            )
