"""No trivial or adversarial policy is labelled a success (vlaw/sim/adversaries.py), and each
adversary really performs its shortcut (else its failure would prove nothing). Physics only.
The default run tries two seeds per policy; the slow sweep tries the issue's 20 seeds."""

import numpy as np
import pytest

from vlaw.rollout.station import TaskSpec
from vlaw.sim import adversaries
from vlaw.sim.expert import ScriptedExpert
from vlaw.sim.station import SimStation
from vlaw.sim.tasks import TASKS, base, draw, open_book, stack

MAX_STEPS = 150  # the sim preset's episode length
PAIRS = [(task, name) for task in sorted(TASKS) for name in adversaries.policies_for(task)]


@pytest.fixture(scope="module")
def stations():
    return {task: SimStation(task) for task in TASKS}


def _fingers(model) -> set[int]:
    return base.body_geoms(model, "finger_left") | base.body_geoms(model, "finger_right")


def _shortcut_taken(station: SimStation, name: str) -> bool:
    """Whether the final state shows the adversary's shortcut (trivial policies: True)."""
    model, data, task = station.model, station.data, station.task
    if name == "stack_held_on_top":
        offset = data.body(f"block_{task.top}").xpos - data.body(f"block_{task.bottom}").xpos
        on_top = np.linalg.norm(offset[:2]) < stack.BLOCK_HALF and offset[2] > stack.BLOCK_HALF
        held = base.geoms_in_contact(
            data, base.body_geoms(model, f"block_{task.top}"), _fingers(model)
        )
        return bool(on_top and held)
    if name == "stack_knocked_over":
        offset = data.body(f"block_{task.top}").xpos - data.body(f"block_{task.bottom}").xpos
        return bool(np.linalg.norm(offset[:2]) > 2 * stack.BLOCK_HALF)
    if name == "book_lifted_and_held":
        angle = task.cover_angle(model, data)
        held = base.geoms_in_contact(data, base.body_geoms(model, "cover"), _fingers(model))
        return bool(np.deg2rad(35) < angle < open_book.OPEN_ANGLE and held)
    if name == "erase_on_edge":
        return task.remaining_fraction() < 0.95  # it pressed hard enough to wipe some ink
    if name == "scoop_dunked":
        return task.scoop_in_bowl(data) and task.counts(data)["in_scoop"] >= 12
    if name in ("draw_small_circle", "draw_open_arc"):
        if task.num_strokes() != 1 or len(task.points) < 20:
            return False
        score = draw.circle_score(np.array(task.points))
        if name == "draw_small_circle":  # a closed circle, too small to count
            return score["radius"] < 0.02 and score["gap"] < 0.35
        return 0.02 <= score["radius"] <= 0.09 and score["coverage"] < 0.9  # open, right size
    return True


@pytest.mark.parametrize("task, name", PAIRS)
def test_trivial_and_adversarial_policies_fail(stations, task, name):
    station = stations[task]
    for seed in (0, 1):
        success, _ = adversaries.run_policy(station, name, seed, MAX_STEPS)
        assert _shortcut_taken(station, name), f"{name} did not take its shortcut (seed {seed})"
        assert not success, f"{task}: {name} is labelled a success (seed {seed})"


def test_the_knocked_over_stack_was_a_success_before_the_knock(stations):
    """The knock-over adversary first builds the stack the expert builds: the label turns."""
    station = stations["stack"]
    station.reset(TaskSpec("stack", 0))
    expert = ScriptedExpert(station)
    while (action := expert.act()) is not None:
        station.apply_action(action)
    assert station.label()
    success, _ = adversaries.run_policy(station, "stack_knocked_over", 0, MAX_STEPS)
    assert not success and _shortcut_taken(station, "stack_knocked_over")


def test_policies_for_covers_every_task():
    for task in TASKS:
        names = adversaries.policies_for(task)
        assert set(adversaries.TRIVIAL) <= set(names)
        assert len(names) > len(adversaries.TRIVIAL), f"no adversary tries {task}'s shortcut"
    with pytest.raises(ValueError, match="scoop adversary"):
        adversaries.make_policy("scoop_dunked", SimStation("stack"))


@pytest.mark.slow
@pytest.mark.parametrize("task, name", PAIRS)
def test_no_policy_succeeds_on_twenty_seeds(stations, task, name):
    station = stations[task]
    outcomes = [adversaries.run_policy(station, name, seed, MAX_STEPS)[0] for seed in range(20)]
    assert not any(outcomes), f"{task}: {name} succeeds on seeds {np.flatnonzero(outcomes)}"
