import numpy as np
import pytest

from vlaw.robot import limits as limits_lib
from vlaw.sim import panda

LIMITS = limits_lib.panda_limits((0.2, -0.6, 0.02), (0.9, 0.6, 0.9))


def _within(command: np.ndarray, q: np.ndarray, limits=LIMITS) -> None:
    """The command's step respects every limit (from a state inside them)."""
    velocity = command[:7]
    assert np.all(np.abs(velocity) <= limits.normalized_velocity_max + 1e-12)
    target = q + limits_lib.MAX_JOINT_DELTA * velocity
    assert np.all(target <= limits.joint_position_max + 1e-9)
    assert np.all(target >= limits.joint_position_min - 1e-9)
    tool = limits_lib.tool_position(target)
    assert np.all(tool >= limits.workspace_min - 1e-9) and np.all(
        tool <= limits.workspace_max + 1e-9
    )
    assert 0.0 <= command[7] <= 1.0


def test_velocity_limits_are_the_panda_datasheet_less_droid_margin_in_normalised_units():
    # 2.075 rad/s over 3 rad/s per unit for joints 1-4, 2.51 / 3 for 5-7.
    expected = (panda.JOINT_VELOCITY_MAX - 0.1) / 3.0
    np.testing.assert_allclose(LIMITS.normalized_velocity_max, expected)
    command = limits_lib.safe_command(np.append(np.ones(7), 1.0), panda.HOME_JOINT_POSITION, LIMITS)
    np.testing.assert_allclose(command.action[:7], expected)
    assert "velocity" in command.clipped


def test_a_command_inside_every_limit_passes_unchanged():
    action = np.array([0.05, -0.05, 0.0, 0.05, 0.0, -0.05, 0.1, 1.0])
    command = limits_lib.safe_command(action, panda.HOME_JOINT_POSITION, LIMITS)
    np.testing.assert_array_equal(command.action, action)
    assert command.clipped == ()


def test_a_joint_at_its_limit_may_only_move_back():
    # Joint 7 turns the hand about the tool axis: the workspace box does not interfere.
    q = np.array(panda.HOME_JOINT_POSITION)
    push, pull = np.append([0] * 6 + [0.5], 0.0), np.append([0] * 6 + [-0.5], 0.0)
    q[6] = LIMITS.joint_position_max[6] - 0.01
    command = limits_lib.safe_command(push, q, LIMITS)
    assert command.action[6] == pytest.approx(0.01 / limits_lib.MAX_JOINT_DELTA)
    assert command.clipped == ("joint_position",)
    q[6] = LIMITS.joint_position_max[6] + 0.05  # outside (pushed there): no further out
    assert limits_lib.safe_command(push, q, LIMITS).action[6] == 0.0
    assert limits_lib.safe_command(pull, q, LIMITS).action[6] == -0.5


def test_workspace_box_scales_the_step_down():
    # A box whose floor is just under the home tool height: a downward step is cut to the floor.
    home_z = limits_lib.tool_position(panda.HOME_JOINT_POSITION)[2]
    limits = limits_lib.panda_limits((0.0, -1.0, home_z - 0.01), (1.0, 1.0, 1.0))
    down = np.array([0, 0.3, 0, 0, 0, 0, 0, 0.0])  # shoulder forward: the tool drops
    command = limits_lib.safe_command(down, panda.HOME_JOINT_POSITION, limits)
    assert "workspace" in command.clipped
    assert 0.0 <= command.action[1] < 0.3
    _within(command.action, panda.HOME_JOINT_POSITION, limits)


def test_random_commands_from_random_states_stay_within_every_limit():
    rng = np.random.default_rng(0)
    checked = 0
    while checked < 200:
        q = rng.uniform(LIMITS.joint_position_min, LIMITS.joint_position_max)
        tool = limits_lib.tool_position(q)
        if np.any(tool < LIMITS.workspace_min) or np.any(tool > LIMITS.workspace_max):
            continue
        action = np.append(rng.uniform(-3, 3, 7), rng.uniform(-1, 2))
        _within(limits_lib.safe_command(action, q, LIMITS).action, q)
        checked += 1


@pytest.mark.parametrize("bad", [np.full(8, np.nan), np.array([np.inf] + [0] * 7), np.zeros(7)])
def test_non_finite_or_misshaped_commands_are_refused(bad):
    with pytest.raises(ValueError, match="refusing"):
        limits_lib.safe_command(bad, panda.HOME_JOINT_POSITION, LIMITS)


def test_an_inverted_workspace_box_is_refused():
    with pytest.raises(ValueError, match="workspace"):
        limits_lib.panda_limits((0.5, 0, 0), (0.4, 1, 1))
