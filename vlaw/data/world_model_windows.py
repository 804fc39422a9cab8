"""Ctrl-World's training windows (history frames, current frame, future frames, their poses
and the raw action chunk between the frames), read by the resumable engine of
`vlaw.data.windows`."""

from collections.abc import Collection, Sequence

import numpy as np

from vlaw.data import droid, rlds_read, transforms, windows


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
) -> windows.WindowBatches:
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
        "history_frames": windows.Column((num_history, windows.NUM_VIEWS), "jpeg"),
        "current_frame": windows.Column((windows.NUM_VIEWS,), "jpeg"),
        "future_frames": windows.Column((num_future - 1, windows.NUM_VIEWS), "jpeg"),
        "history_poses": windows.Column((num_history, 7), "float32"),
        "future_poses": windows.Column((num_future, 7), "float32"),
        "action_chunk": windows.Column((num_actions, droid.POLICY_ACTION_DIM), "float32"),
        "instruction": windows.Column((), "string"),
    }

    spacings = np.atleast_1d(np.asarray(history_spacing, np.int64))
    excluded = {(str(path), int(index)) for path, index in exclude}

    def build_block(raw, rng):
        num_steps = raw["num_steps"]
        if num_steps == 0 or (str(raw["shard_path"]), int(raw["record_index"])) in excluded:
            return None
        steps = windows.step_arrays(raw)
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
        frames = windows.camera_bytes(steps)  # (T, V)
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
                len(starts), rlds_read.instruction_from_raw(raw).encode(), dtype=object
            ),
        }

    return windows.window_batches(
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
