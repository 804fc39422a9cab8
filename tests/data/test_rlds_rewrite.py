"""rewrite_episode_metadata: only the named metadata changes, atomically, and never partially."""

import os
import shutil

import numpy as np
import pytest

from vlaw.data import rlds_read, rlds_write


@pytest.fixture
def dataset_copy(vlaw_dataset, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(vlaw_dataset, copy)
    return copy


def _raw_episodes(dataset_dir: str) -> list[dict]:
    return list(rlds_read.iter_raw_episodes(rlds_read.open_dataset(dataset_dir)))


def _score_updates(dataset_dir: str) -> dict:
    layout = rlds_read.open_dataset(dataset_dir)
    keys = [
        (path, index)
        for path, length in zip(layout.shard_paths, layout.shard_lengths, strict=True)
        for index in range(length)
    ]
    return {
        key: {"episode_metadata/reward_score": 0.25 * i, "episode_metadata/kept": i % 3 == 0}
        for i, key in enumerate(keys)
    }


def test_rewrites_only_the_named_fields(dataset_copy, tmp_path):
    before = _raw_episodes(dataset_copy)
    updates = _score_updates(dataset_copy)
    rlds_write.rewrite_episode_metadata(dataset_copy, updates)
    after = _raw_episodes(dataset_copy)
    assert len(after) == len(before) == len(updates)
    changed = {"episode_metadata/reward_score", "episode_metadata/kept"}
    for old, new in zip(before, after, strict=True):
        update = updates[(new["shard_path"], new["record_index"])]
        assert (
            float(new["episode_metadata/reward_score"]) == update["episode_metadata/reward_score"]
        )
        assert bool(new["episode_metadata/kept"]) == update["episode_metadata/kept"]
        for key in old.keys() - changed:
            # Images stay the same JPEG bytes: nothing is decoded and re-encoded.
            np.testing.assert_array_equal(np.asarray(new[key]), np.asarray(old[key]), err_msg=key)
    assert sorted(os.listdir(tmp_path)) == ["copy"]  # no temp or backup directory left


def test_refuses_partial_or_unknown_updates(dataset_copy, tmp_path):
    scores_before = [float(r["episode_metadata/reward_score"]) for r in _raw_episodes(dataset_copy)]
    updates = _score_updates(dataset_copy)
    missing = dict(list(updates.items())[1:])
    with pytest.raises(KeyError, match="no update"):
        rlds_write.rewrite_episode_metadata(dataset_copy, missing)
    step_field = {key: {"steps/is_first": 1} for key in updates}
    with pytest.raises(rlds_read.DataError, match="not an episode field"):
        rlds_write.rewrite_episode_metadata(dataset_copy, step_field)
    # Nothing was changed, and nothing was left behind.
    scores_after = [float(r["episode_metadata/reward_score"]) for r in _raw_episodes(dataset_copy)]
    np.testing.assert_array_equal(scores_after, scores_before)
    assert sorted(os.listdir(tmp_path)) == ["copy"]


def test_refuses_a_shard_cut_short(dataset_copy):
    updates = _score_updates(dataset_copy)
    shard = rlds_read.open_dataset(dataset_copy).shard_paths[2]
    open(shard, "wb").close()  # 0 bytes: clean framing, 2 episodes missing
    with pytest.raises(
        rlds_read.DataError, match=r"holds 0 record\(s\), dataset_info.json lists 2"
    ):
        rlds_write.rewrite_episode_metadata(dataset_copy, updates)
