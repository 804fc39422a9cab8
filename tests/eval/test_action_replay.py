"""Action replay (Table 1) on small synthetic inputs: which recorded frames and actions a clip
holds, the scores of known differences over the valid frames only, and the event confusion
with a label file taking precedence over the reward model."""

import numpy as np
import pytest

from vlaw.config import experiment_config
from vlaw.data import droid
from vlaw.data.episode import Episode, EpisodeMetadata
from vlaw.eval import action_replay as replay


def _episode(num_steps: int = 20, size: int = 16, success: bool = True) -> Episode:
    """Frames whose every pixel holds the step index (camera v adds 100 * v), so a test can
    read back which step a frame came from."""
    steps = np.arange(num_steps, dtype=np.uint8)
    observation = {
        f"observation/{name}": np.broadcast_to(
            (steps + 100 * v)[:, None, None, None], (num_steps, size, size, 3)
        ).copy()
        for v, name in enumerate(droid.CAMERA_NAMES)
    }
    observation["observation/joint_position"] = np.tile(np.arange(7.0), (num_steps, 1))
    observation["observation/gripper_position"] = np.full((num_steps, 1), 0.5)
    observation["observation/cartesian_position"] = np.zeros((num_steps, 6))
    actions = {
        "action_dict/joint_velocity": np.tile(steps[:, None] / 100.0, (1, 7)),
        "action_dict/gripper_position": np.full((num_steps, 1), 0.9),
    }
    for name in ("cartesian_position", "cartesian_velocity", "joint_position"):
        actions[f"action_dict/{name}"] = np.zeros((num_steps, 7 if "joint" in name else 6))
    actions["action_dict/gripper_velocity"] = np.zeros((num_steps, 1))
    metadata = EpisodeMetadata(success=success, source="evaluate", task="scoop", episode_id="e-1")
    return Episode("scoop the beans", observation, actions, metadata)


def test_a_clip_holds_the_recorded_frames_of_its_world_model_steps_and_hold_padding():
    episode = _episode(num_steps=20)
    clip = replay.clip_from_episode(episode, start_step=5, num_steps=24, stride=3, clip_name="c")
    assert clip.actions.shape == (24, 8)
    np.testing.assert_allclose(clip.actions[:15, 0], np.arange(5, 20) / 100.0)  # recorded
    np.testing.assert_array_equal(clip.actions[15:, :7], 0.0)  # then the arm holds still
    np.testing.assert_allclose(clip.actions[15:, 7], 0.9)  # with the last gripper command
    # World-model frame k shows step 5 + 3k: steps 8, 11, ..., 29; 20+ are past the recording.
    assert clip.recorded.shape == (8, 3, 16, 16, 3)
    np.testing.assert_array_equal(clip.valid, [True] * 4 + [False] * 4)
    np.testing.assert_array_equal(clip.recorded[:4, 0, 0, 0, 0], [8, 11, 14, 17])
    np.testing.assert_array_equal(clip.recorded[:4, 2, 0, 0, 0], [208, 211, 214, 217])
    assert clip.start.images[0, 0, 0, 0] == 5 and clip.start_step == 5
    assert clip.success and clip.task == "scoop"


def test_clips_spread_over_episodes_and_whole_episodes_start_at_their_first_frame():
    episodes = [_episode(num_steps=40), _episode(num_steps=40)]
    clips = list(replay.replay_clips(episodes, num_clips=3, num_episodes=2, num_steps=12, stride=3))
    assert [c.start_step for c in clips] == [0, 28, 0]  # 2 per episode, stopped at 3
    assert clips[0].clip_id == "e-1@0" and clips[1].clip_id == "e-1@28"
    whole = list(
        replay.replay_clips(
            episodes, num_clips=5, num_episodes=2, num_steps=48, stride=3, from_first_step=True
        )
    )
    assert [c.start_step for c in whole] == [0, 0]


