"""Synthetic episodes in DROID's schema, for tests and benchmarks (numpy only, no TensorFlow).

Images are smooth gradients with a moving square rather than noise, so JPEG stores them with
the small error typical of camera frames. Every float is float32-representable, so RLDS round
trips (which store float64 in a float32 list, as DROID's files do) are exact.
"""

import numpy as np

from vlaw.data import droid
from vlaw.data.episode import Episode, EpisodeMetadata


def _frames(rng: np.random.Generator, num_steps: int, image_shape: tuple[int, int, int]):
    height, width, _ = image_shape
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    tilt = rng.uniform(-40, 40, size=(2, 3)).astype(np.float32)
    background = base + rows[..., None] * tilt[0] + cols[..., None] * tilt[1]  # (H, W, 3)
    frames = np.repeat(background[None], num_steps, axis=0)
    side = max(2, min(height, width) // 4)
    for t in range(num_steps):
        top = (t * 3) % max(1, height - side)
        left = (t * 5) % max(1, width - side)
        frames[t, top : top + side, left : left + side] = 255.0 - base
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def synthetic_episode(
    seed: int,
    num_steps: int = 20,
    image_shape: tuple[int, int, int] = (64, 64, 3),
    *,
    success: bool = True,
    source: str = "real",
    task: str = "scoop",
    instruction: str = "scoop the beans into the bowl",
    iteration: int = 0,
) -> Episode:
    """A random but reproducible episode of `num_steps` steps at `image_shape`."""
    rng = np.random.default_rng(seed)

    def vectors(dim: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
        return rng.uniform(low, high, size=(num_steps, dim)).astype(np.float32).astype(np.float64)

    observation = {
        f"observation/{name}": _frames(rng, num_steps, image_shape) for name in droid.CAMERA_NAMES
    }
    for field in droid.OBSERVATION_STATE_FIELDS:
        low = 0.0 if "gripper" in field.path else -1.0
        observation[field.path] = vectors(field.shape[0], low)
    action_dict = {}
    for field in droid.ACTION_DICT_FIELDS:
        low = 0.0 if field.path.endswith("gripper_position") else -1.0
        action_dict[field.path] = vectors(field.shape[0], low)
    episode_id = f"{task}-{seed:05d}"
    metadata = EpisodeMetadata(
        success=success,
        source=source,
        task=task,
        iteration=iteration,
        policy_checkpoint=f"policy/step_{seed}",
        reward_score=float(np.float32(rng.uniform())),
        kept=success,
        episode_id=episode_id,
    )
    return Episode(instruction, observation, action_dict, metadata)


def synthetic_episodes(
    count: int,
    *,
    seed: int = 0,
    num_steps: int = 12,
    image_shape: tuple[int, int, int] = (64, 64, 3),
    task: str = "scoop",
    instruction: str = "scoop the beans into the bowl",
    source: str = "real",
) -> list[Episode]:
    """`count` episodes of varied length (num_steps - 3, num_steps, num_steps + 3, ...),
    successes at even indices."""
    return [
        synthetic_episode(
            seed + i,
            num_steps=max(1, num_steps + 3 * (i % 3) - 3),
            image_shape=image_shape,
            success=i % 2 == 0,
            source=source,
            task=task,
            instruction=instruction,
        )
        for i in range(count)
    ]
