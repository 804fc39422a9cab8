"""Window pipelines: shapes, the values each window holds, determinism, exact resume, hosts."""

import json

import numpy as np
import pytest

from vlaw.data import (
    droid,
    policy_windows,
    reward_windows,
    rlds_read,
    rlds_write,
    transforms,
    windows,
    world_model_windows,
)

HOST = {"process_index": 0, "process_count": 1}


@pytest.fixture(scope="module")
def read_back(vlaw_dataset):
    """The dataset's episodes as vlaw reads them (decoded exactly as the pipelines decode)."""
    return list(rlds_read.read_episodes(vlaw_dataset))


def _locate(read_back, state_row: np.ndarray, state_of) -> tuple[int, int]:
    """(episode, step) whose `state_of(episode)[step]` equals `state_row` (rows are unique)."""
    for e, episode in enumerate(read_back):
        matches = np.flatnonzero((state_of(episode) == state_row).all(-1))
        if len(matches):
            return e, int(matches[0])
    raise AssertionError("row not found in any episode")


def _frames(episode, steps) -> np.ndarray:
    """(len(steps), V, H, W, 3) frames of the three cameras."""
    return np.stack(
        [episode.observation[f"observation/{name}"][steps] for name in droid.CAMERA_NAMES], 1
    )


def test_world_model_windows(vlaw_dataset, read_back):
    num_history, num_future, stride = 3, 4, 2
    batches = world_model_windows.world_model_batches(
        vlaw_dataset,
        batch_size=3,
        num_history=num_history,
        num_future=num_future,
        frame_stride=stride,
        history_spacing=(1, 2),
        no_history_probability=0.3,
        **HOST,
    )
    h, w = read_back[0].image_shape[:2]
    spacings_seen = set()
    for _ in range(4):
        batch = next(batches)
        assert batch["history_frames"].shape == (3, num_history, 3, h, w, 3)
        assert batch["current_frame"].shape == (3, 3, h, w, 3)
        assert batch["future_frames"].shape == (3, num_future - 1, 3, h, w, 3)
        assert batch["history_poses"].shape == (3, num_history, 7)
        assert batch["future_poses"].shape == (3, num_future, 7)
        assert batch["action_chunk"].shape == (3, (num_future - 1) * stride, 8)
        assert batch["current_frame"].dtype == np.uint8
        for i in range(3):
            poses_of = lambda episode: droid.world_model_poses(episode.observation)
            e, t = _locate(read_back, batch["future_poses"][i, 0], poses_of)
            episode, poses = read_back[e], poses_of(read_back[e])
            candidates = {
                spacing: transforms.world_model_indices(
                    episode.num_steps,
                    num_history=num_history,
                    num_future=num_future,
                    frame_stride=stride,
                    history_spacing=spacing,
                    starts=np.array([t]),
                )
                for spacing in (0, 1, 2)
            }
            matching = [
                spacing
                for spacing, index in candidates.items()
                if np.array_equal(batch["history_poses"][i], poses[index["history"][0]])
            ]
            assert matching, "history matches none of the allowed spacings"
            spacings_seen.update(matching if len(matching) == 1 else ())
            index = candidates[matching[0]]
            np.testing.assert_array_equal(batch["future_poses"][i], poses[index["future"][0]])
            actions = episode.policy_actions()[index["actions"][0]]
            np.testing.assert_array_equal(batch["action_chunk"][i], actions)
            np.testing.assert_array_equal(batch["current_frame"][i], _frames(episode, [t])[0])
            np.testing.assert_array_equal(
                batch["history_frames"][i], _frames(episode, index["history"][0])
            )
            np.testing.assert_array_equal(
                batch["future_frames"][i], _frames(episode, index["future"][0][1:])
            )
    assert len(spacings_seen) >= 2


def test_world_model_indices_follow_ctrl_world():
    index = transforms.world_model_indices(
        100, num_history=6, num_future=5, frame_stride=3, history_spacing=4, starts=np.array([80])
    )
    # History every 4 frames of 3 steps back, oldest first; future every 3 steps from now.
    assert index["history"][0].tolist() == [8, 20, 32, 44, 56, 68]
    assert index["future"][0].tolist() == [80, 83, 86, 89, 92]
    assert index["actions"][0].tolist() == list(range(80, 92))
    early = transforms.world_model_indices(
        10, num_history=2, num_future=3, frame_stride=3, history_spacing=1, starts=np.array([1, 9])
    )
    assert early["history"].tolist() == [[0, 0], [3, 6]]  # clipped into the episode
    assert early["future"].tolist() == [[1, 4, 7], [9, 9, 9]]


