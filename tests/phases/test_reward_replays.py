"""`train_reward` with `reward.train_on_world_model_replays` at tiny: every training episode
replayed whole in the iteration's world model (random tiny weights), written once to
iter_01/reward_replays with the recording's label, trained on beside the recordings, and
scored apart."""

import os

import numpy as np
import pytest

from vlaw import pipeline
from vlaw import workdir as workdir_lib
from vlaw.agents import world_model as wm
from vlaw.data import droid, rlds_read
from vlaw.phases import train_reward


def _config():
    from experiments.scoop import get_config

    config = get_config("tiny")
    config.mesh.tensor = 4  # 8 fake devices: data=2 carries the batch of 2
    config.reward.progress = False
    config.reward.train_on_world_model_replays = True
    return config


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, record_real_rollouts, write_random_world_model):
    workdir = str(tmp_path_factory.mktemp("reward_replays"))
    config = _config()
    pipeline.run_phase("collect", config, workdir, iteration=0)
    record_real_rollouts(config, workdir, 1)
    write_random_world_model(config, workdir, 1)
    summary = pipeline.run_phase("train_reward", config, workdir, iteration=1)
    return config, workdir, summary


def test_each_training_episode_is_replayed_with_its_label(replayed):
    config, workdir, summary = replayed
    out = workdir_lib.reward_replays_dir(workdir, 1)
    recorded_dirs = [workdir_lib.demos_dir(workdir), workdir_lib.real_dir(workdir, 1)]
    assert summary["dataset_dirs"] == recorded_dirs + [out]
    recorded = list(rlds_read.read_episodes(recorded_dirs))
    replays = list(rlds_read.read_episodes(out))
    assert len(replays) == len(recorded) > config.loop.imagine_batch_size  # a padded batch too
    size = wm.pixel_size(wm.model_config(config))
    stride = int(config.world_model.frame_stride)
    for real, replay in zip(recorded, replays, strict=True):
        meta = replay.metadata
        assert meta.episode_id == f"replay-01-{real.metadata.episode_id}"
        assert (meta.source, meta.iteration, meta.task) == ("replay", 1, real.metadata.task)
        assert meta.success == real.metadata.success and replay.instruction == real.instruction
        assert replay.num_steps == real.num_steps  # cut to the recording's length
        image = replay.observation[f"observation/{droid.CAMERA_NAMES[0]}"]
        assert image.shape == (real.num_steps, *size, 3)
        # Held between world-model frames, as imagined episodes are.
        np.testing.assert_array_equal(image[:stride], np.repeat(image[:1], stride, axis=0))
        # The recorded actions drive it: same start, joint velocities executed as recorded.
        joints = replay.observation["observation/joint_position"]
        np.testing.assert_allclose(joints[0], real.observation["observation/joint_position"][0])
        executed = replay.action_dict["action_dict/joint_velocity"]
        commanded = real.action_dict["action_dict/joint_velocity"]
        assert np.corrcoef(executed.ravel(), commanded.ravel())[0, 1] > 0.99
    counts = summary["train_confusion_replays"]
    assert counts["num_known"] == len(replays)
    assert summary["train_confusion"]["num_known"] == 2 * len(replays)


def test_replays_are_written_once(replayed):
    config, workdir, _ = replayed
    out = workdir_lib.reward_replays_dir(workdir, 1)
    mtime = os.path.getmtime(out)
    dirs = workdir_lib.reward_training_dirs(workdir, 1, include_demos=True)
    assert train_reward.write_world_model_replays(config, workdir, 1, dirs) == out
    assert os.path.getmtime(out) == mtime


def test_missing_world_model_is_named(replayed, tmp_path):
    config, workdir, _ = replayed
    dirs = workdir_lib.reward_training_dirs(workdir, 1, include_demos=True)
    with pytest.raises(FileNotFoundError, match="run train_world_model for iteration 1"):
        train_reward.write_world_model_replays(config, str(tmp_path), 1, dirs)
