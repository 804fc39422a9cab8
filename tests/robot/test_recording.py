import builtins
import glob
import os
import threading

import numpy as np
import pytest

from vlaw.config import experiment_config
from vlaw.data import rlds_read
from vlaw.phases import collect
from vlaw.robot import recording
from vlaw.rollout import episodes as episodes_lib
from vlaw.rollout.station import TaskSpec

SPECS = [TaskSpec("stack", seed) for seed in (11, 12, 13)]
GENTLE = [0.05, 0.0, 0.0, -0.05, 0.0, 0.05, 0.0, 0.9]


def _config(max_steps: int = 12):
    config = experiment_config(("stack",), "tiny")
    config.station = "droid"
    config.robot.max_steps = max_steps
    config.data.image_height = config.data.image_width = 32  # the test station's size
    return config


def _record(config, directory, station, policy):
    return recording.record_on_station(
        config, directory, SPECS, "real", 1, "vlaw_real", policy, station=station
    )


def test_operator_labels_and_discards_and_the_dataset_holds_k_episodes(
    tmp_path, make_station, fakes
):
    operator = fakes.Operator(verdicts="ydny")
    station = make_station(operator=operator)
    policy = fakes.Policy(GENTLE)
    directory = str(tmp_path / "real")
    summary = _record(_config(), directory, station, policy)
    assert operator.asked == 4  # the discarded episode ran again
    assert summary["num_episodes"] == 3 and summary["resumed_episodes"] == 0
    recorded = list(rlds_read.read_episodes(directory))
    assert [e.metadata.success for e in recorded] == [True, False, True]
    assert [e.metadata.episode_id for e in recorded] == [f"real-01-stack-{s}" for s in (11, 12, 13)]
    for episode in recorded:
        assert episode.metadata.policy_checkpoint == policy.checkpoint
        assert episode.instruction == operator.instruction
        assert episode.observation["observation/joint_position"].shape == (12, 7)
    # 12 steps, 8 of a chunk then 4: two policy calls per episode, plus the warm-up call.
    assert len(policy.seen) == 1 + 2 * 4
    assert not os.path.exists(episodes_lib.staging_dir(directory))


def test_a_killed_episode_write_leaves_the_recorded_ones_readable_and_a_rerun_resumes(
    tmp_path, make_station, fakes, monkeypatch
):
    directory = str(tmp_path / "real")
    config, policy = _config(), fakes.Policy(GENTLE)
    real_savez = np.savez_compressed
    calls = []

    def killed_on_the_second_write(f, **arrays):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04 half an episode")  # the process dies mid-write
            raise KeyboardInterrupt
        real_savez(f, **arrays)

    monkeypatch.setattr(episodes_lib.np, "savez_compressed", killed_on_the_second_write)
    with pytest.raises(KeyboardInterrupt):
        _record(config, directory, make_station(), policy)
    monkeypatch.undo()
    staging = episodes_lib.staging_dir(directory)
    complete = glob.glob(os.path.join(staging, "*.npz"))
    assert [os.path.basename(p) for p in complete] == ["real-01-stack-11.npz"]
    assert episodes_lib.load_staged_episode(complete[0]).metadata.success
    assert not os.path.exists(directory)

    operator = fakes.Operator(verdicts="nn")
    summary = _record(config, directory, make_station(operator=operator), policy)
    assert operator.asked == 2 and summary["resumed_episodes"] == 1
    assert [e.metadata.success for e in rlds_read.read_episodes(directory)] == [True, False, False]


def test_an_episode_the_watchdog_stops_keeps_its_steps_and_is_labelled(make_station, fakes):
    station = make_station(watchdog_s=0.01)
    fired = threading.Event()
    station.watchdog._on_expire = lambda: (station.hold("watchdog"), fired.set())
    calls = []

    def late_on_the_second_call(observations, **unused):
        calls.append(1)
        if len(calls) == 2:
            assert fired.wait(30)
        return np.tile(np.asarray(GENTLE, np.float32), (1, 10, 1))

    recorder, stopped = recording.run_episode(
        station,
        late_on_the_second_call,
        SPECS[0],
        max_steps=40,
        open_loop_steps=8,
        source="real",
        iteration=1,
        policy_checkpoint="/fake",
    )
    assert "watchdog" in stopped and recorder.num_steps == 8
    assert station.verdict().value == "y"


def test_collect_on_the_droid_station_goes_through_the_operator(tmp_path, monkeypatch, fakes):
    config = _config(max_steps=4)
    config.loop.real_rollouts_per_task = 2
    workdir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="demonstrations"):
        collect.collect_phase(config, workdir, 0)
    policy = fakes.Policy(GENTLE)
    monkeypatch.setattr(collect, "_previous_policy", lambda *args: policy)
    monkeypatch.setattr(recording, "open_robot_env", fakes.RobotEnv)
    cameras = config.robot.cameras
    for name, serial in fakes.serials.items():
        cameras[name] = serial
    answers = iter(["stack the blocks", "y", "", "n"])
    monkeypatch.setattr(builtins, "input", lambda prompt: next(answers))
    summary = collect.collect_phase(config, workdir, 1)
    assert summary["real"]["num_episodes"] == 2
    assert [
        e.metadata.success for e in rlds_read.read_episodes(summary["real"]["dataset_dir"])
    ] == [
        True,
        False,
    ]


def test_station_switch_and_the_paper_preset():
    assert experiment_config(("stack",), "paper").station == "droid"
    assert experiment_config(("stack",), "sim").station == "sim"
    config = experiment_config(("stack",), "tiny")
    assert recording.station_recorder(config) is episodes_lib.record_dataset
    config.station = "droid"
    assert recording.station_recorder(config) is recording.record_on_station
    config.station = "mars"
    with pytest.raises(ValueError, match="'sim' or 'droid'"):
        recording.station_recorder(config)


def test_evaluate_on_the_droid_station_reports_the_operator_labels(tmp_path, monkeypatch, fakes):
    from vlaw.agents import policy as policy_agent
    from vlaw.phases import evaluate

    config = _config(max_steps=4)
    config.evaluate.episodes_per_task = 2
    for name, serial in fakes.serials.items():
        config.robot.cameras[name] = serial
    policy = fakes.Policy(GENTLE)
    monkeypatch.setattr(policy_agent, "is_trained", lambda directory: True)
    monkeypatch.setattr(policy_agent, "load_policy", lambda directory, seed: policy)
    monkeypatch.setattr(recording, "open_robot_env", fakes.RobotEnv)
    answers = iter(["stack the blocks", "n", "", "d", "", "y"])
    monkeypatch.setattr(builtins, "input", lambda prompt: next(answers))
    metrics = evaluate.evaluate_phase(config, str(tmp_path), 0)
    assert metrics["tasks"]["stack"]["episodes"] == 2
    assert metrics["tasks"]["stack"]["successes"] == 1
