"""Write RLDS episodes with tensorflow-datasets alone, in DROID's exact schema.

`write_episodes` streams `Episode`s through `tfds.core.SequentialWriter` into a temp sibling
directory and renames it into place, so a dataset either exists whole or not at all. What it
writes, plain `tfds.builder_from_directory(dataset_dir)` reads, and so does
`vlaw.data.rlds_read` (which holds the layout facts: split, shard lengths, schema checks).

`rewrite_episode_metadata` changes episode-metadata fields of an existing dataset (the `label`
phase's reward_score / kept) losslessly and atomically: each shard's records are re-serialized
with only those features changed (no JPEG is decoded and re-encoded, so no image loses quality)
into a temp sibling directory, which then replaces the dataset by two renames (old -> backup,
temp -> old; the backup is then removed). A crash between the renames leaves the backup
`.<name>.rewrite-backup-*` beside the missing dataset, complete.

Storage facts worth knowing:
- tf.train.Example has no float64 list: TFDS stores DROID's float64 tensors in a float32
  `float_list` (DROID's released files included).
- Images are JPEG, encoded by `encode_jpegs` exactly as TFDS's Image feature would (quality 95).
"""

import glob
import itertools
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from vlaw.data import droid
from vlaw.data.episode import Episode
from vlaw.data.rlds_read import (
    SPLIT,
    DataError,
    iter_shard_records,
    open_dataset,
    shard_length_error,
)
from vlaw.data.tensorflow_cpu import import_tensorflow, import_tfds

VERSION = "1.0.0"

# --------------------------------------------------------------------------------------------
# Schema as TFDS features.


def _feature_connector(field: droid.Field):
    tfds = import_tfds()
    if field.kind == "image":
        return tfds.features.Image(
            shape=field.shape, dtype=np.uint8, encoding_format="jpeg", doc=field.doc or None
        )
    if field.kind == "tensor":
        return tfds.features.Tensor(shape=field.shape, dtype=np.dtype(field.dtype), doc=field.doc)
    if field.kind == "scalar":
        return tfds.features.Scalar(dtype=np.dtype(field.dtype), doc=field.doc or None)
    if field.kind == "text":
        return tfds.features.Text(doc=field.doc or None)
    raise ValueError(f"field {field.path}: unknown kind {field.kind!r}")


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a/b": x, "c": y} -> {"a": {"b": x}, "c": y}."""
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def features_dict(
    image_shape: tuple[int, int, int] = droid.DROID_IMAGE_SHAPE, *, vlaw_metadata: bool = True
):
    """The TFDS `FeaturesDict` of one episode, nested exactly like DROID's released files.

    `{"steps": Dataset({observation: {...}, action_dict: {...}, action, reward, ...}),
      "episode_metadata": {file_path, recording_folderpath[, vlaw's fields]}}`. Built by hand
    rather than with `tfds.rlds.rlds_base.build_info`, which would put episode metadata at the
    top level (droid_rlds.md §2.3 item 4).
    """
    tfds = import_tfds()
    step_features = {f.path: _feature_connector(f) for f in droid.step_fields(image_shape)}
    episode_fields = droid.DROID_EPISODE_FIELDS + (
        droid.VLAW_EPISODE_FIELDS if vlaw_metadata else ()
    )
    episode_features = {f.path: _feature_connector(f) for f in episode_fields}
    return tfds.features.FeaturesDict(
        {
            "steps": tfds.features.Dataset(_nest(step_features)),
            **_nest(episode_features),
        }
    )


# --------------------------------------------------------------------------------------------
# Writing.


def _episode_example(episode: Episode) -> dict[str, Any]:
    """An `Episode` as the nested dict `features_dict()` encodes, with DROID's derived fields."""
    num_steps = episode.num_steps
    meta = episode.metadata
    is_last = np.arange(num_steps) == num_steps - 1
    reward = np.zeros(num_steps, np.float32)
    if meta.success:
        reward[-1] = 1.0  # DROID: 1.0 on the last step of a success, else 0.
    images = {f"observation/{name}" for name in droid.CAMERA_NAMES}
    steps = {
        **{
            # JPEG-encoded here, a camera at a time: one graph call instead of one eager call
            # per image inside TFDS (the same encoder and settings, so the same bytes).
            path: encode_jpegs(value) if path in images else np.asarray(value)
            for path, value in episode.observation.items()
        },
        **{path: np.asarray(value) for path, value in episode.action_dict.items()},
        # DROID's released `action`: commanded cartesian_position ++ gripper_position.
        "action": np.concatenate(
            [
                episode.action_dict["action_dict/cartesian_position"],
                episode.action_dict["action_dict/gripper_position"],
            ],
            axis=-1,
        ).astype(np.float64),
        "reward": reward,
        "discount": np.ones(num_steps, np.float32),
        "is_first": np.arange(num_steps) == 0,
        "is_last": is_last,
        "is_terminal": is_last,  # as in DROID: every episode ends in a terminal step
        "language_instruction": [episode.instruction] * num_steps,
        "language_instruction_2": [""] * num_steps,
        "language_instruction_3": [""] * num_steps,
    }
    metadata = {
        "episode_metadata/file_path": meta.droid_file_path(),
        "episode_metadata/recording_folderpath": meta.recording_folderpath,
        "episode_metadata/success": bool(meta.success),
        "episode_metadata/source": meta.source,
        "episode_metadata/iteration": np.int32(meta.iteration),
        "episode_metadata/task": meta.task,
        "episode_metadata/policy_checkpoint": meta.policy_checkpoint,
        "episode_metadata/reward_score": np.float32(meta.reward_score),
        "episode_metadata/kept": bool(meta.kept),
        "episode_metadata/episode_id": meta.episode_id,
    }
    return {"steps": _nest(steps), **_nest(metadata)}


