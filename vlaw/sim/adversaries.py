"""Policies that must never be labelled a success: trivial ones, and adversarial scripts that
each try a task's shortcut.

A learned policy (DSRL above all) searches for whatever the success label rewards, so every
success test is tried against the shortcuts a tester would try first (tests/sim/
test_adversaries.py; rates in benchmarks/RESULTS.md, `benchmarks/sim.py --adversaries`):

- trivial: no motion, uniform random actions, the gripper alone, and closed-gripper sweeps of
  the workspace low (through the objects) and high;
- stack: the block held just on top of the other (never let go), or a stack knocked over;
- open_book: the cover lifted halfway by its tab and held there;
- erase: the tissue pressed on its edge, once on the middle of every stroke (on its side the
  arm cannot press it with a top grasp; tests/sim/test_tasks.py presses it there directly);
- scoop: the full scoop set down in the bowl and let go (never poured);
- draw: a closed circle too small to count, or an open arc of the right size.

Adversarial scripts reuse the experts' waypoint plans (`ScriptedExpert(plan=...)`), so they
move as competently as the expert and differ only in the shortcut.
"""

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

from vlaw.rollout.station import TaskSpec
from vlaw.sim.expert import ScriptedExpert
from vlaw.sim.tasks import base, erase, stack, whiteboard
from vlaw.sim.tasks.base import Waypoint

HOLD_STEPS = 1000  # "until the episode ends": longer than any episode
SWEEP_HEIGHTS = {"sweep_low": 0.02, "sweep_high": 0.2}  # tool height of a sweep, metres
SWEEP_LINES_X = np.arange(0.36, 0.70, 0.04)  # the sweep's passes across the table, metres


