"""tf.data pipelines that turn RLDS episodes into the training windows of the three models.

- `world_model_batches`: Ctrl-World windows (history frames, current frame, future frames,
  their poses, and the raw action chunk between the frames).
- `policy_batches`: pi0.5 examples (three cameras, state, prompt, action chunk, Eq. 4 weight).
- `reward_batches`: reward-model examples (16 uniformly sampled frames, instruction, label).

Each returns a `BatchIterator` (vlaw/data/batches.py) yielding dicts of numpy arrays holding
this host's `batch_size` examples.

How a pipeline runs, and why:
1. Shards: every source's shard files are sorted and dealt to hosts round-robin
   (`shard_index % process_count == process_index`); each host then visits its own shards in
   a fresh seeded order every epoch, forever.
2. Episodes are parsed by `vlaw.data.rlds` in Python (inside `from_generator`, up to
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
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from vlaw.data import droid, mixture, rlds, transforms
from vlaw.data.episode import EpisodeMetadata
from vlaw.data.tensorflow_cpu import import_tensorflow

NUM_VIEWS = len(droid.CAMERA_NAMES)


@dataclasses.dataclass(frozen=True)
class _Column:
    """One key of a window: per-window item shape, dtype ("jpeg" = encoded image bytes)."""

    shape: tuple[int, ...]
    dtype: str


# A block builder turns one raw episode into a dict of arrays whose first axis indexes that
# episode's windows (None: the episode yields no window). Its rng is seeded by the pipeline
# seed and the shard visit's position in the (deterministic) visiting order, so random window
# choices are reproducible however tf.data schedules its reader threads.
BlockBuilder = Callable[[rlds.RawEpisode, np.random.Generator], dict[str, np.ndarray] | None]


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
        report: rlds.ReadReport,
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
    layouts: Sequence[rlds.DatasetLayout], process_index: int, process_count: int
) -> list[tuple[rlds.DatasetLayout, str]]:
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
    columns: dict[str, _Column],
    *,
    seed: int,
    num_parallel_reads: int,
    process_index: int,
    process_count: int,
    skip_corrupt: bool,
    report: rlds.ReadReport,
    errors: list[BaseException],
):
    """An infinite tf.data dataset of one source's undecoded windows."""
    tf = import_tensorflow()
    layouts = [rlds.open_dataset(d) for d in source.dataset_dirs]
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
            for raw in rlds.iter_raw_episodes(
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


def _decode_fn(columns: dict[str, _Column], image_size: tuple[int, int] | None, shape):
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


def _window_batches(
    kind: str,
    sources,
    build_block: BlockBuilder,
    columns: dict[str, _Column],
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
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sources = mixture.as_sources(sources)
    process_index, process_count = _process_position(process_index, process_count)
    report = rlds.ReadReport()
    errors: list[BaseException] = []
    # Open every dataset now: a missing or malformed dataset fails here, not on first batch.
    image_shapes: set[tuple[int, int, int]] = set()
    for source in sources:
        for dataset_dir in source.dataset_dirs:
            image_shapes.add(rlds.open_dataset(dataset_dir).image_shape)
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


def _steps(raw: rlds.RawEpisode) -> dict[str, np.ndarray]:
    """Per-step arrays of a raw episode under their DROID names (no "steps/" prefix)."""
    return {
        path.removeprefix(rlds.STEPS): value
        for path, value in raw.items()
        if path.startswith(rlds.STEPS)
    }


def _camera_bytes(steps: dict[str, np.ndarray]) -> np.ndarray:
    """(T, V) JPEG bytes of the three cameras, in droid.CAMERA_NAMES order."""
    return np.stack([steps[f"observation/{name}"] for name in droid.CAMERA_NAMES], axis=1)


def world_model_batches(
    sources,
    *,
    batch_size: int,
    num_history: int = 6,
    num_future: int = 5,
    frame_stride: int = 3,
    history_spacing: int | Sequence[int] = 4,
    no_history_probability: float = 0.0,
    window_stride: int = 1,
    seed: int = 0,
    shuffle_buffer: int = 2_000,
    num_parallel_reads: int = 2,
    image_size: tuple[int, int] | None = None,
    skip_corrupt: bool = False,
    exclude: Collection[tuple[str, int]] = (),
    process_index: int | None = None,
    process_count: int | None = None,
) -> WindowBatches:
    """Ctrl-World training windows (indices: `transforms.world_model_indices`).

    Args:
      sources: a dataset dir, a list of dirs, or `mixture.Source`s (Eq. 2 weights).
      batch_size: examples per batch on this host.
      history_spacing: world-model frames between history frames; a sequence draws one value
        per window (Ctrl-World trains with 4 or 8).
      no_history_probability: chance that a window's history frames are all the current frame
        (Ctrl-World: 0.15), so the model also learns to predict without memory.
      window_stride: one window every this many steps of an episode. Windows hold JPEG
        bytes until batched, and each frame is in up to num_history + num_future windows:
        a larger stride bounds that duplication (and the shuffle buffer's memory) on DROID.
      image_size: (H, W) to resize every frame to; None keeps the stored size (then all
        sources must share it).
      exclude: (shard path, record index) pairs of episodes to leave out (held-out ones).

    Batches (V = 3 views in droid.CAMERA_NAMES order, H, W the image size):
      history_frames (B, num_history, V, H, W, 3) uint8, oldest first
      current_frame (B, V, H, W, 3) uint8
      future_frames (B, num_future - 1, V, H, W, 3) uint8
      history_poses (B, num_history, 7) float32, cartesian_position ++ gripper_position
      future_poses (B, num_future, 7) float32, the current frame's pose first
      action_chunk (B, (num_future - 1) * frame_stride, 8) float32, raw pi0.5-DROID actions
      instruction (B,) bytes, the episode's instruction (Ctrl-World's text conditioning)
    """
    num_actions = (num_future - 1) * frame_stride
    columns = {
        "history_frames": _Column((num_history, NUM_VIEWS), "jpeg"),
        "current_frame": _Column((NUM_VIEWS,), "jpeg"),
        "future_frames": _Column((num_future - 1, NUM_VIEWS), "jpeg"),
        "history_poses": _Column((num_history, 7), "float32"),
        "future_poses": _Column((num_future, 7), "float32"),
        "action_chunk": _Column((num_actions, droid.POLICY_ACTION_DIM), "float32"),
        "instruction": _Column((), "string"),
    }

    spacings = np.atleast_1d(np.asarray(history_spacing, np.int64))
    excluded = {(str(path), int(index)) for path, index in exclude}

    def build_block(raw, rng):
        num_steps = raw["num_steps"]
        if num_steps == 0 or (str(raw["shard_path"]), int(raw["record_index"])) in excluded:
            return None
        steps = _steps(raw)
        starts = np.arange(0, num_steps, window_stride)
        spacing = rng.choice(spacings, size=len(starts))
        spacing[rng.random(len(starts)) < no_history_probability] = 0
        indices = transforms.world_model_indices(
            num_steps,
            num_history=num_history,
            num_future=num_future,
            frame_stride=frame_stride,
            history_spacing=spacing,
            starts=starts,
        )
        frames = _camera_bytes(steps)  # (T, V)
        poses = droid.world_model_poses(steps)
        actions = droid.policy_actions(steps)
        return {
            "history_frames": frames[indices["history"]],
            "current_frame": frames[indices["future"][:, 0]],
            "future_frames": frames[indices["future"][:, 1:]],
            "history_poses": poses[indices["history"]],
            "future_poses": poses[indices["future"]],
            "action_chunk": actions[indices["actions"]],
            "instruction": np.full(
                len(starts), rlds.instruction_from_raw(raw).encode(), dtype=object
            ),
        }

    return _window_batches(
        "world_model",
        sources,
        build_block,
        columns,
        batch_size=batch_size,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        num_parallel_reads=num_parallel_reads,
        image_size=image_size,
        skip_corrupt=skip_corrupt,
        process_index=process_index,
        process_count=process_count,
    )


def episode_weight(metadata: EpisodeMetadata) -> float:
    """Eq. 4's binary weight of an episode: `kept` for synthetic rollouts (the reward model's
    verdict), `success` for everything else (the operator's or the simulator's label)."""
    return float(metadata.kept if metadata.source == "synthetic" else metadata.success)


def policy_batches(
    sources,
    *,
    batch_size: int,
    action_horizon: int = 15,
    drop_failures: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 2_000,
    num_parallel_reads: int = 2,
    image_size: tuple[int, int] | None = None,
    skip_corrupt: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
) -> WindowBatches:
    """pi0.5 training examples, one per step of every episode.

    `weight` is the binary weight of Eq. 4 (`episode_weight`: 1 for successful real episodes
    and kept synthetic ones, else 0); `drop_failures=True` leaves weight-0 examples out
    instead (filtered BC).

    Batches:
      images (B, 3, H, W, 3) uint8, droid.CAMERA_NAMES order
      state (B, 8) float32, joint_position ++ gripper_position
      prompt (B,) bytes, the episode's instruction
      actions (B, action_horizon, 8) float32, joint_velocity ++ gripper_position; chunks that
        run past the end repeat the final action (openpi)
      weight (B,) float32
    """
    columns = {
        "images": _Column((NUM_VIEWS,), "jpeg"),
        "state": _Column((droid.STATE_DIM,), "float32"),
        "prompt": _Column((), "string"),
        "actions": _Column((action_horizon, droid.POLICY_ACTION_DIM), "float32"),
        "weight": _Column((), "float32"),
    }

    def build_block(raw, rng):
        weight = episode_weight(rlds.metadata_from_raw(raw))
        num_steps = raw["num_steps"]
        if num_steps == 0 or (drop_failures and weight == 0):
            return None
        steps = _steps(raw)
        actions = droid.policy_actions(steps)
        return {
            "images": _camera_bytes(steps),
            "state": droid.policy_state(steps),
            "prompt": np.full(num_steps, rlds.instruction_from_raw(raw).encode(), dtype=object),
            "actions": actions[transforms.chunk_indices(num_steps, action_horizon)],
            "weight": np.full(num_steps, weight, np.float32),
        }

    return _window_batches(
        "policy",
        sources,
        build_block,
        columns,
        batch_size=batch_size,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        num_parallel_reads=num_parallel_reads,
        image_size=image_size,
        skip_corrupt=skip_corrupt,
        process_index=process_index,
        process_count=process_count,
    )


def reward_batches(
    sources,
    *,
    batch_size: int,
    num_frames: int = 16,
    camera: str = droid.CAMERA_NAMES[0],
    seed: int = 0,
    shuffle_buffer: int = 256,
    num_parallel_reads: int = 2,
    image_size: tuple[int, int] | None = None,
    skip_corrupt: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
) -> WindowBatches:
    """Reward-model examples, one per episode: `num_frames` frames of `camera` at indices
    `linspace(0, T-1, num_frames).round()` (Appendix C), the instruction and the success label.

    Batches: frames (B, num_frames, H, W, 3) uint8, instruction (B,) bytes, label (B,) bool.
    """
    if camera not in droid.CAMERA_NAMES:
        raise ValueError(f"camera {camera!r} not in {droid.CAMERA_NAMES}")
    columns = {
        "frames": _Column((num_frames,), "jpeg"),
        "instruction": _Column((), "string"),
        "label": _Column((), "bool"),
    }

    def build_block(raw, rng):
        num_steps = raw["num_steps"]
        if num_steps == 0:
            return None
        images = raw[f"{rlds.STEPS}observation/{camera}"]
        instruction = np.empty(1, dtype=object)
        instruction[0] = rlds.instruction_from_raw(raw).encode()
        return {
            "frames": images[transforms.uniform_frame_indices(num_steps, num_frames)][None],
            "instruction": instruction,
            "label": np.array([rlds.metadata_from_raw(raw).success]),
        }

    return _window_batches(
        "reward",
        sources,
        build_block,
        columns,
        batch_size=batch_size,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        num_parallel_reads=num_parallel_reads,
        image_size=image_size,
        skip_corrupt=skip_corrupt,
        process_index=process_index,
        process_count=process_count,
    )


def host_batch_size(global_batch_size: int) -> int:
    """This host's share of a global batch (it must divide evenly over the hosts)."""
    import jax

    count = jax.process_count()
    if global_batch_size % count:
        raise ValueError(f"global batch {global_batch_size} is not divisible by {count} hosts")
    return global_batch_size // count


def world_model_batches_from_config(
    config,
    real_dataset_dirs: Sequence[str],
    *,
    sources=None,
    batch_size: int | None = None,
    image_size: tuple[int, int] | None = None,
    seed: int | None = None,
    exclude: Collection[tuple[str, int]] = (),
) -> WindowBatches:
    """`world_model_batches` with the experiment config's fields; D_real plus DROID (Eq. 2).

    `sources` (mixture.Source list) replaces the config's D_real + DROID mixture; `batch_size`
    (global), `image_size` and `seed` replace the config's values when given.
    """
    data, model = config.data, config.world_model
    if sources is None:
        sources = mixture.sources_from_config(real_dataset_dirs, data)
    return world_model_batches(
        sources,
        batch_size=host_batch_size(model.train.batch_size if batch_size is None else batch_size),
        num_history=model.num_history,
        num_future=model.num_future,
        frame_stride=model.frame_stride,
        # Ctrl-World's training recipe (ctrl_world.md §1.3): history every 4 or 8 frames, and
        # 15 % of windows without history.
        history_spacing=(4, 8),
        no_history_probability=0.15,
        seed=config.seed if seed is None else seed,
        # `data.shuffle_buffer` counts frames; a window carries the JPEGs of
        # num_history + num_future frames, so this keeps the buffer's memory the same.
        shuffle_buffer=max(1, data.shuffle_buffer // (model.num_history + model.num_future)),
        num_parallel_reads=data.num_parallel_reads,
        image_size=(data.image_height, data.image_width) if image_size is None else image_size,
        skip_corrupt=data.skip_corrupt,
        exclude=exclude,
    )


def policy_batches_from_config(
    config,
    dataset_dirs: Sequence[str],
    *,
    drop_failures: bool = False,
    seed: int | None = None,
    shuffle_buffer: int | None = None,
) -> WindowBatches:
    """`policy_batches` with the experiment config's fields (D_real+ and D_syn+ dirs)."""
    data = config.data
    return policy_batches(
        list(dataset_dirs),
        batch_size=host_batch_size(config.policy.train.batch_size),
        action_horizon=config.policy.action_horizon,
        drop_failures=drop_failures,
        seed=config.seed if seed is None else seed,
        shuffle_buffer=data.shuffle_buffer if shuffle_buffer is None else shuffle_buffer,
        num_parallel_reads=data.num_parallel_reads,
        image_size=(data.image_height, data.image_width),
        skip_corrupt=data.skip_corrupt,
    )


def reward_batches_from_config(config, dataset_dirs: Sequence[str]) -> WindowBatches:
    """`reward_batches` with the experiment config's fields (labelled D_real episodes)."""
    data = config.data
    return reward_batches(
        dataset_dirs,
        batch_size=host_batch_size(config.reward.train.batch_size),
        num_frames=config.reward.num_frames,
        seed=config.seed,
        num_parallel_reads=data.num_parallel_reads,
        image_size=(data.image_height, data.image_width),
        skip_corrupt=data.skip_corrupt,
    )