_ENCODE_JPEGS = None


def encode_jpegs(images: np.ndarray) -> list[bytes]:
    """(N, H, W, 3) uint8 -> N JPEG byte strings, as TFDS's Image feature encodes them
    (`tf.image.encode_jpeg` with its defaults: quality 95, 4:2:0 chroma subsampling)."""
    global _ENCODE_JPEGS
    tf = import_tensorflow()
    if _ENCODE_JPEGS is None:

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        def encode(batch):
            return tf.map_fn(tf.image.encode_jpeg, batch, fn_output_signature=tf.string)

        _ENCODE_JPEGS = encode
    if len(images) == 0:
        return []
    return list(_ENCODE_JPEGS(np.ascontiguousarray(images, np.uint8)).numpy())


def _validate_for_writing(
    episode: Episode, image_shape: tuple[int, int, int] | None, where: str
) -> None:
    if not isinstance(episode, Episode):
        raise TypeError(f"{where}: expected an Episode, got {type(episode).__name__}")
    episode.validate(where)
    if image_shape is not None and episode.image_shape != image_shape:
        raise ValueError(
            f"{where}: field observation/{droid.CAMERA_NAMES[0]} has image shape "
            f"{episode.image_shape}, but this dataset's first episode set {image_shape}"
        )
    if not isinstance(episode.instruction, str):
        raise ValueError(f"{where}: field language_instruction must be a str")
    for name in ("source", "task", "policy_checkpoint", "episode_id", "recording_folderpath"):
        if not isinstance(getattr(episode.metadata, name), str):
            raise ValueError(f"{where}: field episode_metadata/{name} must be a str")


