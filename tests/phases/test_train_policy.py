"""`train_policy` end to end at the tiny preset: on what `collect` wrote, resumed after an
interruption, on failures only; and the trained checkpoint acting through `load_policy`.

Each phase call compiles the train step for 8 fake CPU devices (~20-40 s on 2 shared cores),
so the resume and next-iteration runs are marked slow. (A persistent compilation cache shared
by the calls crashed XLA:CPU on the second donated step, so there is none.)
"""

import copy
import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest

from vlaw import pipeline
from vlaw import workdir as workdir_lib
from vlaw.agents import policy as policy_lib
from vlaw.config import experiment_config
from vlaw.phases import train_policy as train_policy_phase

STEPS = 4


def _config():
    config = experiment_config(("scoop",), "tiny")
    config.policy.train.batch_size = 8  # one row per fake device
    config.policy.train.steps = STEPS
    return config


def _relabel(source_dir: str, target_dir: str, success: bool) -> None:
    from vlaw.data import rlds_read, rlds_write

    episodes = [
        dataclasses.replace(
            episode, metadata=dataclasses.replace(episode.metadata, success=success, kept=success)
        )
        for episode in rlds_read.read_episodes(source_dir)
    ]
    rlds_write.write_episodes(target_dir, episodes, name="vlaw_demos")


@pytest.fixture(scope="module")
def collected(tmp_path_factory, record_real_rollouts):
    """A workdir after `collect` (iteration 0) whose demos are relabelled successes (the tiny
    preset's 30-step episodes all fail), with failed rollouts in iter_00/real beside them (so
    both weights of Eq. 4 are in play), and a pristine copy of its datasets."""
    import tensorflow as tf  # noqa: F401  (in play in this process, as in the real phase)

    workdir = str(tmp_path_factory.mktemp("policy_phase"))
    config = _config()
    pipeline.run_phase("collect", config, workdir, iteration=0)
    record_real_rollouts(config, workdir, 0)
    pristine = str(tmp_path_factory.mktemp("pristine"))
    for name in ("demos", "iter_00"):
        shutil.copytree(os.path.join(workdir, name), os.path.join(pristine, name))
    shutil.rmtree(os.path.join(workdir, "demos"))
    _relabel(os.path.join(pristine, "demos"), os.path.join(workdir, "demos"), success=True)
    return config, workdir, pristine


@pytest.fixture(scope="module")
def trained(collected):
    config, workdir, _ = collected
    summary = pipeline.run_phase("train_policy", config, workdir, iteration=0)
    return config, workdir, summary


def _metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir_lib.checkpoint_dir(workdir, "policy", 0), "metrics.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f]


def _params(workdir: str):
    return policy_lib.load_policy(workdir_lib.checkpoint_dir(workdir, "policy", 0)).params


def test_train_policy_trains_on_collected_episodes(trained):
    config, workdir, summary = trained
    ckpt_dir = workdir_lib.checkpoint_dir(workdir, "policy", 0)
    assert summary["step"] == STEPS and summary["init"] == "scratch"
    assert summary["dataset_dirs"] == [
        os.path.join(workdir, "demos"),
        os.path.join(workdir, "iter_00", "real"),
    ]
    for name in ("policy.json", "norm_stats.json", "tokenizer.model", str(STEPS)):
        assert os.path.exists(os.path.join(ckpt_dir, name)), name
    metrics = _metrics(workdir)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert all(np.isfinite(m["loss"]) and m["loss"] > 0 for m in metrics)
    # The real action dims' losses are logged apart (the tiny preset trains only those 8).
    assert all(np.isfinite(m["loss_arm"]) and np.isfinite(m["loss_gripper"]) for m in metrics)
    # Demos weigh 1, the failed real rollouts 0 (Eq. 4), which add nothing to the loss and so
    # are left out of the batches: every example trains.
    assert summary["weighted_episodes"] < summary["num_episodes"]
    assert summary["mean_weight"] == 1.0
    assert all(m["update_applied"] == 1.0 for m in metrics)
    state = pipeline.load_state(workdir)
    assert state["iter_00"]["train_policy"]["checkpoint"] == ckpt_dir

    # The prompt fits: the run's tokenizer spends a token per word and per state number.
    with open(os.path.join(ckpt_dir, "policy.json")) as f:
        spec = json.load(f)
    assert spec["overrides"]["vocab_size"] == config.policy.tokenizer_vocab_size
    from vlaw.models.policy.tokenizer import PaligemmaTokenizer

    tokenizer = PaligemmaTokenizer(os.path.join(ckpt_dir, "tokenizer.model"), 64)
    _, mask = tokenizer.tokenize("transfer some peanuts to the bowl", np.zeros(8))
    assert mask.sum() < 40


