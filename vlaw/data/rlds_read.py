"""Read RLDS episodes with tensorflow-datasets alone, in DROID's exact schema.

RLDS is a TFDS layout: one TFRecord record (a `tf.train.Example`) per episode, holding a nested
`steps` sequence and an `episode_metadata` dict, described by `features.json` and
`dataset_info.json` in the same directory (shared/research/droid_rlds.md §2). The `rlds`
package is not used: it cannot be imported next to TensorFlow 2.21 (BUILD.md). The writer is
`vlaw.data.rlds_write`.

`read_episodes` parses the records itself (protobuf + numpy) instead of going through
`builder.as_dataset`, so that every problem names the shard file, the record and the field,
and `skip_corrupt=True` can skip a bad record and count it. Each shard must hold exactly the
number of records `dataset_info.json` lists for it: a shard cut short at a record boundary (or
to 0 bytes) has intact framing, and only that count tells that episodes are missing. The same
reader takes real DROID shards (`r2d2_faceblur`, `droid_101`), which lack vlaw's metadata:
success then comes from the `/success/` segment of `episode_metadata/file_path`, as in DROID's
own convention.

Storage facts worth knowing:
- tf.train.Example has no float64 list: TFDS stores DROID's float64 tensors in a float32
  `float_list` (DROID's released files included). Values round-trip exactly only when they are
  float32-representable; the reader returns float64 arrays holding those float32 values.
- Images are JPEG (lossy, TFDS's encoder at quality 95): expect a few grey levels of error.
"""

import dataclasses
import logging
import math
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vlaw.data import droid
from vlaw.data.episode import Episode, EpisodeMetadata
from vlaw.data.tensorflow_cpu import import_tensorflow, import_tfds

SPLIT = "train"
STEPS = "steps/"

# Fields a dataset must have for vlaw to read it; everything else in the schema is optional
# (DROID's pre-release files lack some, ours add metadata) but type-checked when present.
_REQUIRED_STEP_PATHS = (
    *(f"observation/{name}" for name in droid.CAMERA_NAMES),
    *(field.path for field in droid.OBSERVATION_STATE_FIELDS),
    *(field.path for field in droid.ACTION_DICT_FIELDS),
    "language_instruction",
    "is_first",
    "is_last",
)
_REQUIRED_EPISODE_PATHS = ("episode_metadata/file_path",)


class DataError(ValueError):
    """A dataset problem, located: `path` is the file (shard or features.json), `field` the
    flattened feature name (e.g. "steps/observation/joint_position")."""

    def __init__(self, path: str, field: str, problem: str, record_index: int | None = None):
        self.path = path
        self.field = field
        self.record_index = record_index
        where = f"{path}" if record_index is None else f"{path} (record {record_index})"
        super().__init__(f"{where}: field {field}: {problem}")


@dataclasses.dataclass
class ReadReport:
    """What a reader skipped (`skip_corrupt=True`): the count and the first few reasons."""

    num_skipped: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    max_problems: int = 20
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def record_skip(self, error: Exception, count: int = 1) -> None:
        # Window pipelines read shards from several tf.data threads into one report.
        with self._lock:
            self.num_skipped += count
            if len(self.problems) < self.max_problems:
                self.problems.append(str(error))
        logging.warning("skipping %d corrupt record(s): %s", count, error)