def write_episodes(
    dataset_dir: str,
    episodes: Iterable[Episode],
    *,
    name: str = "vlaw",
    episodes_per_shard: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
    """Writes `episodes` as one RLDS dataset (TFDS version directory) at `dataset_dir`.

    Streams: one episode is held at a time. Atomic: files go to a temp sibling directory that
    is renamed to `dataset_dir` once complete; on any error it is removed and nothing appears.
    Refuses to overwrite an existing `dataset_dir`, and an empty `episodes` (plain TFDS cannot
    read a dataset without shards). Local paths only (a rename on gs:// is not atomic): write
    locally, then copy.

    Returns:
      {"dataset_dir", "name", "num_episodes", "num_steps", "num_successes", "num_shards"}.
    """
    if "://" in dataset_dir:
        raise ValueError(f"{dataset_dir}: write_episodes writes local paths only; copy after")
    if episodes_per_shard < 1:
        raise ValueError(f"episodes_per_shard must be >= 1, got {episodes_per_shard}")
    dataset_dir = os.path.abspath(dataset_dir)
    if os.path.exists(dataset_dir):
        raise FileExistsError(
            f"{dataset_dir} already exists; RLDS datasets are written once (pick a new path "
            "or remove the old dataset)"
        )
    parent = os.path.dirname(dataset_dir)
    os.makedirs(parent, exist_ok=True)
    # A writer killed outright (SIGKILL, a preempted VM) had no chance to remove its temp
    # sibling; the dataset does not exist yet and the run directory's lock keeps a second
    # writer out, so what is there is a dead writer's: clear it.
    prefix = f".{os.path.basename(dataset_dir)}.tmp-"
    for leftover in glob.glob(os.path.join(parent, glob.escape(prefix) + "*")):
        shutil.rmtree(leftover, ignore_errors=True)
    temp_dir = os.path.join(parent, f"{prefix}{uuid.uuid4().hex}")
    os.makedirs(temp_dir)
    try:
        summary = _write_into(temp_dir, episodes, name, episodes_per_shard, progress)
        # A rename within one filesystem is atomic; it fails if `dataset_dir` appeared (and is
        # not empty) in the meantime, which we then report instead of overwriting.
        os.rename(temp_dir, dataset_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return {"dataset_dir": dataset_dir, **summary}


def _write_into(
    version_dir: str,
    episodes: Iterable[Episode],
    name: str,
    episodes_per_shard: int,
    progress: bool,
) -> dict[str, Any]:
    from tqdm import tqdm

    tfds = import_tfds()
    total = len(episodes) if hasattr(episodes, "__len__") else None
    episode_iter = iter(episodes)
    first = next(episode_iter, None)
    if first is None:
        raise ValueError(f"{version_dir}: no episodes to write")
    _validate_for_writing(first, None, "episode 0")
    image_shape = first.image_shape
    info = tfds.core.DatasetInfo(
        builder=tfds.core.dataset_info.DatasetIdentity(
            name=name, version=tfds.core.Version(VERSION), data_dir=version_dir, module_name=""
        ),
        description="vlaw episodes in DROID's RLDS schema plus vlaw's episode metadata.",
        features=features_dict(image_shape, vlaw_metadata=True),
    )
    writer = tfds.core.SequentialWriter(info, max_examples_per_shard=episodes_per_shard)
    writer.initialize_splits([SPLIT], fail_if_exists=True)
    num_episodes = num_steps = num_successes = 0
    with tqdm(
        total=total, unit="episode", desc=f"writing {name}", disable=not progress
    ) as progress_bar:
        for index, episode in enumerate(itertools.chain([first], episode_iter)):
            where = f"episode {index} (episode_id={episode.metadata.episode_id!r})"
            if index:
                _validate_for_writing(episode, image_shape, where)
            # One episode per call: the writer encodes and appends it at once (streaming).
            writer.add_examples({SPLIT: [_episode_example(episode)]})
            num_episodes += 1
            num_steps += episode.num_steps
            num_successes += bool(episode.metadata.success)
            progress_bar.update(1)
            progress_bar.set_postfix(steps=num_steps, refresh=False)
    writer.close_all()
    return {
        "name": name,
        "num_episodes": num_episodes,
        "num_steps": num_steps,
        "num_successes": num_successes,
        "num_shards": math.ceil(num_episodes / episodes_per_shard),
    }


# --------------------------------------------------------------------------------------------
# Rewriting episode metadata in place.


def _set_feature(feature, kind: str, dtype: str, value: Any) -> None:
    """Replaces the single value of one episode-level feature, in its stored encoding."""
    if kind == "text":
        feature.bytes_list.value[:] = [str(value).encode("utf-8")]
    elif dtype.startswith("float"):
        feature.float_list.value[:] = [float(value)]
    else:  # bool and integer features are int64 lists
        feature.int64_list.value[:] = [int(value)]


def rewrite_episode_metadata(
    dataset_dir: str, updates: Mapping[tuple[str, int], Mapping[str, Any]]
) -> None:
    """Rewrites `dataset_dir` with some episode-metadata fields of every episode changed,
    losslessly and atomically (see the module docstring). Local paths only.

    Args:
      dataset_dir: a vlaw RLDS dataset (TFDS version directory).
      updates: (shard path as in `open_dataset(dataset_dir).shard_paths`, record index) ->
        {flattened field name (e.g. "episode_metadata/reward_score"): new value}. It must
        cover every record of the dataset: a rewrite leaves no episode behind unnoticed.

    Raises:
      DataError when a field is not an episode field of this dataset, or a shard's record
      count differs from dataset_info.json's; KeyError when a record has no update.
    """
    tf = import_tensorflow()
    layout = open_dataset(dataset_dir)
    fields = {name for update in updates.values() for name in update}
    for name in sorted(fields):
        spec = layout.fields.get(name)
        if spec is None or spec.per_step:
            raise DataError(
                f"{layout.dataset_dir}/features.json", name, "not an episode field of this dataset"
            )
    dataset_dir = os.path.abspath(layout.dataset_dir)
    parent, name = os.path.split(dataset_dir)
    temp_dir = os.path.join(parent, f".{name}.rewrite-tmp-{uuid.uuid4().hex}")
    backup_dir = os.path.join(parent, f".{name}.rewrite-backup-{uuid.uuid4().hex}")
    shard_names = {os.path.basename(p) for p in layout.shard_paths}
    os.makedirs(temp_dir)
    try:
        for entry in os.listdir(dataset_dir):
            if entry not in shard_names:
                shutil.copy2(os.path.join(dataset_dir, entry), os.path.join(temp_dir, entry))
        written = 0
        for shard_path, expected in zip(layout.shard_paths, layout.shard_lengths, strict=True):
            target = os.path.join(temp_dir, os.path.basename(shard_path))
            count = 0
            with tf.io.TFRecordWriter(target) as writer:
                for serialized in iter_shard_records(shard_path):
                    key = (shard_path, count)
                    if key not in updates:
                        raise KeyError(f"{shard_path} record {count}: no update for it")
                    example = tf.train.Example.FromString(serialized)
                    for field, value in updates[key].items():
                        spec = layout.fields[field]
                        _set_feature(example.features.feature[field], spec.kind, spec.dtype, value)
                    writer.write(example.SerializeToString())
                    count += 1
            if count != expected:
                raise shard_length_error(shard_path, expected, count)
            written += count
        if written != len(updates):
            raise ValueError(f"{dataset_dir}: {written} records rewritten, {len(updates)} updates")
        os.rename(dataset_dir, backup_dir)
        os.rename(temp_dir, dataset_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    shutil.rmtree(backup_dir)
