"""`collect` end to end at the tiny preset, with TensorFlow in the parent (writing RLDS) and
MuJoCo rendering in the simulator's worker processes."""

import os

import numpy as np
import pytest

from vlaw import pipeline
from vlaw.config import experiment_config


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    import tensorflow as tf  # noqa: F401  (in play in this process, as in the real phase)

    workdir = str(tmp_path_factory.mktemp("collect"))
    config = experiment_config(("scoop",), "tiny")
    summary = pipeline.run_phase("collect", config, workdir, iteration=0)
    return config, workdir, summary


def test_warm_start_collects_the_demonstrations_only(collected):
    config, workdir, summary = collected
    assert summary["demos"]["num_episodes"] == config.loop.warmstart_demos_per_task
    assert set(summary["demos"]["success_rate"]) == {"scoop"}
    assert summary["policy"].startswith("scripted_expert") and "real" not in summary
    assert os.path.isdir(os.path.join(workdir, "demos"))
    assert not os.path.exists(os.path.join(workdir, "iter_00"))


def test_real_rollouts_need_the_previous_iterations_policy(collected):
    """The scripted expert makes demonstrations only: iteration 1's rollouts are the base
    policy's, so without it collect says which phase to run."""
    config, workdir, _ = collected
    with pytest.raises(FileNotFoundError, match="train_policy phase of iteration 0"):
        pipeline.run_phase("collect", config, workdir, iteration=1)
    assert not os.path.exists(os.path.join(workdir, "iter_01"))


def test_plain_tfds_reads_droid_keys_and_dtypes(collected):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    config, workdir, _ = collected
    builder = tfds.builder_from_directory(os.path.join(workdir, "demos"))
    episodes = list(builder.as_dataset(split="train"))
    assert len(episodes) == config.loop.warmstart_demos_per_task
    for episode in episodes:
        assert episode["episode_metadata"]["source"].numpy() == b"demo"
        steps = list(episode["steps"])
        assert len(steps) == config.sim.max_steps
        observation = steps[0]["observation"]
        for camera in ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left"):
            assert observation[camera].dtype == tf.uint8
            assert observation[camera].shape == (64, 64, 3)
        assert observation["joint_position"].dtype == tf.float64
        assert observation["joint_position"].shape == (7,)
        assert observation["gripper_position"].shape == (1,)
        assert observation["cartesian_position"].shape == (6,)
        assert steps[0]["action_dict"]["joint_velocity"].shape == (7,)
        assert steps[0]["is_first"].numpy() and steps[-1]["is_last"].numpy()


def test_episodes_read_back_with_vlaw_reader(collected):
    from vlaw.data import rlds_read

    config, workdir, _ = collected
    episodes = list(rlds_read.read_episodes(os.path.join(workdir, "demos")))
    assert len(episodes) == config.loop.warmstart_demos_per_task
    for episode in episodes:
        assert episode.metadata.source == "demo"
        assert episode.metadata.task == "scoop"
        assert episode.instruction.startswith("transfer some ")
        assert np.all(np.abs(episode.policy_actions()[:, :7]) <= 1.0 + 1e-6)


def test_rerun_keeps_what_exists(collected):
    config, workdir, summary = collected
    again = pipeline.run_phase("collect", config, workdir, iteration=0)
    assert again == summary  # state.json marks the phase done
    forced = pipeline.run_phase("collect", config, workdir, iteration=0, force=True)
    assert forced["demos"]["skipped"]