# Reading.


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One stored feature as the reader needs it: where it lives and how it is encoded."""

    path: str  # flattened, e.g. "steps/observation/joint_position"
    kind: str  # droid.Field kinds: image | tensor | scalar | text
    dtype: str
    shape: tuple[int, ...]

    @property
    def per_step(self) -> bool:
        return self.path.startswith(STEPS)

    @property
    def values_per_item(self) -> int:
        return int(np.prod(self.shape)) if self.kind in ("tensor", "scalar") else 1


@dataclasses.dataclass(frozen=True)
class DatasetLayout:
    """An RLDS dataset directory, checked against the schema (`open_dataset`)."""

    dataset_dir: str
    name: str
    shard_paths: tuple[str, ...]
    shard_lengths: tuple[int, ...]  # episodes per shard, from dataset_info.json
    image_shape: tuple[int, int, int]
    fields: dict[str, FieldSpec]  # the schema fields this dataset stores, by flattened path

    @property
    def num_episodes(self) -> int:
        return sum(self.shard_lengths)

    @property
    def has_vlaw_metadata(self) -> bool:
        return "episode_metadata/success" in self.fields


def _flatten_features(feature, prefix: str = "") -> dict[str, Any]:
    tfds = import_tfds()
    if isinstance(feature, tfds.features.FeaturesDict):
        flat = {}
        for key, sub_feature in feature.items():
            flat.update(_flatten_features(sub_feature, f"{prefix}{key}/"))
        return flat
    if isinstance(feature, tfds.features.Sequence):  # tfds.features.Dataset is one
        return _flatten_features(feature.feature, prefix)
    return {prefix.rstrip("/"): feature}


def _expected_fields(image_shape: tuple[int, int, int]) -> dict[str, droid.Field]:
    return {
        **{STEPS + f.path: f for f in droid.step_fields(image_shape)},
        **{f.path: f for f in droid.DROID_EPISODE_FIELDS + droid.VLAW_EPISODE_FIELDS},
    }


def _check_connector(stored, field: droid.Field, features_path: str, path: str) -> FieldSpec:
    """Compares a stored TFDS feature with the schema's `field`; raises DataError if it differs."""
    tfds = import_tfds()
    if field.kind == "image":
        ok = isinstance(stored, tfds.features.Image)
        shape_ok = ok and len(stored.shape) == 3 and stored.shape[-1] == 3
        dtype = np.dtype(stored.np_dtype).name if ok else type(stored).__name__
        if not (ok and shape_ok and dtype == "uint8"):
            raise DataError(
                features_path,
                path,
                f"stored as {stored!r}, expected a uint8 RGB Image {field.shape}",
            )
        return FieldSpec(path, "image", "uint8", tuple(stored.shape))
    if field.kind == "text":
        if not isinstance(stored, tfds.features.Text):
            raise DataError(features_path, path, f"stored as {stored!r}, expected Text")
        return FieldSpec(path, "text", "string", ())
    if not isinstance(stored, tfds.features.Tensor) or isinstance(stored, tfds.features.Text):
        raise DataError(features_path, path, f"stored as {stored!r}, expected a Tensor")
    dtype = np.dtype(stored.np_dtype).name
    if dtype != field.dtype:
        raise DataError(features_path, path, f"has dtype {dtype}, expected {field.dtype}")
    if tuple(stored.shape) != tuple(field.shape):
        raise DataError(
            features_path, path, f"has shape {tuple(stored.shape)}, expected {field.shape}"
        )
    return FieldSpec(path, field.kind, field.dtype, tuple(field.shape))


def open_dataset(dataset_dir: str) -> DatasetLayout:
    """Reads `dataset_info.json` + `features.json` of a TFDS version directory (local or gs://)
    and checks its features against DROID's schema (plus vlaw's optional metadata).

    Raises FileNotFoundError when there is no dataset, DataError naming features.json and the
    field when a required field is missing or has the wrong dtype or shape.
    """
    tf = import_tensorflow()
    tfds = import_tfds()
    dataset_dir = str(dataset_dir).rstrip("/")
    info_path = f"{dataset_dir}/dataset_info.json"
    features_path = f"{dataset_dir}/features.json"
    if not tf.io.gfile.exists(info_path):
        raise FileNotFoundError(
            f"{dataset_dir}: no dataset_info.json; pass the TFDS version directory (the one "
            "holding dataset_info.json and features.json, e.g. .../droid/1.0.1)"
        )
    try:
        builder = tfds.builder_from_directory(dataset_dir)
    except Exception as error:  # malformed JSON, unknown feature classes, ...
        raise DataError(features_path, "(features)", f"cannot be loaded: {error}") from error
    if SPLIT not in builder.info.splits:
        raise DataError(info_path, "(splits)", f"has no {SPLIT!r} split")
    stored = _flatten_features(builder.info.features)
    first_camera = f"{STEPS}observation/{droid.CAMERA_NAMES[0]}"
    if first_camera not in stored:
        raise DataError(features_path, first_camera, "missing")
    image_shape = tuple(getattr(stored[first_camera], "shape", ()) or ())
    if len(image_shape) != 3:
        raise DataError(features_path, first_camera, f"is {stored[first_camera]!r}, not an image")
    required = {STEPS + p for p in _REQUIRED_STEP_PATHS} | set(_REQUIRED_EPISODE_PATHS)
    fields = {}
    for path, field in _expected_fields(image_shape).items():
        if path not in stored:
            if path in required:
                raise DataError(features_path, path, "missing")
            continue
        fields[path] = _check_connector(stored[path], field, features_path, path)
    split = builder.info.splits[SPLIT]
    return DatasetLayout(
        dataset_dir=dataset_dir,
        name=builder.info.name,
        shard_paths=tuple(str(p) for p in split.filepaths),
        shard_lengths=tuple(int(n) for n in split.shard_lengths),
        image_shape=image_shape,
        fields=fields,
    )


