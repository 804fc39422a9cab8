"""Recorded episodes replayed whole in the world model: imagined frames with a known outcome,
for the reward model to learn how imagined episodes look.

`label` asks the reward model about imagined rollouts, but `train_reward` teaches it on
recorded frames. Where the world model's frames look unlike the camera's (at `sim`: blurred
motion, mottled static regions), a reward model trained on recorded frames alone judged the
imagined outcome of whole episodes at chance (benchmarks/RESULTS.md, "three world models in
imagination"). With `reward.train_on_world_model_replays`, `train_reward` also trains on each
of its training episodes replayed in the iteration's world model: the recorded actions from the
recorded first frame, chunk by chunk, as the action replay of `vlaw.eval.action_replay` does,
labelled with the recorded outcome, i.e. the label an imagined rollout of those same actions
should get. Source "replay": its label is the recording's, so it counts as known.

Every replay runs for the longest recording's length (one compiled shape; shorter recordings
hold the arm still past their end, as the station's holding period does) and is then cut to
its own recording's length, so its 16 sampled frames span what the recording's do. Noise: the
rng folded with the batch's index, so a batch replays the same frames whenever it runs.
"""

from collections.abc import Iterable, Iterator

import jax

from vlaw.data.episode import Episode, EpisodeMetadata
from vlaw.eval.action_replay import clip_from_episode, replay_batch
from vlaw.rollout.imagine import imagined_episode, steps_per_interaction

SOURCE = "replay"


def replay_episode_id(episode_id: str, iteration: int) -> str:
    return f"replay-{iteration:02d}-{episode_id}"


def _batches(episodes: Iterable[Episode], size: int) -> Iterator[list[Episode]]:
    batch: list[Episode] = []
    for episode in episodes:
        batch.append(episode)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def world_model_replays(
    world,
    episodes: Iterable[Episode],
    *,
    config,
    iteration: int,
    longest: int,
    rng: jax.Array,
    batch_size: int,
    bar=None,
) -> Iterator[Episode]:
    """Each of `episodes` (none longer than `longest` steps) replayed in `world` (a
    `TrainedWorldModel`) from its first frame, `batch_size` at a time, as a "replay" episode
    with the recording's instruction, task and success (see the module docstring)."""
    stride, steps = int(config.world_model.frame_stride), steps_per_interaction(config)
    num_steps = -(-max(1, longest) // steps) * steps
    for index, batch in enumerate(_batches(episodes, batch_size)):
        too_long = [e.metadata.episode_id for e in batch if e.num_steps > longest]
        if too_long:
            raise ValueError(f"episodes {too_long} are longer than longest={longest} steps")
        clips = [clip_from_episode(e, 0, num_steps, stride, e.metadata.episode_id) for e in batch]
        imagined = replay_batch(
            world,
            clips,
            config=config,
            rng=jax.random.fold_in(rng, index),
            batch_size=batch_size,
            bar=bar,
        )
        for b, episode in enumerate(batch):
            recorded = episode.metadata
            metadata = EpisodeMetadata(
                success=bool(recorded.success),
                source=SOURCE,
                task=recorded.task,
                iteration=iteration,
                policy_checkpoint=recorded.policy_checkpoint,
                episode_id=replay_episode_id(recorded.episode_id, iteration),
            )
            cut = episode.num_steps + 1  # its states: the recording's length, no holding tail
            yield imagined_episode(
                episode.instruction,
                metadata,
                imagined.frames[b],
                imagined.joints[b, :cut],
                imagined.poses[b, :cut],
                stride,
            )