def test_policy_windows(vlaw_dataset, read_back):
    horizon = 6
    batches = policy_windows.policy_batches(
        vlaw_dataset, batch_size=16, action_horizon=horizon, shuffle_buffer=64, **HOST
    )
    seen_end_chunk = False
    for _ in range(3):
        batch = next(batches)
        assert batch["images"].shape == (16, 3, *read_back[0].image_shape)
        assert batch["state"].shape == (16, 8) and batch["state"].dtype == np.float32
        assert batch["actions"].shape == (16, horizon, 8)
        assert batch["prompt"].shape == (16,) and batch["weight"].dtype == np.float32
        for i in range(16):
            e, t = _locate(read_back, batch["state"][i], lambda ep: ep.policy_state())
            episode = read_back[e]
            chunk = transforms.chunk_indices(episode.num_steps, horizon, np.array([t]))[0]
            np.testing.assert_array_equal(batch["actions"][i], episode.policy_actions()[chunk])
            seen_end_chunk |= t + horizon > episode.num_steps
            np.testing.assert_array_equal(batch["images"][i], _frames(episode, [t])[0])
            assert batch["prompt"][i].decode() == episode.instruction
            assert batch["weight"][i] == float(episode.metadata.success)  # Eq. 4
    assert seen_end_chunk


def test_end_chunks_repeat_the_final_action():
    actions = np.arange(4)[:, None] * np.ones((1, 2))
    chunks = transforms.chunk_actions(actions, 3)
    assert chunks[:, :, 0].tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3]]


def test_policy_drop_failures(vlaw_dataset):
    batches = policy_windows.policy_batches(
        vlaw_dataset, batch_size=16, drop_failures=True, shuffle_buffer=16, **HOST
    )
    for _ in range(4):
        assert (next(batches)["weight"] == 1.0).all()


def test_reward_windows(vlaw_dataset, read_back):
    camera = "wrist_image_left"
    batches = reward_windows.reward_batches(vlaw_dataset, batch_size=4, camera=camera, **HOST)
    batch = next(batches)
    assert batch["frames"].shape == (4, 16, *read_back[0].image_shape)
    assert batch["label"].dtype == np.bool_ and batch["instruction"].shape == (4,)
    for i in range(4):
        matches = [
            episode
            for episode in read_back
            if np.array_equal(
                episode.observation[f"observation/{camera}"][
                    transforms.uniform_frame_indices(episode.num_steps, 16)
                ],
                batch["frames"][i],
            )
        ]
        assert matches and batch["label"][i] == matches[0].metadata.success
        assert batch["instruction"][i].decode() == matches[0].instruction


def test_uniform_frame_indices():
    assert transforms.uniform_frame_indices(100, 16).tolist() == [
        round(x) for x in np.linspace(0, 99, 16)
    ]
    assert transforms.uniform_frame_indices(31, 16).tolist() == list(range(0, 31, 2))
    assert transforms.uniform_frame_indices(5, 16)[-1] == 4


def _take(batches, count: int) -> list[dict]:
    return [next(batches) for _ in range(count)]


def _assert_same(left: list[dict], right: list[dict]) -> None:
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], key)


@pytest.mark.parametrize("kind", ["world_model", "policy", "reward"])
def test_deterministic_and_exact_resume(vlaw_dataset, kind):
    make = {
        "world_model": lambda seed: world_model_windows.world_model_batches(
            vlaw_dataset,
            batch_size=2,
            seed=seed,
            shuffle_buffer=32,
            history_spacing=(1, 2),
            no_history_probability=0.2,
            **HOST,
        ),
        "policy": lambda seed: policy_windows.policy_batches(
            vlaw_dataset, batch_size=4, seed=seed, shuffle_buffer=32, **HOST
        ),
        "reward": lambda seed: reward_windows.reward_batches(
            vlaw_dataset, batch_size=2, seed=seed, shuffle_buffer=8, **HOST
        ),
    }[kind]
    straight = _take(make(3), 7)  # more than one pass over the 6 episodes for `reward`
    _assert_same(straight, _take(make(3), 7))

    interrupted = make(3)
    _take(interrupted, 4)
    state = json.loads(json.dumps(interrupted.state()))  # what a checkpoint stores
    assert state == {"kind": kind, "seed": 3, "batches": 4}
    resumed = make(3)
    resumed.restore(state)
    _assert_same(straight[4:], _take(resumed, 3))

    other_seed = _take(make(4), 7)
    differs = lambda a, b: any(not np.array_equal(a[k], b[k]) for k in a)
    assert any(differs(a, b) for a, b in zip(straight, other_seed, strict=True))
    with pytest.raises(ValueError, match="seed"):
        make(4).restore(state)