def test_load_policy_acts_in_the_station_action_space(trained):
    from vlaw.data import droid, rlds_read
    from vlaw.rollout.station import Observation

    config, workdir, _ = trained
    episode = next(iter(rlds_read.read_episodes(os.path.join(workdir, "iter_00", "real"))))
    observations = [
        Observation(
            images={
                name: episode.observation[f"observation/{name}"][t] for name in droid.CAMERA_NAMES
            },
            joint_position=episode.observation["observation/joint_position"][t],
            gripper_position=episode.observation["observation/gripper_position"][t],
            cartesian_position=episode.observation["observation/cartesian_position"][t],
            instruction=episode.instruction,
        )
        for t in (0, 10, 20)
    ]
    policy = policy_lib.load_policy(workdir_lib.checkpoint_dir(workdir, "policy", 0))
    assert policy.checkpoint.endswith(f"iter_00/{STEPS}")
    actions = policy(observations)
    assert actions.shape == (3, config.policy.action_horizon, 8)
    assert np.all(np.isfinite(actions))
    assert np.all(np.abs(actions[..., :7]) <= 1.0)
    assert np.all((actions[..., 7] >= 0.0) & (actions[..., 7] <= 1.0))
    again = policy(observations)  # fresh noise on every call
    assert not np.array_equal(actions, again)
    # An explicit key fixes the noise whatever the calls before, and leaves the count alone.
    key = jax.random.PRNGKey(7)
    keyed = policy(observations, rng=key)
    np.testing.assert_array_equal(policy(observations, rng=key), keyed)
    fresh = policy_lib.load_policy(workdir_lib.checkpoint_dir(workdir, "policy", 0))
    np.testing.assert_array_equal(fresh(observations, rng=key), keyed)
    np.testing.assert_array_equal(fresh(observations), actions)
    # Noise keyed per episode: a row's actions do not depend on its batch-mates.
    pair = policy(observations[:2], episode_calls=[(5, 0), (6, 3)])
    other = policy(observations[1:], episode_calls=[(6, 3), (9, 0)])
    np.testing.assert_allclose(pair[1], other[0], atol=1e-5)
    assert not np.allclose(pair[1], policy(observations[1:2], episode_calls=[(6, 4)])[0])


@pytest.mark.slow  # two more phase runs (~40 s each on 2 shared cores)
def test_interrupted_train_policy_resumes_exactly(trained, tmp_path):
    config, straight_workdir, _ = trained
    workdir = str(tmp_path)
    for name in ("demos", "iter_00"):
        shutil.copytree(os.path.join(straight_workdir, name), os.path.join(workdir, name))
    train_policy_phase.train_policy_phase(config, workdir, 0, stop_at_step=2, progress=False)
    assert "train_policy" not in pipeline.load_state(workdir).get("iter_00", {})
    summary = pipeline.run_phase("train_policy", config, workdir, iteration=0)
    assert summary["step"] == STEPS
    assert "train_policy" in pipeline.load_state(workdir)["iter_00"]
    # Steps 3 and 4 ran once, on the batches an uninterrupted run would have drawn.
    assert [m["step"] for m in _metrics(workdir)] == list(range(1, STEPS + 1))
    straight = {m["step"]: m["loss"] for m in _metrics(straight_workdir)}
    resumed = {m["step"]: m["loss"] for m in _metrics(workdir)}
    np.testing.assert_allclose([resumed[s] for s in straight], list(straight.values()), rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        _params(workdir),
        _params(straight_workdir),
    )


