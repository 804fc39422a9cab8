"""The resumable tf.data engine that turns RLDS episodes into batches of training windows.

A model's window builder (`world_model_windows`, `policy_windows`, `reward_windows`, beside
this module) says which `Column`s a window has and how one raw episode becomes a block of
windows (a `BlockBuilder`); `window_batches` does the rest and returns a `WindowBatches`, a
`BatchIterator` (vlaw/data/batches.py) yielding dicts of numpy arrays holding this host's
`batch_size` examples.

How a pipeline runs, and why:
1. Shards: every source's shard files are sorted and dealt to hosts round-robin
   (`shard_index % process_count == process_index`); each host then visits its own shards in
   a fresh seeded order every epoch, forever.
2. Episodes are parsed by `vlaw.data.rlds_read` in Python (inside `from_generator`, up to
   `num_parallel_reads` shards at once): that is what lets an error name the shard and the
   field, and `skip_corrupt` count what it skipped. Window *indices* are computed per episode
   with the numpy helpers of `vlaw.data.transforms`; images stay JPEG bytes.
3. Windows of all sources are mixed (`vlaw.data.mixture`, Eq. 2), shuffled in a seeded buffer
   and batched. Only then are the JPEGs decoded, in parallel.
4. Exact resume: the pipeline is deterministic given its seed, so a position is just the
   number of batches consumed. `restore` rebuilds the pipeline and skips that many batches
   *before* the JPEG decoding (the dominant cost), so resuming replays no decoding and the
   next batch is bit-identical to the one an uninterrupted run would have produced. (tf.data's
   own iterator checkpoints are not JSON and do not cover `from_generator`.)
"""

import atexit
import dataclasses
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vlaw.data import droid, mixture, rlds_read
from vlaw.data.tensorflow_cpu import import_tensorflow

NUM_VIEWS = len(droid.CAMERA_NAMES)


@dataclasses.dataclass(frozen=True)
class Column:
    """One key of a window: per-window item shape, dtype ("jpeg" = encoded image bytes)."""

    shape: tuple[int, ...]
    dtype: str


# A block builder turns one raw episode into a dict of arrays whose first axis indexes that
# episode's windows (None: the episode yields no window). Its rng is seeded by the pipeline
# seed and the shard visit's position in the (deterministic) visiting order, so random window
# choices are reproducible however tf.data schedules its reader threads.
BlockBuilder = Callable[[rlds_read.RawEpisode, np.random.Generator], dict[str, np.ndarray] | None]


_LIVE_PIPELINES: "weakref.WeakSet[WindowBatches]" = weakref.WeakSet()


@atexit.register
def _close_live_pipelines() -> None:
    # tf.data threads still running a Python reader while the interpreter shuts down abort
    # the process ("terminate called without an active exception"); stop them first.
    for pipeline in list(_LIVE_PIPELINES):
        pipeline.close()


class WindowBatches:
    """A `BatchIterator` over a deterministic tf.data pipeline; position = batches consumed."""

    def __init__(
        self,
        kind: str,
        build: Callable[[int], Any],
        seed: int,
        report: rlds_read.ReadReport,
        errors: list[BaseException],
    ):
        self.kind = kind
        self.seed = seed
        self.read_report = report  # read_report.num_skipped: records skipped (skip_corrupt)
        self._build = build
        self._errors = errors
        self._batches = 0
        self._iterator = None
        _LIVE_PIPELINES.add(self)

    def close(self) -> None:
        """Stops the pipeline's threads; the next `next()` rebuilds it at the same position."""
        self._iterator = None

    def __iter__(self) -> "WindowBatches":
        return self

    def __next__(self) -> dict[str, Any]:
        tf = import_tensorflow()
        if self._iterator is None:
            self._iterator = self._build(self._batches).as_numpy_iterator()
        try:
            batch = next(self._iterator)
        except tf.errors.OpError:
            # A reader failed inside tf.data; re-raise its own exception, which names the
            # shard and the field, rather than TensorFlow's wrapper of it.
            if self._errors:
                raise self._errors[0] from None
            raise
        self._batches += 1
        return batch

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "batches": self._batches}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind or state.get("seed") != self.seed:
            raise ValueError(
                f"cannot restore a {state.get('kind')!r} pipeline with seed {state.get('seed')} "
                f"into a {self.kind!r} pipeline with seed {self.seed}"
            )
        self._batches = int(state["batches"])
        self._iterator = None  # rebuilt lazily, skipping self._batches batches