# An undecoded episode: flattened feature path -> numpy ((T, ...) for "steps/..." fields, a
# scalar for episode fields; images and text as object arrays of bytes), plus "num_steps",
# and "shard_path" / "record_index" saying where it came from.
RawEpisode = dict[str, Any]
_PROTO_KIND = {"image": "bytes_list", "text": "bytes_list"}


def _proto_kind(spec: FieldSpec) -> str:
    if spec.kind in _PROTO_KIND:
        return _PROTO_KIND[spec.kind]
    return "float_list" if spec.dtype.startswith("float") else "int64_list"


def parse_record(serialized: bytes, layout: DatasetLayout, shard_path: str, index: int):
    """One serialized episode -> RawEpisode, images left as JPEG bytes (object arrays (T,)).

    Raises DataError naming the shard, the record index and the field.
    """
    tf = import_tensorflow()
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception as error:
        raise DataError(shard_path, "(record)", f"not a tf.train.Example: {error}", index) from None
    feature_map = example.features.feature
    first_key = STEPS + "is_first"
    if first_key not in feature_map:
        raise DataError(shard_path, first_key, "missing", index)
    num_steps = len(feature_map[first_key].int64_list.value)
    raw: RawEpisode = {"num_steps": num_steps}
    for path, spec in layout.fields.items():
        if path not in feature_map:
            raise DataError(shard_path, path, "missing from the record", index)
        feature = feature_map[path]
        kind = feature.WhichOneof("kind")
        want = _proto_kind(spec)
        count = num_steps if spec.per_step else 1
        if kind is None and count == 0:
            kind = want  # an empty list carries no kind
        if kind != want:
            raise DataError(
                shard_path, path, f"stored as {kind}, expected {want} ({spec.dtype})", index
            )
        values = getattr(feature, kind).value
        if len(values) != count * spec.values_per_item:
            raise DataError(
                shard_path,
                path,
                f"has {len(values)} values, expected {count} x {spec.shape or '()'} "
                f"({num_steps} steps)",
                index,
            )
        if kind == "bytes_list":
            array = np.empty(len(values), dtype=object)
            array[:] = list(values)
        elif kind == "float_list":
            array = np.asarray(values, dtype=np.float32).astype(spec.dtype)
        else:
            array = np.asarray(values, dtype=np.int64).astype(spec.dtype)
        item_shape = spec.shape if kind != "bytes_list" else ()  # one JPEG or str per item
        if spec.per_step:
            array = array.reshape(num_steps, *item_shape)
        else:
            array = array.reshape(item_shape)[()]
        raw[path] = array
    return raw


def iter_shard_records(shard_path: str) -> Iterator[bytes]:
    """The serialized records of one TFRecord shard, in file order. Damaged framing (a bad
    length or checksum, a record cut in the middle) raises `tf.errors.OpError` when reached."""
    tf = import_tensorflow()
    # tf_record_iterator is deprecated in favour of tf.data, but it is a plain C++ reader with
    # no tf.data threads, which matters when it runs inside tf.data's own from_generator.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        records = tf.compat.v1.io.tf_record_iterator(shard_path)
    finally:
        logger.setLevel(level)
    yield from records


def shard_length_error(shard_path: str, expected: int, found: int) -> DataError:
    """The error for a shard whose record count differs from dataset_info.json's."""
    return DataError(
        shard_path,
        "(record count)",
        f"holds {found} record(s), dataset_info.json lists {expected}: the shard was cut short "
        "or replaced; restore it from the original copy or rewrite the dataset (or read with "
        "skip_corrupt=True to skip the missing episodes)",
    )


