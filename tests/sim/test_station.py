"""Every path from an action to MuJoCo checks it first: wrong shapes and non-finite values are
refused with a ValueError that names the expected shape, and the simulator is left untouched."""

import subprocess
import sys

import numpy as np
import pytest

from vlaw.rollout.station import TaskSpec
from vlaw.sim.station import SimStation


@pytest.fixture(scope="module")
def station():
    station = SimStation("stack")
    station.reset(TaskSpec("stack", 0))
    return station


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros(7), r"shape \(8,\).*got \(7,\)"),
        (np.zeros(9), r"shape \(8,\).*got \(9,\)"),
        (np.zeros((1, 8)), r"shape \(8,\).*got \(1, 8\)"),
        (np.r_[np.zeros(7), np.nan], "non-finite"),
        (np.r_[np.inf, np.zeros(7)], "non-finite"),
    ],
)
def test_apply_action_refuses_bad_actions_untouched(station, action, message):
    qpos, ctrl, time = station.data.qpos.copy(), station.data.ctrl.copy(), station.data.time
    with pytest.raises(ValueError, match=message):
        station.apply_action(action)
    np.testing.assert_array_equal(station.data.qpos, qpos)
    np.testing.assert_array_equal(station.data.ctrl, ctrl)
    assert station.data.time == time


def test_a_valid_action_still_moves_the_arm(station):
    before = station.joint_position
    record = station.apply_action(np.r_[np.full(7, 0.3), 0.0])
    assert np.all(np.isfinite(station.data.qpos))
    assert not np.allclose(station.joint_position, before)
    assert np.all(np.isfinite(record.action_dict["joint_position"]))


def test_batch_step_checks_every_active_row_before_moving_any():
    """In a fresh process: the batch renders, and this test process may hold TensorFlow."""
    code = """
import numpy as np
from vlaw.rollout.station import TaskSpec
from vlaw.sim.station import SimStationBatch

batch = SimStationBatch(["stack", "stack"])
batch.reset([TaskSpec("stack", 0), TaskSpec("stack", 1)])
qpos = [s.data.qpos.copy() for s in batch.stations]
actions = np.zeros((2, 8))
actions[1, 3] = np.nan
for bad, message in ((actions, "non-finite"), (np.zeros((2, 7)), "(2, 8) actions, got (2, 7)")):
    try:
        batch.step(bad)
        raise AssertionError("accepted " + message)
    except ValueError as error:
        assert message in str(error), error
for station, before in zip(batch.stations, qpos):
    assert np.array_equal(station.data.qpos, before)
records = batch.step(actions, active=[True, False])  # an inactive row is not read
assert records[1] is None and records[0] is not None
batch.close()
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
