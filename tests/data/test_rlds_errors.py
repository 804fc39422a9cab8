"""Bad input names the file and the field; `skip_corrupt` skips and counts instead."""

import glob
import os
import shutil

import numpy as np
import pytest

from vlaw.data import policy_windows, rlds_read
from vlaw.data.tensorflow_cpu import import_tensorflow, import_tfds


@pytest.fixture
def dataset_copy(vlaw_dataset, tmp_path):
    """A private copy of the shared 6-episode, 3-shard dataset, free to damage."""
    copy = str(tmp_path / "copy")
    shutil.copytree(vlaw_dataset, copy)
    return copy


def _shards(dataset_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(dataset_dir, "*.tfrecord-*")))


def test_truncated_shard_names_the_file(dataset_copy):
    shard = _shards(dataset_copy)[1]
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 50)
    with pytest.raises(rlds_read.DataError, match="truncated") as raised:
        list(rlds_read.read_episodes(dataset_copy))
    assert raised.value.path == shard and shard in str(raised.value)
    assert raised.value.field == "(tfrecord)" and raised.value.record_index == 1

    report = rlds_read.ReadReport()
    episodes = list(rlds_read.read_episodes(dataset_copy, skip_corrupt=True, report=report))
    assert len(episodes) == 5 and report.num_skipped == 1
    assert shard in report.problems[0]


def test_flipped_bytes_name_the_file(dataset_copy):
    shard = _shards(dataset_copy)[0]
    with open(shard, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(rlds_read.DataError, match="corrupted record") as raised:
        list(rlds_read.read_episodes(dataset_copy))
    assert raised.value.path == shard
    report = rlds_read.ReadReport()
    episodes = list(rlds_read.read_episodes(dataset_copy, skip_corrupt=True, report=report))
    # The first record of the shard is damaged; TFRecord framing cannot resume after it, so
    # the shard's remaining record is lost too (both counted).
    assert len(episodes) == 4 and report.num_skipped == 2


def _rewrite_record(shard: str, index: int, edit) -> None:
    """Re-serializes record `index` of `shard` after `edit(tf.train.Example)`."""
    tf = import_tensorflow()
    records = [r.numpy() for r in tf.data.TFRecordDataset(shard)]
    example = tf.train.Example.FromString(records[index])
    edit(example)
    records[index] = example.SerializeToString()
    with tf.io.TFRecordWriter(shard) as writer:
        for record in records:
            writer.write(record)


def test_record_missing_a_field(dataset_copy):
    shard = _shards(dataset_copy)[2]
    field = "steps/observation/joint_position"
    _rewrite_record(shard, 0, lambda example: example.features.feature.pop(field))
    with pytest.raises(rlds_read.DataError) as raised:
        list(rlds_read.read_episodes(dataset_copy))
    error = raised.value
    assert (error.path, error.field, error.record_index) == (shard, field, 0)
    assert shard in str(error) and field in str(error) and "missing" in str(error)
    report = rlds_read.ReadReport()
    assert len(list(rlds_read.read_episodes(dataset_copy, skip_corrupt=True, report=report))) == 5
    assert report.num_skipped == 1


def test_record_with_wrong_length(dataset_copy):
    shard = _shards(dataset_copy)[0]
    field = "steps/action_dict/joint_velocity"

    def drop_one_value(example):
        values = example.features.feature[field].float_list.value
        del values[-1]

    _rewrite_record(shard, 1, drop_one_value)
    with pytest.raises(
        rlds_read.DataError, match=r"record 1\): field steps/action_dict/joint_velocity"
    ):
        list(rlds_read.read_episodes(dataset_copy))


def _plain_dataset(version_dir: str, features: dict) -> None:
    """A one-episode dataset written by plain TFDS with the given step features."""
    tfds = import_tfds()
    os.makedirs(version_dir)
    info = tfds.core.DatasetInfo(
        builder=tfds.core.dataset_info.DatasetIdentity(
            name="broken", version=tfds.core.Version("1.0.0"), data_dir=version_dir, module_name=""
        ),
        features=tfds.features.FeaturesDict(
            {
                "steps": tfds.features.Dataset({k: v for k, (v, _) in features.items()}),
                "episode_metadata": {"file_path": tfds.features.Text()},
            }
        ),
    )
    writer = tfds.core.SequentialWriter(info, max_examples_per_shard=1)
    writer.initialize_splits(["train"])
    steps = {k: value for k, (_, value) in features.items()}
    writer.add_examples({"train": [{"steps": steps, "episode_metadata": {"file_path": "x"}}]})
    writer.close_all()


def _droid_step_features(joint_dtype=np.float64, drop: str = ""):
    tfds = import_tfds()
    n = 2
    image = (
        tfds.features.Image(shape=(8, 8, 3), dtype=np.uint8, encoding_format="jpeg"),
        np.zeros((n, 8, 8, 3), np.uint8),
    )
    tensor = lambda dim, dtype=np.float64: (
        tfds.features.Tensor(shape=(dim,), dtype=dtype),
        np.zeros((n, dim), dtype),
    )
    features = {
        "observation": (
            {
                "exterior_image_1_left": image,
                "exterior_image_2_left": image,
                "wrist_image_left": image,
                "cartesian_position": tensor(6),
                "joint_position": tensor(7, joint_dtype),
                "gripper_position": tensor(1),
            }
        ),
        "action_dict": {
            name: tensor(dim)
            for name, dim in (
                ("cartesian_position", 6),
                ("cartesian_velocity", 6),
                ("gripper_position", 1),
                ("gripper_velocity", 1),
                ("joint_position", 7),
                ("joint_velocity", 7),
            )
        },
    }
    flat = {
        "is_first": (tfds.features.Scalar(dtype=np.bool_), np.array([True, False])),
        "is_last": (tfds.features.Scalar(dtype=np.bool_), np.array([False, True])),
        "language_instruction": (tfds.features.Text(), ["a", "a"]),
    }
    for group, members in features.items():
        flat[group] = (
            {k: v[0] for k, v in members.items() if f"{group}/{k}" != drop},
            {k: v[1] for k, v in members.items() if f"{group}/{k}" != drop},
        )
    return flat


def test_dataset_missing_a_field_names_features_json(tmp_path):
    version_dir = str(tmp_path / "broken")
    _plain_dataset(version_dir, _droid_step_features(drop="observation/joint_position"))
    with pytest.raises(rlds_read.DataError) as raised:
        list(rlds_read.read_episodes(version_dir))
    assert raised.value.path == f"{version_dir}/features.json"
    assert raised.value.field == "steps/observation/joint_position"
    assert "missing" in str(raised.value)


def test_dataset_with_wrong_dtype_names_field(tmp_path):
    version_dir = str(tmp_path / "broken")
    _plain_dataset(version_dir, _droid_step_features(joint_dtype=np.float32))
    with pytest.raises(
        rlds_read.DataError, match="joint_position: has dtype float32, expected float64"
    ):
        rlds_read.open_dataset(version_dir)
    # Window pipelines check every dataset when they are built, before any thread starts.
    with pytest.raises(rlds_read.DataError, match="joint_position"):
        policy_windows.policy_batches(version_dir, batch_size=1, process_index=0, process_count=1)


def test_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        rlds_read.open_dataset(str(tmp_path))


def test_window_pipeline_reports_the_shard(dataset_copy):
    shard = _shards(dataset_copy)[1]
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    failing = policy_windows.policy_batches(
        dataset_copy, batch_size=2, shuffle_buffer=1, process_index=0, process_count=1
    )
    with pytest.raises(rlds_read.DataError) as raised:
        for _ in range(40):
            next(failing)
    assert raised.value.path == shard

    skipping = policy_windows.policy_batches(
        dataset_copy,
        batch_size=2,
        shuffle_buffer=1,
        skip_corrupt=True,
        process_index=0,
        process_count=1,
    )
    for _ in range(40):
        batch = next(skipping)
        assert np.isfinite(batch["state"]).all()
    assert skipping.read_report.num_skipped >= 2  # the damaged shard's 2 records, per pass


def _record_boundaries(shard: str) -> list[int]:
    """Byte offsets where each TFRecord of `shard` ends (length, crc, payload, crc)."""
    ends, offset = [], 0
    with open(shard, "rb") as f:
        data = f.read()
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 8], "little")
        offset += 8 + 4 + length + 4
        ends.append(offset)
    return ends