def iter_raw_episodes(
    layout: DatasetLayout,
    shard_paths: Sequence[str] | None = None,
    *,
    skip_corrupt: bool = False,
    report: ReadReport | None = None,
) -> Iterator[RawEpisode]:
    """Raw (undecoded) episodes of `shard_paths` (default: all of `layout`'s), in file order.

    A corrupt or truncated shard stops that shard: TFRecord framing cannot be re-synchronised
    past a bad length or checksum. With `skip_corrupt` the remaining records of that shard
    (known from dataset_info.json's shard lengths) are counted as skipped.

    A shard must hold exactly the records dataset_info.json lists for it. One that ends cleanly
    but early (cut at a record boundary, or 0 bytes) or holds more raises `DataError` once it
    is read to its end; with `skip_corrupt` the missing records, or the surplus ones (never
    parsed nor yielded), are counted as skipped instead.
    """
    tf = import_tensorflow()
    report = report if report is not None else ReadReport()
    lengths = dict(zip(layout.shard_paths, layout.shard_lengths, strict=True))
    for shard_path in layout.shard_paths if shard_paths is None else shard_paths:
        expected = lengths.get(shard_path)
        index = 0
        try:
            for serialized in iter_shard_records(shard_path):
                if expected is not None and index >= expected:
                    index += 1  # a surplus record: only counted, for the error below
                    continue
                try:
                    raw = parse_record(serialized, layout, shard_path, index)
                except DataError as error:
                    if not skip_corrupt:
                        raise
                    report.record_skip(error)
                else:
                    raw["shard_path"] = shard_path
                    raw["record_index"] = index
                    yield raw
                index += 1
        except tf.errors.OpError as op_error:
            error = DataError(
                shard_path, "(tfrecord)", f"unreadable: {op_error.message}", record_index=index
            )
            if not skip_corrupt:
                raise error from None
            report.record_skip(error, count=max(1, (expected or 0) - index))
            continue
        if expected is not None and index != expected:
            error = shard_length_error(shard_path, expected, index)
            if not skip_corrupt:
                raise error
            report.record_skip(error, count=abs(index - expected))


def _decode_images_fn():
    tf = import_tensorflow()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode(encoded):
        return tf.map_fn(
            lambda image: tf.io.decode_image(image, channels=3, expand_animations=False),
            encoded,
            fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
        )

    return decode


_DECODE_IMAGES = None


