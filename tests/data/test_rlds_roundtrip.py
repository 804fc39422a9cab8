"""vlaw's RLDS writer: values survive a round trip, plain TFDS reads the files, writes are
atomic and validated."""

import os

import numpy as np
import pytest

from vlaw.data import droid, rlds_read, rlds_write
from vlaw.data.tensorflow_cpu import import_tensorflow, import_tfds


def _jpeg_round_trip(images: np.ndarray) -> np.ndarray:
    """What TFDS's JPEG encoder (tf.image.encode_jpeg, default quality) and our decoder give."""
    tf = import_tensorflow()
    return np.stack([tf.io.decode_jpeg(tf.image.encode_jpeg(image)).numpy() for image in images])


def test_round_trip_values_equal(vlaw_dataset, vlaw_episodes):
    back = list(rlds_read.read_episodes(vlaw_dataset))
    assert len(back) == len(vlaw_episodes)
    for written, read in zip(vlaw_episodes, back, strict=True):
        assert read.instruction == written.instruction
        assert read.num_steps == written.num_steps
        for field in droid.OBSERVATION_STATE_FIELDS + droid.ACTION_DICT_FIELDS:
            source = written.observation if field.path.startswith("obs") else written.action_dict
            target = read.observation if field.path.startswith("obs") else read.action_dict
            assert target[field.path].dtype == np.float64
            np.testing.assert_array_equal(target[field.path], source[field.path], field.path)
        for name in droid.CAMERA_NAMES:
            original = written.observation[f"observation/{name}"]
            decoded = read.observation[f"observation/{name}"]
            assert decoded.shape == original.shape and decoded.dtype == np.uint8
            # JPEG is lossy: the stored image is exactly the JPEG round trip of the input...
            np.testing.assert_array_equal(decoded, _jpeg_round_trip(original))
            # ...which stays close to the input.
            assert np.abs(decoded.astype(int) - original).mean() < 4.0
        expected_meta = written.metadata
        assert read.metadata.file_path == expected_meta.droid_file_path()
        for name in ("success", "source", "task", "iteration", "policy_checkpoint", "kept"):
            assert getattr(read.metadata, name) == getattr(expected_meta, name), name
        assert read.metadata.episode_id == expected_meta.episode_id
        assert read.metadata.reward_score == pytest.approx(expected_meta.reward_score)


def test_plain_tfds_reads_what_vlaw_writes(vlaw_dataset, vlaw_episodes):
    tfds = import_tfds()
    builder = tfds.builder_from_directory(vlaw_dataset)
    assert builder.info.name == "vlaw"
    episodes = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
    assert len(episodes) == len(vlaw_episodes)
    for written, stored in zip(vlaw_episodes, episodes, strict=True):
        steps = list(stored["steps"])
        num_steps = written.num_steps
        assert len(steps) == num_steps
        success = written.metadata.success
        meta = stored["episode_metadata"]
        assert meta["file_path"].decode() == written.metadata.droid_file_path()
        assert ("/success/" in meta["file_path"].decode()) == success
        assert bool(meta["success"]) == success
        for t, step in enumerate(steps):
            assert step["is_first"] == (t == 0)
            assert step["is_last"] == step["is_terminal"] == (t == num_steps - 1)
            assert step["reward"] == (1.0 if success and t == num_steps - 1 else 0.0)
            assert step["discount"] == 1.0
            assert step["language_instruction"].decode() == written.instruction
            assert step["language_instruction_2"] == b""
            expected_action = np.concatenate(
                [
                    written.action_dict["action_dict/cartesian_position"][t],
                    written.action_dict["action_dict/gripper_position"][t],
                ]
            )
            np.testing.assert_array_equal(step["action"], expected_action)
            image = step["observation"]["wrist_image_left"]
            assert image.shape == written.image_shape and image.dtype == np.uint8


def test_summary_and_counts(vlaw_dataset, vlaw_episodes):
    summary = rlds_read.summarize(vlaw_dataset)
    assert summary == {
        "num_episodes": len(vlaw_episodes),
        "num_steps": sum(e.num_steps for e in vlaw_episodes),
        "num_successes": sum(e.metadata.success for e in vlaw_episodes),
        "num_shards": 3,
        "num_skipped": 0,
    }
    assert rlds_read.count_episodes([vlaw_dataset, vlaw_dataset]) == 2 * len(vlaw_episodes)
    layout = rlds_read.open_dataset(vlaw_dataset)
    assert layout.has_vlaw_metadata and layout.image_shape == vlaw_episodes[0].image_shape


def test_write_returns_summary_and_refuses_existing_dir(tmp_path, make_episodes):
    episodes = make_episodes(3)
    target = tmp_path / "out"
    summary = rlds_write.write_episodes(
        str(target), iter(episodes), episodes_per_shard=2, progress=True
    )
    assert summary["num_episodes"] == 3 and summary["num_shards"] == 2
    assert summary["num_steps"] == sum(e.num_steps for e in episodes)
    with pytest.raises(FileExistsError, match="already exists"):
        rlds_write.write_episodes(str(target), episodes)


def test_bad_episode_names_field_and_leaves_nothing(tmp_path, make_episodes):
    episodes = make_episodes(3)
    num_steps = episodes[2].num_steps
    episodes[2].observation["observation/cartesian_position"] = np.zeros((num_steps, 5))
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"episode 2 .*observation/cartesian_position"):
        rlds_write.write_episodes(str(target), episodes)
    assert os.listdir(tmp_path) == []  # neither the dataset nor its temp dir


def test_image_shape_must_match_the_first_episode(tmp_path, make_episodes):
    episodes = make_episodes(1) + make_episodes(1, seed=5)
    episodes[1].observation = {
        k: (v[:, :16] if "image" in k else v) for k, v in episodes[1].observation.items()
    }
    with pytest.raises(ValueError, match=r"episode 1 .*exterior_image_1_left"):
        rlds_write.write_episodes(str(tmp_path / "out"), episodes)


def test_empty_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no episodes"):
        rlds_write.write_episodes(str(tmp_path / "out"), [])
    assert os.listdir(tmp_path) == []