@pytest.mark.parametrize("keep_records", [1, 0])
def test_shard_cut_at_a_record_boundary_is_an_error(dataset_copy, keep_records):
    # Cut cleanly after `keep_records` records (0: a 0-byte shard): TFRecord framing sees no
    # damage, only dataset_info.json's shard length tells that episodes are missing.
    shard = _shards(dataset_copy)[1]
    cut = ([0] + _record_boundaries(shard))[keep_records]
    with open(shard, "r+b") as f:
        f.truncate(cut)
    with pytest.raises(rlds_read.DataError) as raised:
        list(rlds_read.read_episodes(dataset_copy))
    message = str(raised.value)
    assert raised.value.path == shard and "\n" not in message
    assert f"holds {keep_records} record(s)" in message and "lists 2" in message
    assert "skip_corrupt" in message  # says what to do

    report = rlds_read.ReadReport()
    episodes = list(rlds_read.read_episodes(dataset_copy, skip_corrupt=True, report=report))
    assert len(episodes) == 4 + keep_records and report.num_skipped == 2 - keep_records
    assert shard in report.problems[0]
    with pytest.raises(rlds_read.DataError, match="holds"):
        rlds_read.summarize(dataset_copy)


def test_shard_with_more_records_than_listed_is_an_error(dataset_copy):
    shard = _shards(dataset_copy)[0]
    with open(shard, "rb") as f:
        records = f.read()
    with open(shard, "ab") as f:
        f.write(records)  # the shard's two records again: valid framing, 4 records
    with pytest.raises(
        rlds_read.DataError, match=r"holds 4 record\(s\), dataset_info.json lists 2"
    ):
        list(rlds_read.read_episodes(dataset_copy))
    report = rlds_read.ReadReport()
    episodes = list(rlds_read.read_episodes(dataset_copy, skip_corrupt=True, report=report))
    # Only the listed records are read; the surplus ones are skipped and counted.
    assert len(episodes) == 6 and report.num_skipped == 2