def test_failures_only_train_with_zero_weight(collected, tmp_path):
    """Eq. 4 with every label 0: loss and gradients are exactly 0 and nothing is NaN (the loss
    divides by max(weight sum, 1e-8), never 0/0)."""
    config, _, pristine = collected
    workdir = str(tmp_path)
    _relabel(os.path.join(pristine, "demos"), os.path.join(workdir, "demos"), success=False)
    _relabel(
        os.path.join(pristine, "iter_00", "real"),
        os.path.join(workdir, "iter_00", "real"),
        success=False,
    )
    summary = pipeline.run_phase("train_policy", config, workdir, iteration=0)
    assert summary["nonfinite_count"] == 0 and summary["mean_weight"] == 0.0
    for m in _metrics(workdir):
        assert m["loss"] == 0.0 and m["grad_norm"] == 0.0 and m["weight_sum"] == 0.0
        assert np.isfinite(m["unweighted_loss"]) and m["update_applied"] == 1.0


def test_failed_demos_train_on_every_demonstration(collected, tmp_path):
    """`policy.failed_demos`: failed demonstrations weigh 1, failed rollouts still 0."""
    config, _, pristine = collected
    config = copy.deepcopy(config)
    config.policy.failed_demos = True
    workdir = str(tmp_path)
    for name in ("demos", os.path.join("iter_00", "real")):
        _relabel(os.path.join(pristine, name), os.path.join(workdir, name), success=False)
    summary = pipeline.run_phase("train_policy", config, workdir, iteration=0)
    demos = train_policy_phase.scan_episodes([os.path.join(workdir, "demos")])
    assert demos.weighted_episodes == 0  # every demo is labelled a failure
    assert summary["weighted_episodes"] == demos.num_episodes > 0
    assert summary["weighted_steps"] == demos.num_steps < summary["num_steps"]
    # Only weight-1 examples are sampled (the rollouts are left out), and they train.
    assert summary["mean_weight"] == 1.0 and summary["final_loss"] > 0.0


@pytest.fixture(scope="module")
def collected_by_policy(trained):
    """`collect` at iteration 1: the iteration-0 checkpoint acts on the stations."""
    config, workdir, _ = trained
    summary = pipeline.run_phase("collect", config, workdir, iteration=1)
    return config, workdir, summary


def test_collect_after_training_rolls_out_the_trained_policy(collected_by_policy):
    from vlaw.data import rlds_read

    config, workdir, summary = collected_by_policy
    checkpoint = os.path.join(workdir_lib.checkpoint_dir(workdir, "policy", 0), str(STEPS))
    assert summary["policy"] == "trained" and summary["policy_checkpoint"] == checkpoint
    assert "demos" not in summary  # warm-start demonstrations belong to iteration 0 only
    episodes = list(rlds_read.read_episodes(os.path.join(workdir, "iter_01", "real")))
    assert len(episodes) == config.loop.real_rollouts_per_task
    for episode in episodes:
        assert episode.metadata.policy_checkpoint == checkpoint
        assert episode.metadata.source == "real" and episode.metadata.iteration == 1
        assert episode.num_steps == config.sim.max_steps
        assert np.all(np.abs(episode.policy_actions()[:, :7]) <= 1.0)


@pytest.mark.slow  # one more phase run
def test_next_iteration_starts_from_the_previous_policy(collected_by_policy):
    config, workdir, _ = collected_by_policy
    summary = pipeline.run_phase("train_policy", config, workdir, iteration=1)
    previous = workdir_lib.checkpoint_dir(workdir, "policy", 0)
    assert summary["init"] == "previous_iteration" and summary["init_path"] == previous
    assert os.path.join(workdir, "iter_01", "real") in summary["dataset_dirs"]
    current = workdir_lib.checkpoint_dir(workdir, "policy", 1)
    for name in ("norm_stats.json", "tokenizer.model"):  # carried forward unchanged
        with (
            open(os.path.join(previous, name), "rb") as a,
            open(os.path.join(current, name), "rb") as b,
        ):
            assert a.read() == b.read(), name
    assert summary["step"] == STEPS and np.isfinite(summary["final_loss"])


