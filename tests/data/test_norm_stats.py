"""Streaming norm stats equal numpy's on the same data; openpi's norm_stats.json layout."""

import json

import numpy as np
import pytest

from vlaw.data import droid, norm_stats, rlds_read


def _batches(rng) -> list[np.ndarray]:
    # Later batches widen the range, exercising the histogram re-binning.
    return [
        rng.normal(0, 1, (500, 3)),
        rng.normal(0.5, 3, (2000, 3)),
        rng.uniform(-10, 12, (300, 3)),
        rng.normal(0, 1, (1000, 3)),
    ]


def test_running_stats_match_numpy():
    rng = np.random.default_rng(0)
    batches = _batches(rng)
    running = norm_stats.RunningStats(num_bins=5000)
    for batch in batches:
        running.update(batch)
    stats = running.get()
    data = np.concatenate(batches)
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.std, data.std(0), rtol=1e-6)
    # Documented histogram tolerance: one bin per range change (3 here) plus one.
    bin_width = (data.max(0) - data.min(0)) / 5000
    for q, got in ((0.01, stats.q01), (0.99, stats.q99)):
        assert np.all(np.abs(got - np.quantile(data, q, axis=0)) <= 4 * bin_width), q


def test_quantiles_within_one_bin_without_range_changes():
    rng = np.random.default_rng(1)
    data = rng.standard_t(3, (20_000, 2))
    running = norm_stats.RunningStats(num_bins=1000)
    running.update(data)  # one batch: the range is fixed from the start
    stats = running.get()
    bin_width = (data.max(0) - data.min(0)) / 1000
    assert np.all(np.abs(stats.q01 - np.quantile(data, 0.01, axis=0)) <= bin_width)
    assert np.all(np.abs(stats.q99 - np.quantile(data, 0.99, axis=0)) <= bin_width)


def test_constant_dimension():
    running = norm_stats.RunningStats()
    running.update(np.stack([np.full(100, 2.5), np.arange(100.0)], -1))
    stats = running.get()
    assert stats.std[0] == 0 and stats.q01[0] == pytest.approx(2.5)


def test_json_layout_round_trip(tmp_path):
    stats = {
        "state": norm_stats.NormStats(
            mean=np.arange(8.0), std=np.ones(8), q01=-np.ones(8), q99=np.ones(8)
        ),
        "actions": norm_stats.NormStats(mean=np.zeros(8), std=np.ones(8)),
    }
    path = str(tmp_path / "assets" / "norm_stats.json")
    norm_stats.save_norm_stats(path, stats)
    with open(path) as f:
        payload = json.load(f)
    assert list(payload) == ["norm_stats"]
    assert set(payload["norm_stats"]["state"]) == {"mean", "std", "q01", "q99"}
    assert payload["norm_stats"]["state"]["mean"] == list(range(8))
    loaded = norm_stats.load_norm_stats(path)
    np.testing.assert_array_equal(loaded["state"].q99, np.ones(8))
    assert loaded["actions"].q01 is None


def test_dataset_stats_equal_numpy(vlaw_dataset, vlaw_episodes):
    stats = norm_stats.compute_norm_stats(vlaw_dataset)
    episodes = list(rlds_read.read_episodes(vlaw_dataset))
    for key, arrays in (
        ("state", [droid.policy_state(e.observation) for e in episodes]),
        ("actions", [droid.policy_actions(e.action_dict) for e in episodes]),
    ):
        data = np.concatenate(arrays).astype(np.float64)
        np.testing.assert_allclose(stats[key].mean, data.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats[key].std, data.std(0), rtol=1e-5)
        width = (data.max(0) - data.min(0)) / 5000
        assert np.all(np.abs(stats[key].q01 - np.quantile(data, 0.01, axis=0)) <= width + 1e-6)
        assert np.all(np.abs(stats[key].q99 - np.quantile(data, 0.99, axis=0)) <= width + 1e-6)
    successes = norm_stats.compute_norm_stats(vlaw_dataset, only_successes=True)
    kept = np.concatenate([e.policy_state() for e in vlaw_episodes if e.metadata.success])
    np.testing.assert_allclose(successes["state"].mean, kept.mean(0), rtol=1e-5, atol=1e-6)
