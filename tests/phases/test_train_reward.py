"""`train_reward` then `label` on `experiments/scoop.py:tiny` data (demonstrations and
iteration 1's real rollouts), in process: checkpoint written, train accuracy reported, exact
resume, a state.json no-op, later iterations keep the model unless told to retrain."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from vlaw import pipeline
from vlaw import workdir as workdir_lib
from vlaw.agents import reward
from vlaw.data import rlds_read, rlds_write
from vlaw.phases.train_reward import train_reward_phase

CHECKPOINTS = ("checkpoints", "reward", "iter_01")


def _tiny_config():
    from experiments.scoop import get_config

    config = get_config("tiny")
    # 8 fake devices: data=2 carries the batch of 2, tensor=4 shards the model's wide matrices.
    config.mesh.tensor = 4
    config.reward.progress = False
    config.reward.label_dataset_dirs = ("iter_{iteration:02d}/real", "demos")
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, record_real_rollouts):
    workdir = str(tmp_path_factory.mktemp("reward"))
    config = _tiny_config()
    pipeline.run_phase("collect", config, workdir, iteration=0)
    record_real_rollouts(config, workdir, 1)
    summary = pipeline.run_phase("train_reward", config, workdir, iteration=1)
    return config, workdir, summary


def _params(config, workdir):
    directory = workdir_lib.checkpoint_dir(workdir, "reward", 1)
    params, _ = reward.load_trained_params(config, directory)
    return jax.device_get(params)


def test_train_reward_writes_checkpoints_and_reports_accuracy(trained):
    config, workdir, summary = trained
    directory = os.path.join(workdir, *CHECKPOINTS)
    assert summary["trained"] and summary["step"] == config.reward.train.steps
    assert summary["init"] == "scratch"
    steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
    assert steps == [2, 4]  # save_every_steps=2 at tiny
    assert summary["dataset_dirs"] == [
        os.path.join(workdir, "demos"),
        os.path.join(workdir, "iter_01", "real"),
    ]
    episodes = rlds_read.count_episodes(summary["dataset_dirs"])
    for decision in ("alpha", "argmax"):
        counts = summary["train_confusion"][decision]
        assert sum(counts[k] for k in ("tp", "fp", "tn", "fn")) == episodes
    assert 0.0 <= summary["train_accuracy_alpha"] <= 1.0
    assert np.isfinite(summary["final_loss"]) and summary["nonfinite_count"] == 0
    with open(os.path.join(workdir, "state.json")) as f:
        assert json.load(f)["iter_01"]["train_reward"]["step"] == 4


def test_rerun_is_a_no_op_and_later_iterations_keep_the_model(trained):
    config, workdir, summary = trained
    mtime = os.path.getmtime(os.path.join(workdir, *CHECKPOINTS, "metrics.jsonl"))
    assert pipeline.run_phase("train_reward", config, workdir, iteration=1) == summary
    assert os.path.getmtime(os.path.join(workdir, *CHECKPOINTS, "metrics.jsonl")) == mtime
    later = train_reward_phase(config, workdir, iteration=2)
    assert later["trained"] is False
    assert later["checkpoint_dir"] == os.path.join(workdir, *CHECKPOINTS)


def test_iteration_0_has_nothing_to_learn_from(tmp_path):
    with pytest.raises(ValueError, match="from iteration 1"):
        train_reward_phase(_tiny_config(), str(tmp_path), iteration=0)


# ~45 s on 2 CPU cores (a second compilation of the sharded step); the trainer's own exact
# resume is tested in tests/train/test_trainer.py in the default run.
@pytest.mark.slow
def test_resume_from_step_2_equals_training_straight_to_4(trained, tmp_path):
    """Exact resume: drop checkpoint 4, rerun (forced); the run restores step 2 with its data
    position and must land on the same parameters, bitwise."""
    config, workdir, _ = trained
    straight = _params(config, workdir)
    copy = str(tmp_path / "resume")
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, *CHECKPOINTS, "4"))
    config.reward.evaluate_after_training = False
    resumed = train_reward_phase(config, copy, iteration=1)
    assert resumed["step"] == 4
    jax.tree.map(np.testing.assert_array_equal, _params(config, copy), straight)


def test_label_with_the_trained_model(trained):
    config, workdir, _ = trained
    summary = pipeline.run_phase("label", config, workdir, iteration=1)
    assert summary["reward_params"] == os.path.join(workdir, *CHECKPOINTS)
    episodes = list(rlds_read.read_episodes(summary["dataset_dirs"]))
    scores = np.asarray([e.metadata.reward_score for e in episodes])
    assert np.all((scores >= 0) & (scores <= 1))
    kept = np.asarray([e.metadata.kept for e in episodes])
    np.testing.assert_array_equal(kept, scores > config.reward.alpha)
    assert summary["num_kept"] == kept.sum() and summary["num_episodes"] == len(episodes)


def _block_video(success: bool, rng: np.random.Generator, steps: int) -> np.ndarray:
    """A white block on a grey table that slides to the right edge (success) or stays at the
    left edge (failure), at a random height, with pixel noise (64x64, the sim's frame size)."""
    frames = np.full((steps, 64, 64, 3), 60, np.float32)
    row = rng.integers(4, 40)
    for t in range(steps):
        x = round(t / (steps - 1) * 48) if success else 0
        frames[t, row : row + 16, x : x + 16] = 230
    frames += rng.normal(0, 12, frames.shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


# ~1.5 min on 2 CPU cores: 80 steps of the phase's sharded train step, then scoring.
@pytest.mark.slow
def test_train_reward_learns_to_separate_successes(tmp_path):
    """Through the whole phase (RLDS -> reward_batches -> trainer -> checkpoint -> scoring), a
    tiny model learns which real rollouts succeeded: train accuracy at alpha > 0.9."""
    from vlaw.data.synthetic import synthetic_episodes

    rng = np.random.default_rng(0)
    episodes = synthetic_episodes(32, num_steps=30, instruction="push the block to the right")
    config = _tiny_config()
    for episode in episodes:
        camera = f"observation/{config.reward.camera}"
        episode.observation[camera] = _block_video(episode.metadata.success, rng, episode.num_steps)
    workdir = str(tmp_path)
    rlds_write.write_episodes(os.path.join(workdir, "iter_01", "real"), episodes, name="vlaw_real")
    config.mesh.tensor = 1
    config.reward.train_on_demos = False
    config.reward.label_batch_size = 8
    config.reward.train.update(steps=80, batch_size=8, learning_rate=3e-3, warmup_steps=2)
    config.reward.train.log_every_steps = 10
    config.ckpt.save_every_steps = 100
    summary = train_reward_phase(config, workdir, iteration=1)
    print({k: summary[k] for k in ("final_loss", "train_accuracy_alpha", "train_confusion")})
    assert summary["train_confusion"]["num_known"] == 32
    assert summary["train_accuracy_alpha"] > 0.9