@pytest.mark.slow  # one more phase run
def test_init_from_an_openpi_checkpoint(collected, tmp_path):
    """`policy.train.init_from` naming an openpi checkpoint (params/ + assets/droid/
    norm_stats.json, written here in openpi's layout at tiny size) seeds the weights, and its
    norm stats are used instead of statistics of the data."""
    import flax.linen as nn

    from vlaw.convert.openpi import save_openpi_params, vlaw_to_openpi
    from vlaw.data.norm_stats import NormStats, load_norm_stats, save_norm_stats
    from vlaw.models.policy import pi05

    _, workdir, _ = collected
    config = _config()  # a fresh copy: init_from is set below
    # openpi's checkpoints read the state as text bins and train every action dim.
    config.policy.state_input, config.policy.loss_on_padding = "tokens", True
    openpi_dir = str(tmp_path / "openpi")
    overrides = dict(policy_lib.model_overrides(config, config.policy.tokenizer_vocab_size))
    abstract = nn.unbox(pi05.abstract_params(pi05.pi05_config("tiny", **overrides)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: rng.normal(0, 0.02, a.shape).astype(np.float32), abstract)
    save_openpi_params(os.path.join(openpi_dir, "params"), vlaw_to_openpi(params))
    stats = NormStats(mean=np.zeros(8), std=np.ones(8), q01=-np.full(8, 2.0), q99=np.full(8, 2.0))
    stats_path = os.path.join(openpi_dir, "assets", "droid", "norm_stats.json")
    save_norm_stats(stats_path, {"state": stats, "actions": stats})

    run = str(tmp_path / "run")
    for name in ("demos", "iter_00"):
        shutil.copytree(os.path.join(workdir, name), os.path.join(run, name))
    config.policy.train.init_from = openpi_dir
    summary = pipeline.run_phase("train_policy", config, run, iteration=0)
    assert summary["init"] == "openpi" and summary["norm_stats"] == stats_path
    saved = load_norm_stats(
        os.path.join(workdir_lib.checkpoint_dir(run, "policy", 0), "norm_stats.json")
    )
    np.testing.assert_allclose(saved["actions"].q99, 2.0)
    # 4 AdamW steps at lr <= 3e-4 move each weight by at most ~1.2e-3 from the import.
    trained = policy_lib.load_policy(workdir_lib.checkpoint_dir(run, "policy", 0)).params["params"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-3), trained, params)


def test_a_bad_init_from_is_refused_before_anything_is_written(collected, tmp_path):
    """A mistyped `init_from` names itself and leaves the iteration unprepared, so the same
    command with the path fixed (or removed) just works."""
    _, workdir, _ = collected
    run = str(tmp_path / "run")
    shutil.copytree(os.path.join(workdir, "demos"), os.path.join(run, "demos"))
    config = _config()
    config.policy.train.init_from = str(tmp_path / "no_such_checkpoint")
    with pytest.raises(FileNotFoundError, match="policy.train.init_from"):
        train_policy_phase.prepare(config, run, 0)
    directory = workdir_lib.checkpoint_dir(run, "policy", 0)
    assert not os.path.exists(os.path.join(directory, "policy.json"))
    config.policy.train.init_from = ""
    spec, prepared_dir, _ = train_policy_phase.prepare(config, run, 0)
    assert prepared_dir == directory and spec["init"] == {"kind": "scratch", "path": ""}


def test_skipped_records_are_counted_for_the_summary(collected, tmp_path):
    """With data.skip_corrupt a shard cut short costs its episodes, and the phase's summary
    says how many (`skipped_corrupt_records`); without it the read fails naming the shard."""
    from vlaw.data import rlds_read

    _, workdir, _ = collected
    copy = str(tmp_path / "demos")
    shutil.copytree(os.path.join(workdir, "demos"), copy)
    layout = rlds_read.open_dataset(copy)
    with open(layout.shard_paths[0], "wb"):
        pass  # cut to 0 bytes
    summary = train_policy_phase.scan_episodes([copy], skip_corrupt=True)
    assert summary.skipped_corrupt == layout.shard_lengths[0]
    assert summary.num_episodes == layout.num_episodes - layout.shard_lengths[0]
    with pytest.raises(rlds_read.DataError, match=os.path.basename(layout.shard_paths[0])):
        train_policy_phase.scan_episodes([copy])


def test_the_base_policy_trains_for_the_warm_start_steps():
    train_section = train_policy_phase.train_section
    config = experiment_config(("scoop",), "tiny")
    config.policy.train.steps, config.policy.train.warmup_steps = 40, 4
    config.policy.warmstart_steps = 100
    base, post = train_section(config, 0), train_section(config, 1)
    assert (base.steps, base.warmup_steps) == (100, 10)
    assert base.learning_rate == config.policy.train.learning_rate
    assert post is config.policy.train and post.steps == 40  # post-training: unchanged
    config.policy.warmstart_steps = 0  # off: the base policy trains for policy.train.steps
    assert train_section(config, 0) is config.policy.train
