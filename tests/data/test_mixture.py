"""Weighted mixtures (Eq. 2): measured frequencies match the weights."""

import numpy as np
import pytest

from vlaw.data import mixture, policy_windows, rlds_write
from vlaw.data.tensorflow_cpu import import_tensorflow


def _within(count: int, total: int, probability: float) -> bool:
    """`count` of `total` draws is within 4 standard deviations of `probability`."""
    sigma = np.sqrt(probability * (1 - probability) / total)
    return abs(count / total - probability) < 4 * sigma


def test_sample_mixture_frequencies():
    tf = import_tensorflow()
    weights = [1.0, 0.25, 2.0]
    datasets = [tf.data.Dataset.from_tensors(np.int64(i)).repeat() for i in range(3)]
    mixed = mixture.sample_mixture(datasets, weights, seed=0).batch(20_000)
    draws = next(mixed.as_numpy_iterator())
    counts = np.bincount(draws, minlength=3)
    probabilities = mixture.normalized_weights(weights)
    for count, probability in zip(counts, probabilities, strict=True):
        assert _within(count, len(draws), probability), (counts, probabilities)


def test_policy_mixture_of_two_datasets(tmp_path, make_episodes):
    real, droid_like = str(tmp_path / "real"), str(tmp_path / "droid")
    rlds_write.write_episodes(real, make_episodes(2, instruction="real"), episodes_per_shard=1)
    rlds_write.write_episodes(droid_like, make_episodes(2, seed=9, instruction="droid"))
    droid_weight = 0.5  # lambda of Eq. 2
    batches = policy_windows.policy_batches(
        [mixture.Source(real, 1.0, "real"), mixture.Source(droid_like, droid_weight, "droid")],
        batch_size=50,
        shuffle_buffer=16,
        process_index=0,
        process_count=1,
    )
    prompts = np.concatenate([next(batches)["prompt"] for _ in range(16)])
    share = np.mean(prompts == b"droid")
    assert _within(int(share * len(prompts)), len(prompts), droid_weight / (1 + droid_weight))


def test_real_and_droid_sources():
    assert [s.name for s in mixture.real_and_droid_sources(["a", "b"], "", 0.3)] == ["real"]
    droid_path = "gs://gresearch/robotics/droid/1.0.1"
    real, droid = mixture.real_and_droid_sources(["a"], droid_path, 0.3)
    assert real.dataset_dirs == ("a",) and real.weight == 1.0
    assert droid.dataset_dirs == (droid_path,) and droid.weight == 0.3


def test_bad_weights():
    with pytest.raises(ValueError, match="positive"):
        mixture.Source("a", 0.0)
    with pytest.raises(ValueError, match="positive"):
        mixture.normalized_weights([1.0, -1.0])
