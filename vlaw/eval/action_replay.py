"""Action replay in the world model (VLAW Table 1): recorded actions fed to the world model from
a recorded frame, the predicted frames scored against the recorded ones, and the predicted
outcome of whole episodes against the recorded outcome (the event confusion matrix).

Protocol (paper §5.2): a start frame of a held-out real episode, its recorded 15 Hz actions fed
chunk by chunk for `evaluate.replay_seconds` (5 s at paper), the predicted frames of
`evaluate.camera` (the wrist view: "this viewpoint best captures object interactions") scored
against the recorded frames of the same robot steps with PSNR, SSIM and, where its weights are
given, LPIPS. The conditioning frame is never scored. Per-frame values are averaged over the
frames of a clip, then over clips (`vlaw.eval.video_metrics`' video convention).

The replay runs through `vlaw.rollout.imagine.imagine_frames` with a "policy" that hands out the
recorded actions (`RecordedActions`): the same pose integration, memory and sampler as
imagination, so a replay measures the world model exactly as imagination uses it. World-model
frame k of a clip starting at step s shows step s + k * frame_stride.

Clip lengths are whole world-model chunks (12 robot steps); actions past the end of a recording
hold the arm still (zero joint velocity, the last gripper command) and frames past it are not
scored.

Event confusion (Table 1, right): whole recorded episodes replayed from their first frame; the
imagined outcome (the reward model's P(yes) > alpha on the imagined clip, or a person's label
from `evaluate.confusion_labels`) against the recorded outcome (the episode's `success`). On the
simulated station that label is the true outcome of the replayed actions: the simulator is
deterministic from the episode's reset (`vlaw.rollout.replay` relies on the same fact) and the
padding holds the arm still, as the station's holding period does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np

from vlaw.data import droid
from vlaw.data.episode import Episode
from vlaw.eval import video_metrics
from vlaw.eval.confusion import confusion
from vlaw.eval.prediction import resize_frames
from vlaw.rollout.imagine import ImaginedArrays, imagine_frames, steps_per_interaction
from vlaw.rollout.imagine_plan import StartState

# A frame identical to the recording has PSNR +inf (scikit-image's convention); it counts as
# this many dB, so one still frame (the copy baseline before the arm moves) cannot make a mean
# infinite, and world_model.json stays plain JSON.
PSNR_CAP_DB = 100.0


def clip_id(episode_id: str, start_step: int) -> str:
    """A replayed clip's name in reports and in a label file: "<episode id>@<start step>"."""
    return f"{episode_id}@{start_step}"


@dataclasses.dataclass(frozen=True)
class ReplayClip:
    """A recorded action sequence and the frames it produced, from `start_step` on."""

    clip_id: str
    task: str
    start: StartState  # the recorded state at `start_step`: the world model's starting frame
    start_step: int
    actions: np.ndarray  # (T, 8) float32 recorded policy actions, hold-padded to T
    recorded: np.ndarray  # (K, V, H, W, 3) uint8: steps start + k * stride, k = 1..K
    valid: np.ndarray  # (K,) bool: frame k lies inside the recording
    success: bool  # the recorded episode's label


def chunks_for_seconds(config, seconds: float) -> int:
    """World-model chunks that cover `seconds` of 15 Hz robot steps (rounded up)."""
    steps = seconds * droid.FRAME_RATE_HZ
    return max(1, math.ceil(steps / steps_per_interaction(config) - 1e-9))


