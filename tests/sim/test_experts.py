"""Scripted experts succeed at noise 0; noise makes them imperfect; random actions fail.

Physics only (no rendering), so these run in the test process. The long sweeps are `slow`.
"""

import numpy as np
import pytest

from vlaw.rollout.station import TaskSpec
from vlaw.sim.expert import ScriptedExpert
from vlaw.sim.station import SimStation
from vlaw.sim.tasks import TASKS

MAX_STEPS = 150  # the sim preset's episode length


def run_expert(station: SimStation, seed: int, noise: float) -> tuple[bool, int]:
    station.reset(TaskSpec(station.task_name, seed))
    expert = ScriptedExpert(station, noise=noise, seed=seed)
    for step in range(MAX_STEPS):
        action = expert.act()
        if action is None:
            return station.label(), step
        station.apply_action(action)
    return station.label(), MAX_STEPS


def run_random(station: SimStation, seed: int, steps: int) -> bool:
    station.reset(TaskSpec(station.task_name, seed))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        station.apply_action(np.r_[rng.uniform(-1, 1, 7), rng.uniform(0, 1)])
    return station.label()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_succeeds_at_noise_zero(task):
    # At least 4 of 5: the noiseless scoop expert succeeds 56/60 (benchmarks/RESULTS.md); it
    # misses when a layout puts the pour pose near joint 2's limit (seed 0 among them).
    station = SimStation(task)
    outcomes = {seed: run_expert(station, seed, noise=0.0) for seed in range(5)}
    failed = [seed for seed, (success, _) in outcomes.items() if not success]
    assert len(failed) <= 1, f"{task} expert failed on seeds {failed}"
    assert all(steps < MAX_STEPS for success, steps in outcomes.values() if success)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_random_policy_fails(task):
    station = SimStation(task)
    assert not run_random(station, seed=3, steps=45)


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_success_bands(task):
    """Noise 0: at least 80% over 20 seeds; the sim preset's noise 0.3: between 20% and 95%.

    80 %, not 90 %: the low-passed command that lets a policy fit the demos (issue 13) costs the
    scoop expert seeds 17 and 18 of 0-19 (0.90 -> 0.80; benchmarks/RESULTS.md, "A smoother
    expert"); a failed demonstration weighs 0 in training, so it costs data, not correctness."""
    station = SimStation(task)
    clean = np.mean([run_expert(station, seed, 0.0)[0] for seed in range(20)])
    noisy = np.mean([run_expert(station, seed, 0.3)[0] for seed in range(20)])
    assert clean >= 0.8, clean
    assert 0.2 <= noisy <= 0.95, noisy


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_random_policy_almost_never_succeeds(task):
    station = SimStation(task)
    assert np.mean([run_random(station, seed, 150) for seed in range(20)]) <= 0.05


def test_draw_expert_circles_the_board_centre():
    """The circle's place is one the cameras show (the board's centre), not a seeded point no
    observation reveals: demos that disagree on it teach a policy no circle at all."""
    station = SimStation("draw", layout_spread=0.3)
    for seed in (1, 2):
        assert run_expert(station, seed, noise=0.0)[0]
        points = np.array(station.task.points)
        ids = np.array(station.task.stroke_ids)
        stroke = points[ids == np.bincount(ids).argmax()]
        np.testing.assert_allclose(stroke.mean(axis=0), [0.0, 0.0], atol=0.01)
