"""The `imagine` phase at the tiny preset (scoop), through the real loaders.

The default tests save random tiny weights through the runtime modules' public savers
(training them costs minutes of compilation on 8 fake devices), then
imagine iteration 1: the policy of iteration 0 acting in the world model of iteration 1, from
the demonstrations' first steps (iteration 1 has no real rollouts). Three rollouts in batches of
two, so the last batch is padded. The slow test runs the whole chain with trained models.
"""

import dataclasses
import os
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

from vlaw import pipeline
from vlaw import workdir as workdir_lib
from vlaw.agents import policy as policy_lib
from vlaw.agents import reward as reward_agent
from vlaw.agents import world_model as wm
from vlaw.config import experiment_config
from vlaw.data import droid, rlds_read, rlds_write
from vlaw.models.policy import pi05
from vlaw.models.world_model import kinematics
from vlaw.phases import imagine as imagine_phase
from vlaw.phases import train_policy
from vlaw.rollout import imagine, imagine_plan
from vlaw.rollout.station import TaskSpec
from vlaw.train import checkpoints
from vlaw.train import mesh as mesh_lib

ROLLOUTS = 3  # two batches of two: the second padded


def _config():
    config = experiment_config(("scoop",), "tiny")
    config.loop.synthetic_rollouts_per_task = ROLLOUTS
    return config


def _starts(config, workdir: str, iteration: int) -> list:
    return imagine_plan.start_states(
        config.tasks, workdir_lib.imagine_start_dirs(workdir, iteration)
    )["scoop"]


