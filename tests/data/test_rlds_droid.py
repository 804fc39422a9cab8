"""vlaw reads a dataset written here by plain TFDS with DROID's exact released feature spec."""

import os

import numpy as np
import pytest

from vlaw.data import policy_windows, rlds_read
from vlaw.data.tensorflow_cpu import import_tfds

DROID_NUM_STEPS = (4, 3, 5)
FILE_PATHS = (
    "gs://r2d2-data/lab/ILIAD/success/2023-07-24/Mon_Jul_24_17:19:23_2023/trajectory.h5",
    "gs://r2d2-data/lab/ILIAD/failure/2023-07-25/Tue_Jul_25_10:01:02_2023/trajectory.h5",
    "gs://r2d2-data/lab/AUTOLab/success/2023-08-01/Tue_Aug__1_09:00:00_2023/trajectory.h5",
)


def droid_features(tfds):
    """DROID 1.0.x's FeaturesDict, typed from the release (droid_rlds.md §1.4), not from vlaw."""
    image = lambda: tfds.features.Image(shape=(180, 320, 3), dtype=np.uint8, encoding_format="jpeg")
    tensor = lambda dim: tfds.features.Tensor(shape=(dim,), dtype=np.float64)
    return tfds.features.FeaturesDict(
        {
            "steps": tfds.features.Dataset(
                {
                    "observation": {
                        "exterior_image_1_left": image(),
                        "exterior_image_2_left": image(),
                        "wrist_image_left": image(),
                        "cartesian_position": tensor(6),
                        "joint_position": tensor(7),
                        "gripper_position": tensor(1),
                    },
                    "action_dict": {
                        "cartesian_position": tensor(6),
                        "cartesian_velocity": tensor(6),
                        "gripper_position": tensor(1),
                        "gripper_velocity": tensor(1),
                        "joint_position": tensor(7),
                        "joint_velocity": tensor(7),
                    },
                    "action": tensor(7),
                    "discount": tfds.features.Scalar(dtype=np.float32),
                    "reward": tfds.features.Scalar(dtype=np.float32),
                    "is_first": tfds.features.Scalar(dtype=np.bool_),
                    "is_last": tfds.features.Scalar(dtype=np.bool_),
                    "is_terminal": tfds.features.Scalar(dtype=np.bool_),
                    "language_instruction": tfds.features.Text(),
                    "language_instruction_2": tfds.features.Text(),
                    "language_instruction_3": tfds.features.Text(),
                }
            ),
            "episode_metadata": {
                "file_path": tfds.features.Text(),
                "recording_folderpath": tfds.features.Text(),
            },
        }
    )


def droid_episode(rng, num_steps: int, file_path: str, instruction: str) -> dict:
    vec = lambda dim: rng.uniform(-1, 1, (num_steps, dim)).astype(np.float32).astype(np.float64)
    image = lambda: np.broadcast_to(
        rng.integers(0, 256, (1, 1, 1, 3), dtype=np.uint8), (num_steps, 180, 320, 3)
    ).copy()  # flat colours: JPEG keeps them almost exactly
    action_dict = {
        "cartesian_position": vec(6),
        "cartesian_velocity": vec(6),
        "gripper_position": vec(1),
        "gripper_velocity": vec(1),
        "joint_position": vec(7),
        "joint_velocity": vec(7),
    }
    success = "/success/" in file_path
    last = np.arange(num_steps) == num_steps - 1
    return {
        "steps": {
            "observation": {
                "exterior_image_1_left": image(),
                "exterior_image_2_left": image(),
                "wrist_image_left": image(),
                "cartesian_position": vec(6),
                "joint_position": vec(7),
                "gripper_position": vec(1),
            },
            "action_dict": action_dict,
            "action": np.concatenate(
                [action_dict["cartesian_position"], action_dict["gripper_position"]], -1
            ),
            "discount": np.ones(num_steps, np.float32),
            "reward": (last & success).astype(np.float32),
            "is_first": np.arange(num_steps) == 0,
            "is_last": last,
            "is_terminal": last,
            "language_instruction": [instruction] * num_steps,
            "language_instruction_2": [""] * num_steps,
            "language_instruction_3": [""] * num_steps,
        },
        "episode_metadata": {
            "file_path": file_path,
            "recording_folderpath": os.path.dirname(file_path) + "/recordings/MP4",
        },
    }


def write_plain_tfds(version_dir: str, episodes: list[dict], name: str, features=None) -> None:
    """The SequentialWriter recipe of droid_rlds.md §2.3, with no vlaw code involved."""
    tfds = import_tfds()
    os.makedirs(version_dir)
    info = tfds.core.DatasetInfo(
        builder=tfds.core.dataset_info.DatasetIdentity(
            name=name, version=tfds.core.Version("1.0.0"), data_dir=version_dir, module_name=""
        ),
        features=features if features is not None else droid_features(tfds),
    )
    writer = tfds.core.SequentialWriter(info, max_examples_per_shard=2)
    writer.initialize_splits(["train"], fail_if_exists=True)
    writer.add_examples({"train": episodes})
    writer.close_all()


@pytest.fixture(scope="module")
def droid_dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    episodes = [
        droid_episode(rng, n, path, instruction)
        for n, path, instruction in zip(
            DROID_NUM_STEPS, FILE_PATHS, ("put the marker in the cup", "", "close the drawer")
        )
    ]
    version_dir = str(tmp_path_factory.mktemp("droid") / "r2d2_faceblur" / "1.0.0")
    write_plain_tfds(version_dir, episodes, "r2d2_faceblur")
    return version_dir, episodes


def test_shard_names_follow_droid(droid_dataset):
    version_dir, _ = droid_dataset
    layout = rlds_read.open_dataset(version_dir)
    assert layout.name == "r2d2_faceblur" and not layout.has_vlaw_metadata
    assert all("r2d2_faceblur-train.tfrecord-" in p for p in layout.shard_paths)
    assert layout.image_shape == (180, 320, 3)


def test_vlaw_reads_droid(droid_dataset):
    version_dir, written = droid_dataset
    read = list(rlds_read.read_episodes(version_dir))
    assert [e.num_steps for e in read] == list(DROID_NUM_STEPS)
    assert [e.metadata.success for e in read] == [True, False, True]
    for episode, source in zip(read, written, strict=True):
        assert episode.metadata.source == "droid" and episode.metadata.task == ""
        assert episode.metadata.file_path == source["episode_metadata"]["file_path"]
        assert episode.instruction == source["steps"]["language_instruction"][0]
        for group in ("observation", "action_dict"):
            arrays = episode.observation if group == "observation" else episode.action_dict
            for name, value in source["steps"][group].items():
                if "image" in name:
                    assert arrays[f"{group}/{name}"].shape == value.shape
                    assert np.abs(arrays[f"{group}/{name}"].astype(int) - value).max() <= 2
                else:
                    np.testing.assert_array_equal(arrays[f"{group}/{name}"], value)
        episode.validate()  # a DROID episode is a valid vlaw Episode
    assert rlds_read.summarize(version_dir)["num_successes"] == 2


def test_droid_feeds_the_policy_pipeline(droid_dataset):
    version_dir, _ = droid_dataset
    batches = policy_windows.policy_batches(
        version_dir, batch_size=4, process_index=0, process_count=1, image_size=(90, 160)
    )
    batch = next(batches)
    assert batch["images"].shape == (4, 3, 90, 160, 3)
    assert set(batch["weight"].tolist()) <= {0.0, 1.0}
