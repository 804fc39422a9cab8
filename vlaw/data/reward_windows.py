"""Reward-model examples (uniformly sampled frames of one camera, the instruction and the
success label), read by the resumable engine of `vlaw.data.windows`."""

import numpy as np

from vlaw.data import droid, rlds_read, transforms, windows


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
) -> windows.WindowBatches:
    """Reward-model examples, one per episode: `num_frames` frames of `camera` at indices
    `linspace(0, T-1, num_frames).round()` (Appendix C), the instruction and the success label.

    Batches: frames (B, num_frames, H, W, 3) uint8, instruction (B,) bytes, label (B,) bool.
    """
    if camera not in droid.CAMERA_NAMES:
        raise ValueError(f"camera {camera!r} not in {droid.CAMERA_NAMES}")
    columns = {
        "frames": windows.Column((num_frames,), "jpeg"),
        "instruction": windows.Column((), "string"),
        "label": windows.Column((), "bool"),
    }

    def build_block(raw, rng):
        num_steps = raw["num_steps"]
        if num_steps == 0:
            return None
        images = raw[f"{rlds_read.STEPS}observation/{camera}"]
        instruction = np.empty(1, dtype=object)
        instruction[0] = rlds_read.instruction_from_raw(raw).encode()
        return {
            "frames": images[transforms.uniform_frame_indices(num_steps, num_frames)][None],
            "instruction": instruction,
            "label": np.array([rlds_read.metadata_from_raw(raw).success]),
        }

    return windows.window_batches(
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