def _random_params(abstract, seed: int):
    """N(0, 0.05^2) weights of `abstract`'s shapes (no init compilation)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (0.05 * rng.standard_normal(a.shape)).astype(a.dtype), abstract)


def _write_policy(config, workdir: str, iteration: int) -> str:
    """A policy of `iteration` as train_policy lays it out (policy.json, tokenizer, norm stats),
    with random weights."""
    spec, directory, _ = train_policy.prepare(config, workdir, iteration)
    model_cfg = policy_lib.model_config_from_spec(spec)
    abstract = nn.unbox(pi05.abstract_params(model_cfg))["params"]
    policy_lib.save_policy(
        directory, _random_params(abstract, 1), spec=spec, step=1, ckpt_config=config.ckpt
    )
    return directory


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, record_real_rollouts, write_random_world_model):
    """collect at iteration 0 (+ rollouts in iter_00/real), a policy of iteration 0 and a
    world model of iteration 1."""
    workdir = str(tmp_path_factory.mktemp("imagine"))
    config = _config()
    pipeline.run_phase("collect", config, workdir, iteration=0)
    record_real_rollouts(config, workdir, 0)
    _write_policy(config, workdir, 0)
    write_random_world_model(config, workdir, 1)
    return config, workdir


@pytest.fixture(scope="module")
def imagined(prepared):
    config, workdir = prepared
    summary = pipeline.run_phase("imagine", config, workdir, iteration=1)
    episodes = list(rlds_read.read_episodes(summary["dataset_dir"]))
    return config, workdir, summary, episodes


def _copy_prerequisites(workdir: str, target: str) -> None:
    for name in ("demos", "iter_00", "checkpoints", "assets"):
        if os.path.exists(os.path.join(workdir, name)):
            shutil.copytree(os.path.join(workdir, name), os.path.join(target, name))


def test_presets_cover_an_episode_and_name_ground_truth_sources():
    for preset in ("tiny", "sim"):
        config = experiment_config(("scoop",), preset)
        steps = imagine.steps_per_interaction(config)
        assert steps == 12  # Ctrl-World: 4 new 5 Hz frames of 3 robot steps per chunk
        assert config.loop.imagine_interactions * steps >= config.sim.max_steps
        assert "synthetic" in config.reward.known_label_sources
    paper = experiment_config(("scoop",), "paper")
    assert "synthetic" not in paper.reward.known_label_sources  # no simulator to replay in
    paper.policy.action_horizon = 10
    with pytest.raises(ValueError, match="action_horizon=10"):
        imagine.steps_per_interaction(paper)


def test_forward_kinematics_is_the_stations_convention(prepared):
    """Poses of the simulator's TCP: its DH reference (vlaw.sim.panda) and the recorded
    cartesian_position, both to float32 precision."""
    from vlaw.sim import panda
    from vlaw.sim.station import euler_xyz_from_matrix

    config, workdir = prepared
    episode = next(rlds_read.read_episodes(os.path.join(workdir, "demos")))
    joints = episode.observation["observation/joint_position"]
    gripper = episode.observation["observation/gripper_position"]
    tool = kinematics.station_tool_transform(config.sim.enabled)
    poses = np.asarray(kinematics.end_effector_poses(joints, gripper, tool))
    reference = [panda.dh_forward_kinematics(q) for q in joints]
    np.testing.assert_allclose(poses[:, :3], [t[:3, 3] for t in reference], atol=1e-5)
    euler = np.stack([euler_xyz_from_matrix(t[:3, :3]) for t in reference])
    np.testing.assert_allclose(_wrapped(poses[:, 3:6] - euler), 0.0, atol=1e-4)
    np.testing.assert_array_equal(poses[:, 6:], gripper.astype(np.float32))
    recorded = episode.observation["observation/cartesian_position"]
    np.testing.assert_allclose(poses[:, :3], recorded[:, :3], atol=1e-5)
    np.testing.assert_allclose(_wrapped(poses[:, 3:6] - recorded[:, 3:]), 0.0, atol=1e-4)


def _wrapped(angles: np.ndarray) -> np.ndarray:
    return (angles + np.pi) % (2 * np.pi) - np.pi


def test_starts_prefer_the_iterations_real_rollouts_and_spread_evenly(prepared):
    config, workdir = prepared
    at_0 = imagine_plan.start_states(config.tasks, workdir_lib.imagine_start_dirs(workdir, 0))[
        "scoop"
    ]
    at_1 = imagine_plan.start_states(config.tasks, workdir_lib.imagine_start_dirs(workdir, 1))[
        "scoop"
    ]  # no iter_01/real: the demos
    assert [s.episode_id.split("-")[0] for s in at_0] == ["real", "real"]
    assert [s.episode_id.split("-")[0] for s in at_1] == ["demo", "demo"]
    start = at_1[0]
    assert start.images.shape == (3, 64, 64, 3) and start.joint_position.shape == (7,)
    assert start.station_spec() == TaskSpec(
        "scoop", int(start.episode_id.split("-")[-1]), start.instruction
    )
    plan = imagine_plan.rollout_plan(config, {"scoop": at_1}, 1, seed=5)
    assert plan == imagine_plan.rollout_plan(config, {"scoop": at_1}, 1, seed=5)
    used = sorted(sum(r.start is s for r in plan) for s in at_1)
    assert used == [1, 2]
    assert plan[0].episode_id == f"synthetic-01-scoop-0000-from-{plan[0].start.episode_id}"
    # A start whose id names no reset (an imagined one, another task's) cannot be replayed.
    for episode_id in (plan[0].episode_id, start.episode_id.replace("scoop", "stack")):
        with pytest.raises(ValueError, match="imagine_sim_replay=False"):
            dataclasses.replace(start, episode_id=episode_id).station_spec()


def test_missing_policy_or_world_model_and_inconsistent_labels_are_named(prepared):
    config, workdir = prepared
    expected = workdir_lib.checkpoint_dir(workdir, "policy", 0)
    assert imagine_phase.imagining_policy_dir(config, workdir, 1) == expected
    with pytest.raises(FileNotFoundError, match="train_policy phase for iteration 1"):
        imagine_phase.imagine_phase(config, workdir, 2)
    with pytest.raises(FileNotFoundError, match="scripted expert"):
        imagine_phase.imagine_phase(config, workdir, 0)
    config = config.copy_and_resolve_references()
    config.policy.train.init_from = workdir_lib.checkpoint_dir(workdir, "policy", 0)
    with pytest.raises(FileNotFoundError, match="run the train_world_model phase first"):
        imagine_phase.imagine_phase(config, workdir, 0)  # the policy is found; no world model of 0
    config.loop.imagine_sim_replay = False
    with pytest.raises(ValueError, match="known_label_sources lists 'synthetic'"):
        imagine_phase.imagine_phase(config, workdir, 1)
    assert not os.path.exists(os.path.join(workdir, "iter_02"))


def test_writes_n_synthetic_episodes_per_task_at_the_world_models_size(imagined):
    config, workdir, summary, episodes = imagined
    steps = config.loop.imagine_interactions * imagine.steps_per_interaction(config)
    assert summary["num_episodes"] == len(episodes) == ROLLOUTS
    assert summary["episodes_per_task"] == {"scoop": ROLLOUTS}
    assert summary["steps_per_episode"] == steps and summary["success_is_ground_truth"]
    assert summary["seconds_per_interaction"] > 0
    size = wm.pixel_size(wm.model_config(config))
    policy_dir = workdir_lib.checkpoint_dir(workdir, "policy", 0)
    for index, episode in enumerate(episodes):
        m = episode.metadata
        assert (m.source, m.task, m.iteration, m.kept) == ("synthetic", "scoop", 1, False)
        assert np.isnan(m.reward_score) and isinstance(m.success, bool)
        assert m.episode_id.startswith(f"synthetic-01-scoop-{index:04d}-from-demo-00-scoop-")
        assert m.policy_checkpoint.startswith(os.path.abspath(policy_dir))
        assert episode.image_shape == (*size, 3)
        assert episode.policy_actions().shape == (steps, droid.POLICY_ACTION_DIM)
    assert summary["sim_success_rate"]["scoop"] == np.mean([e.metadata.success for e in episodes])
    # Rollouts 0 and 2 start from the same demo in different batches: different noise.
    starts = [e.metadata.episode_id.split("-from-")[1] for e in episodes]
    assert starts[0] == starts[2] != starts[1]
    assert not np.allclose(episodes[0].policy_actions(), episodes[2].policy_actions())


def test_records_integrate_the_executed_actions_and_hold_frames(imagined):
    config, workdir, _, episodes = imagined
    stride = config.world_model.frame_stride
    tool = kinematics.station_tool_transform(config.sim.enabled)
    for episode in episodes:
        obs, act = episode.observation, episode.action_dict
        joints = obs["observation/joint_position"]
        velocity = act["action_dict/joint_velocity"]
        np.testing.assert_allclose(joints[1:], joints[:-1] + 0.2 * velocity[:-1], atol=1e-5)
        np.testing.assert_allclose(act["action_dict/joint_position"][:-1], joints[1:], atol=1e-6)
        gripper = obs["observation/gripper_position"]
        np.testing.assert_allclose(gripper[1:], act["action_dict/gripper_position"][:-1])
        poses = np.asarray(kinematics.end_effector_poses(joints, gripper, tool))
        np.testing.assert_allclose(
            poses[:, :3], obs["observation/cartesian_position"][:, :3], atol=1e-5
        )
        for name in droid.CAMERA_NAMES:
            images = obs[f"observation/{name}"].astype(int)
            for t in range(episode.num_steps):  # zero-order hold: frame t // stride
                np.testing.assert_array_equal(images[t], images[t - t % stride])
    # The first frames are the start's recorded frames at the world model's size (compared
    # after the same JPEG round trip the dataset went through).
    starts = {
        s.episode_id: s
        for s in imagine_plan.start_states(
            config.tasks, workdir_lib.imagine_start_dirs(workdir, 1)
        )["scoop"]
    }
    first = starts[episodes[0].metadata.episode_id.split("-from-")[1]]
    world = wm.load_world_model(config, workdir_lib.checkpoint_dir(workdir, "world_model", 1))
    size = episodes[0].image_shape[:2]
    frames, _ = imagine.encode_start(world.vae, world.params["vae"], first.images[None], size=size)
    expected = rlds_read.decode_images(
        np.asarray(rlds_write.encode_jpegs(np.asarray(frames[0]))), (*size, 3)
    )
    for v, name in enumerate(droid.CAMERA_NAMES):
        np.testing.assert_array_equal(
            episodes[0].observation[f"observation/{name}"][0], expected[v]
        )


def test_resumed_run_writes_what_a_straight_run_writes(imagined, tmp_path):
    config, workdir, summary, episodes = imagined
    _copy_prerequisites(workdir, str(tmp_path))
    partial = imagine_phase.imagine_phase(config, str(tmp_path), 1, stop_after_batches=1)
    assert partial["stopped_early"] and partial["batches_left"] == 1
    synthetic = os.path.join(tmp_path, "iter_01", "synthetic")
    assert not os.path.exists(synthetic)
    staged = os.listdir(os.path.join(tmp_path, "iter_01", ".synthetic.episodes"))
    assert len([name for name in staged if name.endswith(".npz")]) == 2
    resumed = pipeline.run_phase("imagine", config, str(tmp_path), iteration=1)
    assert resumed["resumed_episodes"] == 2 and resumed["num_episodes"] == ROLLOUTS
    assert not os.path.exists(os.path.join(tmp_path, "iter_01", ".synthetic.episodes"))
    for straight, again in zip(episodes, rlds_read.read_episodes(synthetic), strict=True):
        # The same but for the workdir in the checkpoint path and the NaN (unequal) scores.
        assert _comparable(straight.metadata, workdir) == _comparable(again.metadata, tmp_path)
        for fields, again_fields in (
            (straight.observation, again.observation),
            (straight.action_dict, again.action_dict),
        ):
            for key, value in fields.items():
                np.testing.assert_array_equal(again_fields[key], value, err_msg=key)
    assert imagine.imagine_chunk._cache_size() == 1  # one batch shape, one compilation


def _comparable(metadata, workdir):
    checkpoint = os.path.relpath(metadata.policy_checkpoint, workdir)
    return dataclasses.replace(metadata, policy_checkpoint=checkpoint, reward_score=0.0)


def test_rerun_is_a_no_op(imagined):
    config, workdir, summary, _ = imagined
    dataset = summary["dataset_dir"]
    mtime = os.path.getmtime(dataset)
    assert pipeline.run_phase("imagine", config, workdir, iteration=1) == summary
    assert imagine_phase.imagine_phase(config, workdir, 1) == {
        "dataset_dir": dataset,
        "skipped": True,
    }
    assert os.path.getmtime(dataset) == mtime


def test_label_scores_the_synthetic_episodes(imagined):
    config, workdir, _, episodes = imagined
    config = config.copy_and_resolve_references()
    config.reward.progress = False
    model_cfg = reward_agent.model_config(config)
    init = reward_agent.init_fn_for(model_cfg)
    abstract = jax.eval_shape(lambda: nn.unbox(init(jax.random.PRNGKey(0))))
    pretrained = os.path.join(workdir, "pretrained_reward")
    checkpoints.save_params(pretrained, 1, _random_params(abstract, 3), config.ckpt)
    config.reward.train.init_from = pretrained
    summary = pipeline.run_phase("label", config, workdir, iteration=1)
    assert summary["num_episodes"] == ROLLOUTS
    assert summary["confusion"]["num_known"] == ROLLOUTS  # the simulator's replayed outcomes
    labelled = list(rlds_read.read_episodes(os.path.join(workdir, "iter_01", "synthetic")))
    scores = np.asarray([e.metadata.reward_score for e in labelled])
    assert np.all((scores >= 0) & (scores <= 1))
    assert [e.metadata.success for e in labelled] == [e.metadata.success for e in episodes]


@pytest.mark.slow
def test_imagine_after_training_both_models(tmp_path):
    """The loop's order: collect (0), train_policy (0), collect (1, the trained policy acting),
    train_world_model (1), imagine (1), train_reward (1), label (1)."""
    config = _config()
    config.mesh.tensor = 4  # the world model's batch of 2 over data=2 (8 fake devices)
    config.policy.train.batch_size = 8
    workdir = str(tmp_path)
    pipeline.run_phase("collect", config, workdir, iteration=0)
    pipeline.run_phase("train_policy", config, workdir, iteration=0)
    pipeline.run_phase("collect", config, workdir, iteration=1)
    pipeline.run_phase("train_world_model", config, workdir, iteration=1)
    summary = pipeline.run_phase("imagine", config, workdir, iteration=1)
    assert summary["num_episodes"] == ROLLOUTS
    model_cfg = wm.model_config(config)
    for episode in rlds_read.read_episodes(summary["dataset_dir"]):
        assert episode.image_shape == (*wm.pixel_size(model_cfg), 3)
    pipeline.run_phase("train_reward", config, workdir, iteration=1)
    labelled = pipeline.run_phase("label", config, workdir, iteration=1)
    assert labelled["num_episodes"] == ROLLOUTS


@pytest.mark.slow  # a second imagine in a fresh process (~1 min on 2 free cores)
def test_rollouts_split_over_devices_equal_one_device(imagined, tmp_path):
    """The fixture imagined in this process, each batch of 2 split over 2 of the 8 fake
    devices; a process with one device imagines the same episodes."""
    import subprocess
    import sys

    config, workdir, _, episodes = imagined
    assert mesh_lib.rows_mesh(2).devices.size == 2
    _copy_prerequisites(workdir, str(tmp_path))
    script = (
        "import sys\n"
        "from vlaw import pipeline\n"
        "from vlaw.config import experiment_config\n"
        "config = experiment_config(('scoop',), 'tiny')\n"
        f"config.loop.synthetic_rollouts_per_task = {ROLLOUTS}\n"
        "pipeline.run_phase('imagine', config, sys.argv[1], iteration=1)\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    synthetic = os.path.join(tmp_path, "iter_01", "synthetic")
    for sharded, single in zip(episodes, rlds_read.read_episodes(synthetic), strict=True):
        for key, value in sharded.observation.items():
            np.testing.assert_array_equal(single.observation[key], value, err_msg=key)
        for key, value in sharded.action_dict.items():
            np.testing.assert_allclose(single.action_dict[key], value, atol=1e-5, err_msg=key)


_PROCESS = """
import json, sys
import jax
port, index, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=index
)
from vlaw import pipeline
from vlaw.config import experiment_config
config = experiment_config(("scoop",), "tiny")
config.loop.synthetic_rollouts_per_task = int(sys.argv[4])
summary = pipeline.run_phase("imagine", config, workdir, iteration=1)
print("SUMMARY", json.dumps(summary), flush=True)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir: str) -> tuple[dict, dict]:
    """Runs the imagine phase of iteration 1 in `workdir` as a two-process job (jax.distributed
    on the CPU, 2 devices each); the chief's summary and the other's."""
    import json
    import subprocess
    import sys

    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    port = _free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, str(port), str(i), workdir, str(ROLLOUTS)],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=900)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()  # only if still running (a hang at a barrier)
    for p, output in zip(processes, outputs, strict=True):
        assert p.returncode == 0, output[-3000:]
    summaries = [
        json.loads(next(line for line in o.splitlines() if line.startswith("SUMMARY"))[8:])
        for o in outputs
    ]
    return summaries[0], summaries[1]


