"""The `label` phase on `experiments/scoop.py:tiny` data from `collect`, scored zero-shot by a
reward model imported through `reward.train.init_from` (no training here: that is
tests/phases/test_train_reward.py): scores and kept flags written back losslessly, confusion
matrices that add up, a clear error for a missing dataset."""

import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from vlaw import pipeline
from vlaw.agents import reward
from vlaw.data import rlds_read
from vlaw.phases import label
from vlaw.train import checkpoints

DIRS = ("iter_{iteration:02d}/real", "demos")


@pytest.fixture(scope="module")
def collected(tmp_path_factory, record_real_rollouts):
    from experiments.scoop import get_config

    workdir = str(tmp_path_factory.mktemp("label"))
    config = get_config("tiny")
    config.reward.progress = False
    pipeline.run_phase("collect", config, workdir, iteration=0)
    record_real_rollouts(config, workdir, 0)
    # A vlaw checkpoint of random tiny weights, imported as `init_from` (zero-shot labelling).
    model_cfg = reward.model_config(config)
    params = nn.unbox(reward.init_fn_for(model_cfg)(jax.random.PRNGKey(3)))
    checkpoints.save_params(os.path.join(workdir, "pretrained"), 0, params, config.ckpt)
    config.reward.train.init_from = os.path.join(workdir, "pretrained")
    return config, workdir


def _raw(dataset_dir):
    layout = rlds_read.open_dataset(dataset_dir)
    return list(rlds_read.iter_raw_episodes(layout))


def test_missing_dataset_dir_is_named(collected):
    config, workdir = collected
    config = config.copy_and_resolve_references()
    config.reward.label_dataset_dirs = ("iter_{iteration:02d}/synthetic",)  # the default
    with pytest.raises(FileNotFoundError, match="iter_00/synthetic"):
        label.label_phase(config, workdir, 0)  # imagine's output, not there yet


def test_label_writes_scores_and_kept_losslessly(collected):
    config, workdir = collected
    config.reward.label_dataset_dirs = DIRS
    dirs = label.label_dataset_dirs(config, workdir, 0)
    before = [_raw(d) for d in dirs]
    summary = label.label_phase(config, workdir, 0)
    assert summary["reward_params"] == config.reward.train.init_from
    after = [_raw(d) for d in dirs]
    scores = []
    for old_episodes, new_episodes in zip(before, after):
        assert len(old_episodes) == len(new_episodes)
        for old, new in zip(old_episodes, new_episodes):
            for key, value in old.items():
                if key in (label.SCORE_FIELD, label.KEPT_FIELD, "shard_path"):
                    continue
                np.testing.assert_array_equal(new[key], value, err_msg=key)  # JPEGs included
            score = float(new[label.SCORE_FIELD])
            assert 0.0 <= score <= 1.0
            assert bool(new[label.KEPT_FIELD]) == (score > config.reward.alpha)
            scores.append(score)
    assert summary["num_episodes"] == len(scores) == 4
    assert summary["num_kept"] == sum(s > config.reward.alpha for s in scores)
    report = summary["confusion"]
    assert report["num_known"] == 4  # real rollouts and demos carry the station's labels
    for decision in ("alpha", "argmax"):
        assert sum(report[decision][k] for k in ("tp", "fp", "tn", "fn")) == 4
    # No leftovers of the swap beside the datasets.
    for d in dirs:
        assert not [e for e in os.listdir(os.path.dirname(d)) if ".label-" in e]


def test_kept_follows_alpha_and_plain_tfds_reads_the_result(collected):
    """Relabel with alpha between two episodes' scores: both decisions appear, and the
    metadata read back by vlaw's reader and by plain tfds agree."""
    import tensorflow_datasets as tfds

    config, workdir = collected
    config.reward.label_dataset_dirs = DIRS
    dirs = label.label_dataset_dirs(config, workdir, 0)
    first = label.label_phase(config, workdir, 0)
    compiled = reward.answer_probabilities._cache_size()
    scores = np.asarray([e.metadata.reward_score for e in rlds_read.read_episodes(dirs)])
    assert len(np.unique(scores)) > 1
    config.reward.alpha = float(np.median(scores))
    second = label.label_phase(config, workdir, 0)
    assert reward.answer_probabilities._cache_size() == compiled  # one shape, one compilation
    episodes = list(rlds_read.read_episodes(dirs))
    kept = np.asarray([e.metadata.kept for e in episodes])
    np.testing.assert_allclose([e.metadata.reward_score for e in episodes], scores, rtol=1e-6)
    np.testing.assert_array_equal(kept, scores > config.reward.alpha)
    assert 0 < second["num_kept"] < len(scores) and first["num_kept"] == 0
    plain = tfds.builder_from_directory(dirs[0]).as_dataset(split="train")
    stored = [bool(x["episode_metadata"]["kept"].numpy()) for x in plain]
    np.testing.assert_array_equal(stored, kept[: len(stored)])