def host_shards(
    layouts: Sequence[rlds_read.DatasetLayout], process_index: int, process_count: int
) -> list[tuple[rlds_read.DatasetLayout, str]]:
    """This host's (layout, shard path) pairs: shard i goes to host i % process_count."""
    every = sorted(
        ((layout, path) for layout in layouts for path in layout.shard_paths),
        key=lambda pair: pair[1],
    )
    if len(every) < process_count:
        dirs = sorted({layout.dataset_dir for layout in layouts})
        raise ValueError(
            f"{dirs}: {len(every)} shard(s) cannot feed {process_count} hosts; write with "
            "fewer episodes per shard"
        )
    return every[process_index::process_count]


def _process_position(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return process_index, process_count


@dataclasses.dataclass
class _SourceProgress:
    """Counts for one source, to fail loudly instead of spinning when nothing is usable."""

    num_shards: int
    shards_done: int = 0
    windows: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def _source_windows(
    source: mixture.Source,
    source_index: int,
    build_block: BlockBuilder,
    columns: dict[str, Column],
    *,
    seed: int,
    num_parallel_reads: int,
    process_index: int,
    process_count: int,
    skip_corrupt: bool,
    report: rlds_read.ReadReport,
    errors: list[BaseException],
):
    """An infinite tf.data dataset of one source's undecoded windows."""
    tf = import_tensorflow()
    layouts = [rlds_read.open_dataset(d) for d in source.dataset_dirs]
    shards = host_shards(layouts, process_index, process_count)
    progress = _SourceProgress(num_shards=len(shards))
    block_signature = {
        key: tf.TensorSpec(
            (None, *column.shape), tf.string if column.dtype == "jpeg" else column.dtype
        )
        for key, column in columns.items()
    }

    def read_shard(visit, shard_index):
        layout, shard_path = shards[int(shard_index)]
        rng = np.random.default_rng([seed, source_index, int(visit)])
        try:
            for raw in rlds_read.iter_raw_episodes(
                layout, [shard_path], skip_corrupt=skip_corrupt, report=report
            ):
                block = build_block(raw, rng)
                if block is None:
                    continue
                with progress.lock:
                    progress.windows += len(next(iter(block.values())))
                yield block
            with progress.lock:
                progress.shards_done += 1
                starved = progress.shards_done >= progress.num_shards and not progress.windows
            if starved:
                raise ValueError(
                    f"{list(source.dataset_dirs)}: a full pass over this host's "
                    f"{progress.num_shards} shard(s) gave no window (every episode filtered "
                    "out, too short, or skipped as corrupt)"
                )
        except Exception as error:  # not GeneratorExit: tf.data closes readers it is done with
            errors.append(error)
            raise

    # Shard visiting order: a fresh seeded permutation every epoch (deterministic), numbered.
    shard_visits = (
        tf.data.Dataset.range(len(shards))
        .shuffle(len(shards), seed=seed + 7919 * source_index, reshuffle_each_iteration=True)
        .repeat()
        .enumerate()
    )
    cycle = max(1, min(num_parallel_reads, len(shards)))
    blocks = shard_visits.interleave(
        lambda visit, index: tf.data.Dataset.from_generator(
            read_shard, args=(visit, index), output_signature=block_signature
        ),
        cycle_length=cycle,
        block_length=1,
        num_parallel_calls=cycle,
        deterministic=True,
    )
    return blocks.unbatch()


def _decode_fn(columns: dict[str, Column], image_size: tuple[int, int] | None, shape):
    """Decodes every "jpeg" column of one window to uint8 (..., H, W, 3)."""
    tf = import_tensorflow()
    height, width = image_size if image_size is not None else shape[:2]

    def decode_one(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        if image_size is not None:
            image = tf.cond(
                tf.reduce_all(tf.shape(image)[:2] == [height, width]),
                lambda: image,
                lambda: tf.cast(
                    tf.round(
                        tf.clip_by_value(
                            tf.image.resize(image, (height, width), antialias=True), 0, 255
                        )
                    ),
                    tf.uint8,
                ),
            )
        return tf.ensure_shape(image, (height, width, 3))

    def decode(window):
        out = dict(window)
        for key, column in columns.items():
            if column.dtype != "jpeg":
                continue
            flat = tf.reshape(window[key], [-1])
            images = tf.map_fn(
                decode_one,
                flat,
                fn_output_signature=tf.TensorSpec((height, width, 3), tf.uint8),
            )
            out[key] = tf.reshape(images, (*column.shape, height, width, 3))
        return out

    return decode


def window_batches(
    kind: str,
    sources,
    build_block: BlockBuilder,
    columns: dict[str, Column],
    *,
    batch_size: int,
    seed: int,
    shuffle_buffer: int,
    num_parallel_reads: int,
    image_size: tuple[int, int] | None,
    skip_corrupt: bool,
    process_index: int | None,
    process_count: int | None,
) -> WindowBatches:
    """The batches of `columns`-shaped windows that `build_block` cuts from the episodes of
    `sources` (a dir, a list of dirs, or `mixture.Source`s), as the module docstring describes.

    `kind` names the pipeline in its resume state; `image_size` (H, W) resizes every "jpeg"
    column's frames (None keeps the stored size, which all sources must then share);
    `process_index` / `process_count` default to JAX's.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sources = mixture.as_sources(sources)
    process_index, process_count = _process_position(process_index, process_count)
    report = rlds_read.ReadReport()
    errors: list[BaseException] = []
    # Open every dataset now: a missing or malformed dataset fails here, not on first batch.
    image_shapes: set[tuple[int, int, int]] = set()
    for source in sources:
        for dataset_dir in source.dataset_dirs:
            image_shapes.add(rlds_read.open_dataset(dataset_dir).image_shape)
    if image_size is None and len(image_shapes) > 1:
        raise ValueError(
            f"sources have different image shapes {sorted(image_shapes)}; pass image_size"
        )
    stored_shape = next(iter(image_shapes))

    def build(skip_batches: int):
        tf = import_tensorflow()
        per_source = [
            _source_windows(
                source,
                index,
                build_block,
                columns,
                seed=seed,
                num_parallel_reads=num_parallel_reads,
                process_index=process_index,
                process_count=process_count,
                skip_corrupt=skip_corrupt,
                report=report,
                errors=errors,
            )
            for index, source in enumerate(sources)
        ]
        windows = mixture.sample_mixture(per_source, [s.weight for s in sources], seed)
        batches = (
            windows.shuffle(max(1, shuffle_buffer), seed=seed)
            .batch(batch_size, drop_remainder=True)
            .skip(skip_batches)  # resume: skipped before any image is decoded
            .unbatch()
            .map(
                _decode_fn(columns, image_size, stored_shape),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
            .batch(batch_size, drop_remainder=True)
            .prefetch(2)
        )
        options = tf.data.Options()
        options.deterministic = True
        return batches.with_options(options)

    return WindowBatches(kind, build, seed, report, errors)


def step_arrays(raw: rlds_read.RawEpisode) -> dict[str, np.ndarray]:
    """Per-step arrays of a raw episode under their DROID names (no "steps/" prefix)."""
    return {
        path.removeprefix(rlds_read.STEPS): value
        for path, value in raw.items()
        if path.startswith(rlds_read.STEPS)
    }


def camera_bytes(steps: dict[str, np.ndarray]) -> np.ndarray:
    """(T, V) JPEG bytes of the three cameras, in droid.CAMERA_NAMES order."""
    return np.stack([steps[f"observation/{name}"] for name in droid.CAMERA_NAMES], axis=1)


def host_batch_size(global_batch_size: int) -> int:
    """This host's share of a global batch (it must divide evenly over the hosts)."""
    import jax

    count = jax.process_count()
    if global_batch_size % count:
        raise ValueError(f"global batch {global_batch_size} is not divisible by {count} hosts")
    return global_batch_size // count