class TrivialPolicy:
    """`act()` -> (8,) action from a fixed rule: "zero", "random" or "gripper"."""

    def __init__(self, kind: str, seed: int = 0):
        if kind not in ("zero", "random", "gripper"):
            raise ValueError(f"unknown trivial policy {kind!r}")
        self.kind = kind
        self.rng = np.random.default_rng(seed)
        self.step = 0

    def act(self) -> np.ndarray:
        self.step += 1
        if self.kind == "random":
            return np.r_[self.rng.uniform(-1, 1, 7), self.rng.uniform(0, 1)]
        gripper = float((self.step // 15) % 2) if self.kind == "gripper" else 0.0
        return np.r_[np.zeros(7), gripper]


def sweep_plan(height: float) -> Iterator[Waypoint]:
    """A closed gripper zig-zagging over the whole workspace at one tool height (about one
    episode long)."""
    for k, x in enumerate(SWEEP_LINES_X):
        for y in (-0.28, 0.28) if k % 2 == 0 else (0.28, -0.28):
            yield Waypoint(np.array([x, y, height]), gripper=1.0, max_steps=25, max_speed=0.5)


def hold(waypoint: Waypoint) -> Waypoint:
    """Stay at `waypoint`, gripper as it is, until the episode ends."""
    return dataclasses.replace(
        waypoint, tolerance=1.0, min_steps=HOLD_STEPS, max_steps=HOLD_STEPS, noisy=False
    )


def until_release(plan: Iterator[Waypoint]) -> Iterator[Waypoint]:
    """Follows `plan` up to the moment it would open the closed gripper, then holds on."""
    closed = None
    for waypoint in plan:
        if closed is not None and waypoint.gripper < closed.gripper:
            yield hold(closed)
            return
        if waypoint.gripper >= 1.0:
            closed = waypoint
        yield waypoint


def stack_knocked_over(station) -> Iterator[Waypoint]:
    """Stacks as the expert does, then sweeps the closed hand through the tower."""
    yield from station.task.plan(station)
    tower = station.data.body(f"block_{station.task.bottom}").xpos.copy()
    height = 3 * stack.BLOCK_HALF  # through the upper block
    side = np.array([0.0, 0.14, 0.0])
    yield Waypoint(tower + side + [0, 0, height + 0.1], gripper=1.0)
    yield Waypoint(tower + side + [0, 0, height], gripper=1.0, tolerance=0.01)
    yield Waypoint(tower - side + [0, 0, height], gripper=1.0, max_speed=0.5, noisy=False)
    yield Waypoint(tower - side + [0, 0, height + 0.1], gripper=1.0, noisy=False)


def scoop_dunked(station) -> Iterator[Waypoint]:
    """Carries the full scoop over the bowl, sets it down inside the bowl level, lets go."""
    task = station.task
    yaw, over_bowl = yield from task.carry_to_bowl(station)
    cup_bottom = station.data.body("scoop").xpos[2]
    down = over_bowl - [0, 0, cup_bottom - 0.012]  # the cup's floor just above the bowl's
    yield Waypoint(down, yaw, gripper=1.0, max_speed=0.2, tolerance=0.008, noisy=False)
    yield Waypoint(down, yaw, gripper=0.0, min_steps=6, tolerance=1.0, noisy=False)
    yield Waypoint(down + [0, 0, 0.1], yaw, gripper=0.0, noisy=False)


def erase_pressed_askew(station, tilt_deg: float) -> Iterator[Waypoint]:
    """Picks up the tissue, tilts it by `tilt_deg` about the tool's x axis and presses it once
    onto the middle of every stroke, with its lowest edge along the stroke."""
    task, data = station.task, station.data
    yaw, _ = yield from task.pick_up(station)
    for stroke in task.strokes:
        middle = whiteboard.to_world(data, np.r_[stroke[len(stroke) // 2], 0.0])[0]
        chord = whiteboard.to_world(data, np.c_[stroke[[0, -1]], np.zeros(2)])
        heading = np.arctan2(*(chord[1] - chord[0])[1::-1])
        stroke_yaw = base.grasp_yaw(heading, symmetry=np.pi)  # the lowest edge: the tool's x
        # Lean the hand outwards (the tissue below it reaching away from the robot), so the
        # wrist stays nearer the base, where the arm can still push down.
        outward = np.deg2rad(tilt_deg) * np.array([1.0, -1.0])
        approach = [base.tool_rotation(stroke_yaw, t)[:2, 2] @ middle[:2] for t in outward]
        tilt = outward[int(np.argmax(approach))]
        yield Waypoint(middle + [0, 0, 0.12], stroke_yaw, gripper=1.0, tilt=tilt, max_steps=30)
        # Aim the tissue's lowest edge at the stroke's middle, PRESS_DEPTH into the board.
        tcp, _ = station.tcp_pose()
        corners = _box_corners(data, "tissue", erase.TISSUE_HALF)
        lowest = corners[np.argsort(corners[:, 2])[:2]].mean(axis=0)  # the lowest edge
        target = tcp + np.r_[middle[:2] - lowest[:2], whiteboard.BOARD_TOP - lowest[2]]
        press = target - [0, 0, erase.PRESS_DEPTH]
        yield Waypoint(press, stroke_yaw, gripper=1.0, tilt=tilt, max_speed=0.2, planar=True)
        yield Waypoint(
            press, stroke_yaw, gripper=1.0, tilt=tilt, min_steps=8, tolerance=1.0, noisy=False
        )
        yield Waypoint(press + [0, 0, 0.1], stroke_yaw, gripper=1.0, tilt=tilt, noisy=False)


def _box_corners(data, geom: str, half) -> np.ndarray:
    """World positions (8, 3) of a box geom's corners."""
    signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
    box = data.geom(geom)
    return box.xpos + (signs * np.asarray(half)) @ box.xmat.reshape(3, 3).T


def draw_circle(station, radius: float, turns: float) -> Iterator[Waypoint]:
    return station.task.circle_plan(station, radius, turns)


# name -> (task it applies to, or "" for every task; the plan it follows on a station)
ADVERSARIES: dict[str, tuple[str, Callable]] = {
    "sweep_low": ("", lambda station: sweep_plan(SWEEP_HEIGHTS["sweep_low"])),
    "sweep_high": ("", lambda station: sweep_plan(SWEEP_HEIGHTS["sweep_high"])),
    "stack_held_on_top": ("stack", lambda station: until_release(station.task.plan(station))),
    "stack_knocked_over": ("stack", stack_knocked_over),
    "book_lifted_and_held": ("open_book", lambda s: until_release(s.task.plan(s))),
    "erase_on_edge": ("erase", lambda station: erase_pressed_askew(station, 45.0)),
    "scoop_dunked": ("scoop", scoop_dunked),
    "draw_small_circle": ("draw", lambda station: draw_circle(station, 0.012, 1.08)),
    "draw_open_arc": ("draw", lambda station: draw_circle(station, 0.045, 0.6)),
}
TRIVIAL = ("zero", "random", "gripper", "sweep_low", "sweep_high")


def policies_for(task: str) -> list[str]:
    """Every trivial and adversarial policy that applies to `task`."""
    return list(TRIVIAL) + [
        name for name, (target, _) in ADVERSARIES.items() if target == task and name not in TRIVIAL
    ]


def make_policy(name: str, station, seed: int = 0):
    """A policy for a freshly reset station: an object whose `act()` returns an (8,) action,
    or None once its script is finished."""
    if name in ("zero", "random", "gripper"):
        return TrivialPolicy(name, seed)
    target, plan = ADVERSARIES[name]
    if target and target != station.task_name:
        raise ValueError(f"{name!r} is a {target} adversary, not one for {station.task_name}")
    return ScriptedExpert(station, noise=0.0, seed=seed, plan=plan(station))


def run_policy(station, name: str, seed: int, max_steps: int) -> tuple[bool, int]:
    """Resets `station` to `seed`, runs policy `name` for up to `max_steps` steps (or until its
    script ends) and returns (the station's success label, steps taken)."""
    station.reset(TaskSpec(station.task_name, seed))
    policy = make_policy(name, station, seed)
    for step in range(max_steps):
        action = policy.act()
        if action is None:
            return station.label(), step
        station.apply_action(action)
    return station.label(), max_steps