def decode_images(encoded: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """JPEG/PNG bytes (N,) -> (N, H, W, 3) uint8; raises ValueError if not of `shape`."""
    global _DECODE_IMAGES
    if _DECODE_IMAGES is None:
        _DECODE_IMAGES = _decode_images_fn()
    if len(encoded) == 0:
        return np.zeros((0, *shape), np.uint8)
    images = _DECODE_IMAGES(encoded.astype(bytes)).numpy()
    if images.shape[1:] != tuple(shape):
        raise ValueError(f"decoded images of shape {images.shape[1:]}, expected {shape}")
    return images


def metadata_from_raw(raw: RawEpisode) -> EpisodeMetadata:
    """vlaw's metadata when stored; for DROID's own files, derived from `file_path`."""
    text = lambda path: raw[path].decode("utf-8") if path in raw else ""
    file_path = text("episode_metadata/file_path")
    if "episode_metadata/success" not in raw:
        return EpisodeMetadata(
            success=droid.success_from_file_path(file_path),
            source="droid",
            task="",
            file_path=file_path,
            recording_folderpath=text("episode_metadata/recording_folderpath"),
        )
    return EpisodeMetadata(
        success=bool(raw["episode_metadata/success"]),
        source=text("episode_metadata/source") or "real",
        task=text("episode_metadata/task"),
        iteration=int(raw.get("episode_metadata/iteration", 0)),
        policy_checkpoint=text("episode_metadata/policy_checkpoint"),
        reward_score=float(raw.get("episode_metadata/reward_score", math.nan)),
        kept=bool(raw.get("episode_metadata/kept", False)),
        episode_id=text("episode_metadata/episode_id"),
        file_path=file_path,
        recording_folderpath=text("episode_metadata/recording_folderpath"),
    )


def instruction_from_raw(raw: RawEpisode) -> str:
    """The episode's instruction (DROID repeats it on every step)."""
    instructions = raw[STEPS + "language_instruction"]
    return instructions[0].decode("utf-8") if len(instructions) else ""


def episode_from_raw(raw: RawEpisode, layout: DatasetLayout) -> Episode:
    """Decodes the images of a RawEpisode; raises DataError on an undecodable image."""
    observation = {}
    for name in droid.CAMERA_NAMES:
        path = f"{STEPS}observation/{name}"
        try:
            observation[f"observation/{name}"] = decode_images(raw[path], layout.image_shape)
        except Exception as error:
            raise DataError(raw["shard_path"], path, str(error), raw["record_index"]) from None
    for field in droid.OBSERVATION_STATE_FIELDS:
        observation[field.path] = raw[STEPS + field.path]
    action_dict = {field.path: raw[STEPS + field.path] for field in droid.ACTION_DICT_FIELDS}
    return Episode(
        instruction=instruction_from_raw(raw),
        observation=observation,
        action_dict=action_dict,
        metadata=metadata_from_raw(raw),
    )


def _as_dirs(dataset_dir_or_dirs: str | os.PathLike | Sequence[str]) -> list[str]:
    if isinstance(dataset_dir_or_dirs, str | os.PathLike):
        return [os.fspath(dataset_dir_or_dirs)]
    return [os.fspath(d) for d in dataset_dir_or_dirs]


def read_episodes(
    dataset_dir_or_dirs: str | Sequence[str],
    *,
    skip_corrupt: bool = False,
    report: ReadReport | None = None,
) -> Iterator[Episode]:
    """Yields every episode of one or several RLDS datasets (vlaw's or DROID's), as numpy.

    Args:
      dataset_dir_or_dirs: TFDS version directories, local or gs://.
      skip_corrupt: skip unreadable records instead of raising; they are counted in `report`.
      report: a ReadReport to fill (`report.num_skipped`), e.g. to log after reading.

    Raises:
      DataError naming the file (shard or features.json) and the field.
    """
    report = report if report is not None else ReadReport()
    for dataset_dir in _as_dirs(dataset_dir_or_dirs):
        layout = open_dataset(dataset_dir)
        for raw in iter_raw_episodes(layout, skip_corrupt=skip_corrupt, report=report):
            try:
                yield episode_from_raw(raw, layout)
            except DataError as error:
                if not skip_corrupt:
                    raise
                report.record_skip(error)


def summarize(
    dataset_dir_or_dirs: str | Sequence[str], *, skip_corrupt: bool = False
) -> dict[str, Any]:
    """Counts episodes, steps and successes by reading every record (images stay encoded).

    Returns {"num_episodes", "num_steps", "num_successes", "num_shards", "num_skipped"}.
    """
    report = ReadReport()
    totals = {"num_episodes": 0, "num_steps": 0, "num_successes": 0, "num_shards": 0}
    for dataset_dir in _as_dirs(dataset_dir_or_dirs):
        layout = open_dataset(dataset_dir)
        totals["num_shards"] += len(layout.shard_paths)
        for raw in iter_raw_episodes(layout, skip_corrupt=skip_corrupt, report=report):
            totals["num_episodes"] += 1
            totals["num_steps"] += raw["num_steps"]
            totals["num_successes"] += metadata_from_raw(raw).success
    return {**totals, "num_skipped": report.num_skipped}


def episode_lengths(
    dataset_dir_or_dirs: str | Sequence[str], *, skip_corrupt: bool = False
) -> list[int]:
    """Steps of every episode, in read order (records parsed, no image decoded)."""
    return [
        int(raw["num_steps"])
        for dataset_dir in _as_dirs(dataset_dir_or_dirs)
        for raw in iter_raw_episodes(open_dataset(dataset_dir), skip_corrupt=skip_corrupt)
    ]


def count_episodes(dataset_dir_or_dirs: str | Sequence[str]) -> int:
    """Episodes listed in dataset_info.json (no record is read)."""
    return sum(open_dataset(d).num_episodes for d in _as_dirs(dataset_dir_or_dirs))
