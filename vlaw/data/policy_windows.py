"""pi0.5's training examples (three cameras, state, prompt, action chunk) with Eq. 4's binary
weight, read by the resumable engine of `vlaw.data.windows`."""

import numpy as np

from vlaw.data import droid, rlds_read, transforms, windows
from vlaw.data.episode import EpisodeMetadata


def episode_weight(metadata: EpisodeMetadata, failed_demos: bool = False) -> float:
    """Eq. 4's binary weight of an episode: `kept` for synthetic rollouts (the reward model's
    verdict), `success` for everything else (the operator's or the simulator's label).

    `failed_demos=True` gives every demonstration weight 1 whatever its outcome: a scripted
    expert's recorded commands are its own, right or wrong, where the noise it executed made
    the episode fail (with `sim.expert_corrections`, the noise-free commands; policy config
    `failed_demos`). Rollouts keep Eq. 4's weight."""
    if failed_demos and metadata.source == "demo":
        return 1.0
    return float(metadata.kept if metadata.source == "synthetic" else metadata.success)


def policy_batches(
    sources,
    *,
    batch_size: int,
    action_horizon: int = 15,
    drop_failures: bool = False,
    failed_demos: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 2_000,
    num_parallel_reads: int = 2,
    image_size: tuple[int, int] | None = None,
    skip_corrupt: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
) -> windows.WindowBatches:
    """pi0.5 training examples, one per step of every episode.

    `weight` is the binary weight of Eq. 4 (`episode_weight`: 1 for successful real episodes
    and kept synthetic ones, else 0; `failed_demos=True`: 1 for every demonstration);
    `drop_failures=True` leaves weight-0 examples out instead (filtered BC).

    Batches:
      images (B, 3, H, W, 3) uint8, droid.CAMERA_NAMES order
      state (B, 8) float32, joint_position ++ gripper_position
      prompt (B,) bytes, the episode's instruction
      actions (B, action_horizon, 8) float32, joint_velocity ++ gripper_position; chunks that
        run past the end repeat the final action (openpi)
      weight (B,) float32
    """
    columns = {
        "images": windows.Column((windows.NUM_VIEWS,), "jpeg"),
        "state": windows.Column((droid.STATE_DIM,), "float32"),
        "prompt": windows.Column((), "string"),
        "actions": windows.Column((action_horizon, droid.POLICY_ACTION_DIM), "float32"),
        "weight": windows.Column((), "float32"),
    }

    def build_block(raw, rng):
        weight = episode_weight(rlds_read.metadata_from_raw(raw), failed_demos)
        num_steps = raw["num_steps"]
        if num_steps == 0 or (drop_failures and weight == 0):
            return None
        steps = windows.step_arrays(raw)
        actions = droid.policy_actions(steps)
        return {
            "images": windows.camera_bytes(steps),
            "state": droid.policy_state(steps),
            "prompt": np.full(
                num_steps, rlds_read.instruction_from_raw(raw).encode(), dtype=object
            ),
            "actions": actions[transforms.chunk_indices(num_steps, action_horizon)],
            "weight": np.full(num_steps, weight, np.float32),
        }

    return windows.window_batches(
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