def test_interrupted_collect_resumes_the_count(tmp_path, monkeypatch):
    """Episodes saved before a crash are kept; the rerun runs only the missing ones."""
    import tensorflow  # noqa: F401

    from vlaw.phases import collect
    from vlaw.rollout import episodes
    from vlaw.sim import workers

    config = experiment_config(("scoop",), "tiny")
    workdir = str(tmp_path)
    original = workers.StationPool.expert_episodes

    def crash_after_first(self, specs, **kwargs):
        for episode in original(self, specs, **kwargs):
            yield episode
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(workers.StationPool, "expert_episodes", crash_after_first)
    with pytest.raises(RuntimeError, match="simulated crash"):
        collect.collect_phase(config, workdir, 0)
    demos = os.path.join(workdir, "demos")
    assert not os.path.exists(demos)  # the dataset is all or nothing ...
    staged = [n for n in os.listdir(episodes.staging_dir(demos)) if n.endswith(".npz")]
    assert len(staged) == 1  # ... its finished episode is kept

    monkeypatch.setattr(workers.StationPool, "expert_episodes", original)
    # Other settings on the rerun would mix two kinds of episodes into one dataset: refused.
    changed = config.copy_and_resolve_references()
    changed.sim.expert_noise = 0.0
    with pytest.raises(ValueError, match=r"other settings \(actor\)"):
        collect.collect_phase(changed, workdir, 0)
    summary = collect.collect_phase(config, workdir, 0)
    assert summary["demos"]["resumed_episodes"] == 1
    assert summary["demos"]["num_episodes"] == config.loop.warmstart_demos_per_task
    assert not os.path.exists(episodes.staging_dir(demos))


def test_staged_episodes_round_trip_exactly(tmp_path):
    from vlaw.data.episode import Episode, EpisodeMetadata
    from vlaw.rollout import episodes

    rng = np.random.default_rng(0)
    steps = 3
    observation = {
        f"observation/{camera}": rng.integers(0, 255, (steps, 8, 8, 3), dtype=np.uint8)
        for camera in ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left")
    }
    observation["observation/joint_position"] = rng.normal(size=(steps, 7))
    observation["observation/gripper_position"] = rng.uniform(size=(steps, 1))
    observation["observation/cartesian_position"] = rng.normal(size=(steps, 6))
    action_dict = {
        f"action_dict/{name}": rng.normal(size=(steps, dim))
        for name, dim in (
            ("cartesian_position", 6),
            ("cartesian_velocity", 6),
            ("gripper_position", 1),
            ("gripper_velocity", 1),
            ("joint_position", 7),
            ("joint_velocity", 7),
        )
    }
    metadata = EpisodeMetadata(success=True, source="real", task="draw", episode_id="real-01-x")
    episode = Episode("draw a circle", observation, action_dict, metadata)
    loaded = episodes.load_staged_episode(episodes.save_staged_episode(str(tmp_path), episode))
    assert loaded.instruction == episode.instruction
    assert loaded.metadata.episode_id == "real-01-x" and loaded.metadata.success
    assert np.isnan(loaded.metadata.reward_score)
    for key, value in {**observation, **action_dict}.items():
        stored = {**loaded.observation, **loaded.action_dict}[key]
        np.testing.assert_array_equal(stored, value)
        assert stored.dtype == value.dtype


def test_episodes_staged_out_of_order_are_written_in_plan_order(collected, tmp_path):
    """A kill after the later episodes were staged, before the dataset was written: the rerun
    writes them in the plan's order, as the straight run did (not in staging-file order)."""
    from vlaw.data import rlds_read
    from vlaw.rollout import episodes as episodes_lib

    config, workdir, _ = collected
    straight = list(rlds_read.read_episodes(os.path.join(workdir, "demos")))
    ids = [e.metadata.episode_id for e in straight]
    assert sorted(ids) != ids  # else staging-file order would hide the bug
    resumed_dir = str(tmp_path / "resumed")
    staging = episodes_lib.staging_dir(os.path.join(resumed_dir, "demos"))
    for episode in reversed(straight):
        episodes_lib.save_staged_episode(staging, episode)
    pipeline.run_phase("collect", config, resumed_dir, iteration=0)
    resumed = list(rlds_read.read_episodes(os.path.join(resumed_dir, "demos")))
    assert [e.metadata.episode_id for e in resumed] == ids
    for a, b in zip(straight, resumed, strict=True):
        np.testing.assert_array_equal(
            a.observation["observation/joint_position"], b.observation["observation/joint_position"]
        )
    assert not os.path.exists(staging)
