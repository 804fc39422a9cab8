"""`sim.layout_spread`: resets draw the centred fraction s of each task's layout variety.

Physics only (no rendering): the objects' settled places across seeds, at spreads 0, 0.3, 1.
"""

import numpy as np
import pytest

from vlaw.config import experiment_config
from vlaw.rollout.station import TaskSpec
from vlaw.sim.station import SimStation
from vlaw.sim.tasks import TASKS, make_task, stack

# Bodies whose place is the layout, per task (stack: the blocks, checked against their spots).
PLACED = {
    "scoop": ("scoop", "bowl"),
    "draw": ("board", "stand"),
    "erase": ("board", "tissue"),
    "open_book": ("book",),
}
SEEDS = range(6)
SETTLE_TOLERANCE = 0.004  # metres objects may move while settling under gravity


def _places(task: str, spread: float) -> np.ndarray:
    """(seeds, bodies, 2): each placed body's x-y after each seed's reset."""
    station = SimStation(task, spread)
    places = []
    for seed in SEEDS:
        station.reset(TaskSpec(task, seed))
        places.append([station.data.body(name).xpos[:2].copy() for name in PLACED[task]])
    return np.array(places)


@pytest.mark.parametrize("task", sorted(PLACED))
def test_spread_zero_is_one_layout_and_spread_narrows(task):
    nominal = _places(task, 0.0)
    np.testing.assert_allclose(nominal, nominal[:1].repeat(len(SEEDS), 0), atol=SETTLE_TOLERANCE)
    narrow = np.abs(_places(task, 0.3) - nominal[0]).max()
    full = np.abs(_places(task, 1.0) - nominal[0]).max()
    assert narrow < 0.5 * full, (task, narrow, full)
    assert narrow > SETTLE_TOLERANCE  # 0.3 still varies


def test_stack_blocks_sit_on_their_spots_below_full_spread():
    station = SimStation("stack", 0.0)
    pairs = set()
    for seed in SEEDS:
        station.reset(TaskSpec("stack", seed))
        blocks = np.array([station.data.body(f"block_{c}").xpos[:2] for c in stack.COLORS])
        gaps = np.linalg.norm(blocks[:, None] - stack.NOMINAL_SPOTS[None], axis=-1)
        assert gaps.min(axis=1).max() < SETTLE_TOLERANCE
        assert sorted(gaps.argmin(axis=1)) == [0, 1, 2, 3]  # one block per spot
        pairs.add((station.task.top, station.task.bottom))
    assert len(pairs) > 1  # which block goes on which still varies: it is the instruction


def test_task_uniform_is_the_plain_draw_at_full_spread_and_centred_below():
    task = make_task("draw")
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(task.uniform(a, 0.2, 0.6, 5), b.uniform(0.2, 0.6, 5))
    task = make_task("draw", 0.25)
    draws = task.uniform(np.random.default_rng(3), [0.0, -1.0], [1.0, 1.0], (1000, 2))
    assert draws[:, 0].min() >= 0.375 and draws[:, 0].max() <= 0.625
    assert draws[:, 1].min() >= -0.25 and draws[:, 1].max() <= 0.25


@pytest.mark.parametrize("spread", [-0.1, 1.5])
def test_make_task_refuses_a_spread_outside_zero_one(spread):
    with pytest.raises(ValueError, match="layout_spread"):
        make_task("scoop", spread)


def test_task_pools_hand_the_configured_spread_to_the_simulator(monkeypatch):
    from vlaw.rollout import episodes
    from vlaw.sim import workers

    seen = []

    class RecordingPool:
        def __init__(self, *args, layout_spread=1.0, **kwargs):
            seen.append(layout_spread)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(workers, "StationPool", RecordingPool)
    config = experiment_config(("scoop",), "tiny")
    config.sim.layout_spread = 0.3
    specs = [TaskSpec("scoop", 1)]
    assert [s for _, s in episodes.task_pools(config, specs)] == [specs]
    assert seen == [0.3]


def test_every_task_has_a_spread_check():
    assert set(PLACED) | {"stack"} == set(TASKS)