def _assert_written_as(episodes, workdir: str, other_workdir: str, summary: dict) -> None:
    """`other_workdir`'s iter_01/synthetic holds `episodes` (written in `workdir`), bit for
    bit, and state.json the chief's summary."""
    state = pipeline.load_state(other_workdir)["iter_01"]["imagine"]
    assert state["wrote_dataset"] and state["sim_success_rate"] == summary["sim_success_rate"]
    assert not os.path.exists(os.path.join(other_workdir, "iter_01", ".synthetic.episodes"))
    synthetic = os.path.join(other_workdir, "iter_01", "synthetic")
    for one, two in zip(episodes, rlds_read.read_episodes(synthetic), strict=True):
        assert _comparable(one.metadata, workdir) == _comparable(two.metadata, other_workdir)
        for fields, two_fields in (
            (one.observation, two.observation),
            (one.action_dict, two.action_dict),
        ):
            assert set(fields) == set(two_fields)
            for key, value in fields.items():
                np.testing.assert_array_equal(two_fields[key], value, err_msg=key)


@pytest.mark.slow  # two processes imagining a batch each on 2 shared CPU cores: 50-80 s
def test_two_processes_write_what_one_process_writes(imagined, tmp_path):
    """A two-process job on one shared copy of the prepared run directory: each process
    imagines one of the two batches, the chief writes the dataset; it equals the fixture's,
    written by one process (each batch over 2 of its devices, as here), episode by episode,
    bit for bit. Both processes run under `pipeline.run_phase`, so the second one also shows
    that the workdir's lock is the chief's alone."""
    config, workdir, summary, episodes = imagined
    _copy_prerequisites(workdir, str(tmp_path))
    chief, other = _two_processes(str(tmp_path))
    assert chief["wrote_dataset"] and not other["wrote_dataset"]
    assert set(chief) == set(other) and other["sim_success_rate"] is None
    assert chief["num_episodes"] == other["num_episodes"] == ROLLOUTS
    # Each imagined its batch: 0 (two rollouts) and 1 (one, padded).
    assert chief["seconds_per_interaction"] and other["seconds_per_interaction"]
    _assert_written_as(episodes, workdir, str(tmp_path), summary)


def test_two_processes_resume_what_one_process_staged(imagined, tmp_path):
    """One process stages batch 0 and is stopped; a two-process job resumes: process 0 has
    nothing left to imagine yet loads the policy with process 1 (a checkpoint's restore is a
    collective: had it skipped it, both would hang), process 1 imagines batch 1, and the
    dataset is the fixture's. ~35 s on 2 shared CPU cores: in the default run."""
    config, workdir, summary, episodes = imagined
    _copy_prerequisites(workdir, str(tmp_path))
    imagine_phase.imagine_phase(config, str(tmp_path), 1, stop_after_batches=1, progress=False)
    chief, other = _two_processes(str(tmp_path))
    assert chief["resumed_episodes"] == other["resumed_episodes"] == 2
    assert chief["seconds_per_interaction"] is None and other["seconds_per_interaction"]
    _assert_written_as(episodes, workdir, str(tmp_path), summary)