def test_recorded_actions_are_handed_out_chunk_by_chunk():
    actions = np.arange(2 * 24 * 8, dtype=np.float32).reshape(2, 24, 8)
    policy = replay.RecordedActions(actions, steps_per_call=12)
    np.testing.assert_array_equal(policy([None, None]), actions[:, :12])
    np.testing.assert_array_equal(policy([None, None], rng=None), actions[:, 12:])
    with pytest.raises(ValueError, match="no recorded chunk 2"):
        policy([None, None])


def test_chunks_cover_the_replayed_seconds():
    config = experiment_config(("scoop",), "tiny")
    assert replay.chunks_for_seconds(config, 2.0) == 3  # 30 steps in chunks of 12
    assert replay.chunks_for_seconds(config, 5.0) == 7  # Table 1's 5 s: 75 steps
    assert replay.chunks_for_seconds(config, 0.8) == 1


def test_scores_average_valid_frames_then_clips():
    recorded = np.zeros((2, 3, 16, 16, 3), np.uint8)
    predicted = np.full_like(recorded, 10)
    predicted[0, 2] = 200  # outside the recording: must not count
    valid = np.array([[True, True, False], [True, True, True]])
    start = np.zeros((2, 16, 16, 3), np.uint8)
    scores = replay.clip_scores(predicted, recorded, valid, start)
    expected = 10 * np.log10(255.0**2 / 100.0)
    np.testing.assert_allclose(scores["psnr"], [expected, expected], rtol=1e-5)
    # The start equals every recorded frame: +inf per frame, counted as the cap.
    np.testing.assert_array_equal(scores["psnr_copy_start"], replay.PSNR_CAP_DB)
    assert scores["ssim"] is not None and np.all(scores["ssim"] < 1.0)
    np.testing.assert_allclose(scores["ssim_copy_start"], 1.0, atol=1e-6)  # start == recording
    assert scores["lpips"] is None  # no weights given
    same = replay.clip_scores(recorded, recorded, valid, start)
    np.testing.assert_allclose(same["ssim"], 1.0, atol=1e-6)
    summary = replay.summarize_scores([scores, scores])
    assert summary["num_clips"] == 4 and summary["lpips"] is None
    np.testing.assert_allclose(summary["psnr"], expected, rtol=1e-5)
    crop = (..., slice(0, 8), slice(0, 8), slice(None))
    small = replay.clip_scores(predicted[crop], recorded[crop], valid, start[crop])
    assert small["ssim"] is None and small["ssim_copy_start"] is None  # 8x8 < SSIM's window
    with pytest.raises(ValueError, match="at least one"):
        replay.clip_scores(predicted, recorded, np.zeros_like(valid), start)


def test_held_frames_repeat_each_world_model_frame_for_its_robot_steps():
    start = np.zeros((2, 2, 3), np.uint8)
    predicted = np.stack([np.full((2, 2, 3), k, np.uint8) for k in (1, 2)])
    held = replay.held_frames(start, predicted, stride=3)
    np.testing.assert_array_equal(held[:, 0, 0, 0], [0, 0, 0, 1, 1, 1])


def test_event_confusion_counts_and_a_label_file_overrides_the_reward_model():
    ids = ["a@0", "b@0", "c@0", "d@0", "e@0"]
    p_yes = np.array([0.9, 0.1, 0.95, 0.2, 0.5])
    outcomes, decided_by = replay.imagined_outcomes(ids, p_yes, 0.8, {"e@0": True})
    np.testing.assert_array_equal(outcomes, [True, False, True, False, True])
    assert decided_by == ["reward_model"] * 4 + ["label_file"]
    recorded = np.array([True, True, False, False, False])
    counts = replay.event_confusion(recorded, outcomes)
    assert (counts["tp"], counts["fn"], counts["tn"], counts["fp"]) == (1, 1, 1, 2)
    assert counts["precision"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="'b@0'"):
        replay.imagined_outcomes(ids, None, 0.8, {"a@0": True})