def clip_from_episode(
    episode: Episode, start_step: int, num_steps: int, stride: int, clip_name: str
) -> ReplayClip:
    """The clip of `num_steps` recorded actions of `episode` from `start_step` (see the module
    docstring for the padding)."""
    if not 0 <= start_step < episode.num_steps:
        raise ValueError(f"start step {start_step} outside {episode.num_steps} recorded steps")
    recorded_actions = droid.policy_actions(episode.action_dict)[
        start_step : start_step + num_steps
    ]
    hold = np.zeros((num_steps - len(recorded_actions), droid.POLICY_ACTION_DIM), np.float32)
    hold[:, 7:] = recorded_actions[-1, 7:]
    cameras = np.stack(
        [episode.observation[f"observation/{name}"] for name in droid.CAMERA_NAMES], axis=1
    )  # (T, V, H, W, 3)
    steps = start_step + stride * np.arange(1, num_steps // stride + 1)
    valid = steps < episode.num_steps
    recorded = cameras[np.minimum(steps, episode.num_steps - 1)]
    recorded[~valid] = 0
    observation = episode.observation
    start = StartState(
        task=episode.metadata.task,
        episode_id=episode.metadata.episode_id,
        instruction=episode.instruction,
        images=cameras[start_step],
        joint_position=np.asarray(observation["observation/joint_position"][start_step]),
        gripper_position=np.asarray(observation["observation/gripper_position"][start_step]),
    )
    return ReplayClip(
        clip_id=clip_name,
        task=episode.metadata.task,
        start=start,
        start_step=start_step,
        actions=np.concatenate([recorded_actions, hold]),
        recorded=recorded,
        valid=valid,
        success=bool(episode.metadata.success),
    )


def clip_starts(episode_steps: int, count: int, span: int) -> list[int]:
    """`count` start steps spread evenly over the steps from which `span` recorded steps follow
    (step 0 only when the episode is shorter than that)."""
    last = max(0, episode_steps - span)
    return sorted({int(s) for s in np.linspace(0, last, count).round()})


def replay_clips(
    episodes: Iterable[Episode],
    *,
    num_clips: int,
    num_episodes: int,
    num_steps: int,
    stride: int,
    from_first_step: bool = False,
) -> Iterator[ReplayClip]:
    """Up to `num_clips` clips of `num_steps` actions from `num_episodes` episodes, about
    `num_clips / num_episodes` per episode at evenly spread starts (`from_first_step`: one per
    episode, from its first frame)."""
    per_episode = 1 if from_first_step else max(1, math.ceil(num_clips / max(1, num_episodes)))
    made = 0
    for episode in episodes:
        starts = [0] if from_first_step else clip_starts(episode.num_steps, per_episode, num_steps)
        for start in starts:
            if made == num_clips:
                return
            name = clip_id(episode.metadata.episode_id, start)
            yield clip_from_episode(episode, start, num_steps, stride, name)
            made += 1


class RecordedActions:
    """`imagine_frames`' policy for a replay: each call hands out the next chunk of every row's
    recorded actions, whatever the rows observe."""

    def __init__(self, actions: np.ndarray, steps_per_call: int):
        self.actions, self.steps, self.calls = np.asarray(actions), steps_per_call, 0

    def __call__(self, observations, *, rng=None) -> np.ndarray:
        del rng  # deterministic: the recording decides
        chunk = self.actions[:, self.calls * self.steps : (self.calls + 1) * self.steps]
        if chunk.shape[1] != self.steps or len(observations) != len(chunk):
            raise ValueError(f"no recorded chunk {self.calls} of {self.steps} steps left")
        self.calls += 1
        return chunk


def replay_batch(
    world, clips: Sequence[ReplayClip], *, config, rng: jax.Array, batch_size: int, bar=None
) -> ImaginedArrays:
    """Up to `batch_size` clips of one length replayed from their start frames in one call of
    `imagine_frames`; rows past `len(clips)` repeat the first clip (one compiled shape) and
    are the caller's to drop."""
    steps = steps_per_interaction(config)
    padded = list(clips) + [clips[0]] * (batch_size - len(clips))
    actions = np.stack([c.actions for c in padded])
    return imagine_frames(
        world,
        RecordedActions(actions, steps),
        [c.start for c in padded],
        config=config,
        rng=rng,
        interactions=actions.shape[1] // steps,
        bar=bar,
    )


def replay_in_world_model(
    world, clips: Iterable[ReplayClip], *, config, rng: jax.Array, batch_size: int
) -> Iterator[tuple[list[ReplayClip], np.ndarray]]:
    """Replays `clips` (all of one length) `batch_size` at a time (the last batch padded, so one
    compiled shape); yields (the batch's clips, their predicted frames (b, K, V, h, w, 3) uint8
    at the world model's size, the conditioning frame excluded). Noise: `rng` folded with the
    batch's index."""
    batch: list[ReplayClip] = []
    index = 0

    def run(part: list[ReplayClip]) -> np.ndarray:
        key = jax.random.fold_in(rng, index)
        imagined = replay_batch(world, part, config=config, rng=key, batch_size=batch_size)
        return imagined.frames[: len(part), 1:]

    for clip in clips:
        batch.append(clip)
        if len(batch) == batch_size:
            yield batch, run(batch)
            batch, index = [], index + 1
    if batch:
        yield batch, run(batch)


# --------------------------------------------------------------------------------------------
# Scores.


def clip_scores(
    predicted: np.ndarray,
    recorded: np.ndarray,
    valid: np.ndarray,
    start_frames: np.ndarray,
    *,
    lpips_params: dict | None = None,
) -> dict[str, np.ndarray | None]:
    """Per-clip means over the valid frames of N clips of one camera.

    predicted, recorded: (N, K, H, W, 3) uint8 of one size; valid: (N, K) bool (at least one
    per clip); start_frames: (N, H, W, 3), the conditioning frames, for the copy baseline (the
    PSNR and SSIM of "nothing moves", which a world model must beat). Returns (N,) float64
    arrays: psnr and psnr_copy_start (frames capped at PSNR_CAP_DB), ssim and ssim_copy_start
    (None where frames are smaller than SSIM's 11x11 window), lpips (None without
    `lpips_params`)."""
    valid = np.asarray(valid, bool)
    if not valid.any(axis=1).all():
        raise ValueError("every clip needs at least one recorded frame to score")

    def mean_over_valid(per_frame) -> np.ndarray:
        per_frame = np.asarray(per_frame, np.float64)
        return np.where(valid, per_frame, 0.0).sum(1) / valid.sum(1)

    def capped_psnr(reference, prediction) -> np.ndarray:
        return np.minimum(np.asarray(video_metrics.psnr(reference, prediction, 255.0)), PSNR_CAP_DB)

    copied = np.broadcast_to(np.asarray(start_frames)[:, None], np.shape(recorded))
    scores: dict[str, np.ndarray | None] = {
        "psnr": mean_over_valid(capped_psnr(recorded, predicted)),
        "psnr_copy_start": mean_over_valid(capped_psnr(recorded, copied)),
        "ssim": None,
        "ssim_copy_start": None,
        "lpips": None,
    }
    if min(np.shape(recorded)[-3:-1]) >= video_metrics.SSIM_WINDOW:
        scores["ssim"] = mean_over_valid(video_metrics.ssim(recorded, predicted, 255.0))
        scores["ssim_copy_start"] = mean_over_valid(video_metrics.ssim(recorded, copied, 255.0))
    if lpips_params is not None:
        scores["lpips"] = mean_over_valid(
            video_metrics.lpips(lpips_params, recorded, predicted, 255.0)
        )
    return scores


def summarize_scores(per_clip: Sequence[Mapping[str, np.ndarray | None]]) -> dict:
    """Means over all clips of `clip_scores`' batches; a metric missing from any batch is None."""
    summary: dict = {"num_clips": int(sum(len(s["psnr"]) for s in per_clip))}
    for key in ("psnr", "psnr_copy_start", "ssim", "ssim_copy_start", "lpips"):
        parts = [s[key] for s in per_clip]
        missing = not parts or any(p is None for p in parts)
        summary[key] = None if missing else float(np.mean(np.concatenate(parts)))
    return summary


def frames_at_model_size(clips: Sequence[ReplayClip], camera: int, size) -> np.ndarray:
    """The clips' recorded frames of one camera at the world model's size: (N, K, h, w, 3)."""
    return resize_frames(np.stack([c.recorded[:, camera] for c in clips]), tuple(size))


def start_frames_at_model_size(clips: Sequence[ReplayClip], camera: int, size) -> np.ndarray:
    return resize_frames(np.stack([c.start.images[camera] for c in clips]), tuple(size))


def held_frames(start: np.ndarray, predicted: np.ndarray, stride: int) -> np.ndarray:
    """15 Hz frames of an imagined clip, as `label` sees imagined episodes: step t shows
    world-model frame floor(t / stride) (zero-order hold). start (H, W, 3), predicted
    (K, H, W, 3) -> (K * stride, H, W, 3)."""
    frames = np.concatenate([start[None], predicted])
    return frames[np.arange(len(predicted) * stride) // stride]


def imagined_outcomes(
    clip_ids: Sequence[str],
    p_yes: np.ndarray | None,
    alpha: float,
    labels: Mapping[str, bool],
) -> tuple[np.ndarray, list[str]]:
    """Each clip's imagined outcome and who decided it: a person's label where `labels` has the
    clip ("label_file"), else the reward model's P(yes) > alpha ("reward_model", Eq. 3).
    ValueError for a clip neither decides."""
    outcomes, decided_by = [], []
    for i, name in enumerate(clip_ids):
        if name in labels:
            outcomes.append(bool(labels[name]))
            decided_by.append("label_file")
        elif p_yes is not None:
            outcomes.append(bool(p_yes[i] > alpha))
            decided_by.append("reward_model")
        else:
            raise ValueError(f"clip {name!r}: no label in the label file and no reward model")
    return np.asarray(outcomes, bool), decided_by


def event_confusion(recorded: np.ndarray, imagined: np.ndarray) -> dict:
    """Table 1's event confusion: the imagined outcome as the decision, the recorded one as the
    truth (TP: both success; FN: recorded success imagined as failure; FP: a failure imagined
    as success, the over-optimism VLAW's online data removes)."""
    return confusion(imagined, recorded)