def test_hosts_read_disjoint_shards(vlaw_dataset):
    layout = rlds_read.open_dataset(vlaw_dataset)
    per_host = [windows.host_shards([layout], i, 2) for i in range(2)]
    paths = [{path for _, path in shards} for shards in per_host]
    assert paths[0].isdisjoint(paths[1])
    assert paths[0] | paths[1] == set(layout.shard_paths)
    with pytest.raises(ValueError, match="cannot feed 4 hosts"):
        windows.host_shards([layout], 0, 4)

    # Each host's batches come only from its own shards.
    for host in range(2):
        batches = policy_windows.policy_batches(
            vlaw_dataset, batch_size=8, process_index=host, process_count=2
        )
        own = [
            rlds_read.episode_from_raw(raw, layout)
            for raw in rlds_read.iter_raw_episodes(layout, [p for _, p in per_host[host]])
        ]
        own_states = np.concatenate([e.policy_state() for e in own])
        for row in next(batches)["state"]:
            assert (own_states == row).all(-1).any()


def test_mixed_image_sizes_need_image_size(vlaw_dataset, tmp_path, make_episodes):
    other = str(tmp_path / "small")
    rlds_write.write_episodes(other, make_episodes(2, seed=50, image_shape=(16, 16, 3)))
    with pytest.raises(ValueError, match="image_size"):
        policy_windows.policy_batches([vlaw_dataset, other], batch_size=2, **HOST)
    batch = next(
        policy_windows.policy_batches(
            [vlaw_dataset, other], batch_size=4, image_size=(24, 24), **HOST
        )
    )
    assert batch["images"].shape == (4, 3, 24, 24, 3)


_DIGEST_SOURCE = """
import hashlib

import numpy as np

from vlaw.data import policy_windows


def first_batches_digest(dataset_dir):
    batches = policy_windows.policy_batches(
        dataset_dir, batch_size=4, seed=5, shuffle_buffer=32, process_index=0, process_count=1
    )
    digest = hashlib.sha256()
    for _ in range(3):
        batch = next(batches)
        for key in sorted(batch):
            value = batch[key]
            digest.update(b"".join(value) if value.dtype == object else value.tobytes())
    return digest.hexdigest()
"""


def test_same_batches_in_a_fresh_process(vlaw_dataset):
    """A resumed run is a new process: the pipeline must not depend on process state."""
    import subprocess
    import sys

    namespace = {}
    exec(_DIGEST_SOURCE, namespace)
    here = namespace["first_batches_digest"](vlaw_dataset)
    code = _DIGEST_SOURCE + f"\nprint(first_batches_digest({vlaw_dataset!r}))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert result.stdout.strip().splitlines()[-1] == here


def test_episode_weight_is_eq4_binary_weight():
    from vlaw.data.episode import EpisodeMetadata

    def weight(**fields):
        return policy_windows.episode_weight(EpisodeMetadata(task="scoop", **fields))

    assert weight(success=True, source="real") == 1.0
    assert weight(success=False, source="demo") == 0.0
    # Synthetic rollouts are weighted by the reward model's verdict, not a stored label.
    assert weight(success=False, source="synthetic", kept=True) == 1.0
    assert weight(success=True, source="synthetic", kept=False) == 0.0


def test_failed_demos_weighs_every_demonstration_and_no_rollout():
    from vlaw.data.episode import EpisodeMetadata

    def weight(**fields):
        metadata = EpisodeMetadata(task="scoop", **fields)
        return policy_windows.episode_weight(metadata, failed_demos=True)

    assert weight(success=False, source="demo") == 1.0
    assert weight(success=True, source="demo") == 1.0
    # Rollouts keep Eq. 4's weight: a failed real rollout's actions are the policy's mistakes.
    assert weight(success=False, source="real") == 0.0
    assert weight(success=False, source="evaluate") == 0.0
    assert weight(success=True, source="synthetic", kept=False) == 0.0
