import sys
import threading

import numpy as np
import pytest

from vlaw.robot import droid as droid_station
from vlaw.robot import limits as limits_lib
from vlaw.robot.droid import StationStopped, Watchdog
from vlaw.rollout.station import ACTION_DICT_NAMES, TaskSpec

SPEC = TaskSpec("stack", 3)


def _assert_every_command_within_limits(env, limits) -> None:
    """What the fake robot received, checked against the limits from where it stood."""
    assert env.commands
    for command, q in zip(env.commands, env.positions_before):
        assert np.all(np.abs(command[:7]) <= limits.normalized_velocity_max + 1e-12)
        target = q + limits_lib.MAX_JOINT_DELTA * command[:7]
        assert np.all(target <= limits.joint_position_max + 1e-9)
        assert np.all(target >= limits.joint_position_min - 1e-9)
        tool = limits_lib.tool_position(target)
        assert np.all(tool >= limits.workspace_min - 1e-9)
        assert np.all(tool <= limits.workspace_max + 1e-9)
        assert command[7] in (0.0, 1.0)


def test_observations_map_cameras_drop_alpha_and_turn_bgr_into_rgb(make_station, fakes):
    station = make_station(operator=fakes.Operator(instruction="stack the cubes"))
    observation = station.reset(SPEC)
    station.watchdog.disarm()
    assert observation.instruction == "stack the cubes"
    for name, serial in station.cameras.items():
        image = observation.images[name]
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        # 72x128 -> 18x32 of content centred between black bars, red first (RGB).
        assert np.all(image[:7] == 0) and np.all(image[-7:] == 0)
        np.testing.assert_array_equal(image[16, 16], [200, 0, int(serial[-1]) * 10])
    np.testing.assert_allclose(observation.joint_position, station.env.joint_position)


def test_commands_past_any_limit_are_clipped_never_sent(make_station, fakes):
    """A policy that pushes every joint at full speed, for many steps, into joint limits and
    out of the workspace: the robot only ever receives commands inside every limit."""
    env = fakes.RobotEnv()
    station = make_station(env=env)
    station.reset(SPEC)
    rng = np.random.default_rng(0)
    for _ in range(12):
        chunk = np.concatenate([rng.choice([-3.0, 3.0], (8, 7)), rng.uniform(-1, 2, (8, 1))], 1)
        records = station.act(chunk)
        assert len(records) == 8
        station.observe()
    station.watchdog.disarm()
    assert len(env.commands) == 96
    _assert_every_command_within_limits(env, station.limits)
    assert station.clip_counts["velocity"] == 96
    assert station.clip_counts.get("workspace", 0) + station.clip_counts.get("joint_position", 0)


def test_gripper_is_binarised_and_steps_are_recorded_in_droid_names(make_station, fakes):
    env = fakes.RobotEnv()
    station = make_station(env=env)
    station.reset(SPEC)
    chunk = np.zeros((3, 8))
    chunk[:, 7] = [0.2, 0.51, 0.9]
    records = station.act(chunk)
    station.watchdog.disarm()
    assert [c[7] for c in env.commands] == [0.0, 1.0, 1.0]
    for record in records:
        assert set(record.action_dict) == set(ACTION_DICT_NAMES)
        assert record.action_dict["gripper_velocity"].shape == (1,)  # from DROID's gripper_delta
    assert records[1].observation.joint_position is not records[0].observation.joint_position


def test_watchdog_holds_the_arm_and_ends_the_episode_when_the_policy_is_late(make_station, fakes):
    env = fakes.RobotEnv()
    station = make_station(env=env, watchdog_s=0.01)
    fired = threading.Event()
    station.watchdog._on_expire = lambda: (station.hold("watchdog"), fired.set())
    station.reset(SPEC)  # the observation goes to the policy: the watchdog counts
    assert fired.wait(30)  # the "policy" never answers
    np.testing.assert_array_equal(env.commands[-1], np.zeros(8))  # hold: zero velocity
    with pytest.raises(StationStopped, match="watchdog"):
        station.act(np.zeros((8, 8)))
    assert len(env.commands) == 1  # nothing after the hold
    assert station.partial_records == []


def test_watchdog_disarmed_in_time_never_fires():
    expired = []
    watchdog = Watchdog(30.0, lambda: expired.append(True))
    watchdog.arm()
    assert watchdog.disarm() is False
    assert expired == [] and not watchdog.fired


def test_keyboard_stop_holds_the_arm_before_the_next_command(make_station, fakes):
    env = fakes.RobotEnv()
    station = make_station(env=env)
    station.reset(SPEC)
    station.stop.request()  # Ctrl+C while the policy was thinking
    with pytest.raises(StationStopped, match="operator stop"):
        station.act(np.full((8, 8), 0.1))
    assert len(env.commands) == 1 and not np.any(env.commands[0][:7])


def test_keyboard_stop_catches_sigint():
    import signal

    with droid_station.KeyboardStop() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested()


def test_missing_droid_stack_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "droid", None)
    monkeypatch.setitem(sys.modules, "droid.robot_env", None)
    with pytest.raises(ImportError, match="droid-dataset/droid"):
        droid_station.open_robot_env()


def test_terminal_operator_asks_until_answered():
    answers = iter(["", "stack the red cube", "maybe", "D", "", "n"])
    operator = droid_station.TerminalOperator(read=lambda prompt: next(answers))
    assert operator.prepare(SPEC) == "stack the red cube"
    assert operator.verdict("stack the red cube", "") is droid_station.Verdict.DISCARD
    assert operator.prepare(SPEC) == "stack the red cube"  # empty: the previous instruction
    assert operator.verdict("stack the red cube", "") is droid_station.Verdict.FAILURE


def test_an_unset_camera_serial_is_refused(fakes):
    cameras = {**fakes.serials, "wrist_image_left": ""}
    with pytest.raises(ValueError, match="wrist_image_left"):
        droid_station.DroidStation(
            fakes.RobotEnv(),
            cameras=cameras,
            image_size=(32, 32),
            limits=limits_lib.panda_limits((0.2, -0.6, 0.02), (0.9, 0.6, 0.9)),
            operator=fakes.Operator(),
        )
