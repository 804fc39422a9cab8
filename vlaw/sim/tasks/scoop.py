"""Scooping: "transfer some A to the bowl" with a hand-held scoop full of granular snacks.

A scoop (an open cup on a handle) holding small spheres (peanuts, candies or almonds, told
apart by colour) and a bowl are placed at random; the robot grasps the handle, carries the
scoop over the bowl and tips it about the handle's axis. Granules are free spheres, so tipping
too fast or too far from the bowl spills them.

Appendix B: success if at least a minimum amount was transferred into the bowl and the
majority of the transferred items (those that left the scoop) are in the bowl rather than
spilled. A granule still inside the scoop's cup has not been transferred wherever the scoop is,
and a scoop put down in the bowl is not a transfer: with the cup inside the bowl nothing counts
(otherwise setting the full scoop down in the bowl would pass for pouring). The scene starts
with the scoop filled: the digging half of scooping is not simulated, the carrying and pouring
half is.
"""

import copy

import numpy as np

from vlaw.sim.tasks import base

NUM_GRANULES = 16
GRANULE_RADIUS = 0.0075
CUP_HALF = 0.032  # inner half-width of the scoop's cup
CUP_DEPTH = 0.04
WALL = 0.004
HANDLE_HALF = (0.05, 0.009, 0.009)  # along the handle, across, height
BOWL_RADIUS = 0.075  # inner radius
BOWL_HEIGHT = 0.045
BOWL_SIDES = 10
POUR_TILT_DEG = 125.0
TILT_PROBE_STEPS = 12  # steps each tipping direction is tried on a copy of the simulator
POUR_SHIFT = 0.03  # metres across the handle, away from the side the cup tips to
MIN_IN_BOWL = 4  # "at least a minimum amount" (a quarter of the scoop)
# Below full layout spread (`Task.layout_spread`): the cup's and the bowl's nominal places and
# how far each may stray from them (x, y) at spread 1; the handle then always points right.
NOMINAL_SCOOP = np.array([0.51, -0.1])
NOMINAL_BOWL = np.array([0.51, 0.16])
NOMINAL_JITTER = np.array([0.09, 0.06])
SNACKS = {
    "peanuts": "0.78 0.58 0.33 1",
    "candies": "0.9 0.2 0.45 1",
    "almonds": "0.55 0.35 0.2 1",
}


def _cup_xml() -> str:
    h, d, w = CUP_HALF, CUP_DEPTH / 2, WALL / 2
    outer = h + w
    walls = [
        f'<geom class="scoop" type="box" size="{outer + w} {outer + w} {w}" pos="0 0 {w}"/>',
        f'<geom class="scoop" type="box" size="{w} {outer} {d}" pos="{outer} 0 {2 * w + d}"/>',
        f'<geom class="scoop" type="box" size="{w} {outer} {d}" pos="{-outer} 0 {2 * w + d}"/>',
        f'<geom class="scoop" type="box" size="{outer} {w} {d}" pos="0 {outer} {2 * w + d}"/>',
        f'<geom class="scoop" type="box" size="{outer} {w} {d}" pos="0 {-outer} {2 * w + d}"/>',
    ]
    hx, hy, hz = HANDLE_HALF
    handle = (
        f'<geom name="handle" class="scoop" type="box" size="{hx} {hy} {hz}" '
        f'pos="{outer + w + hx} 0 {2 * w + 2 * d - hz}" friction="1.5 0.02 0.002" condim="4"/>'
    )
    return "\n".join(walls) + "\n" + handle


def _bowl_xml() -> str:
    geoms = [
        f'<geom class="bowl" type="cylinder" size="{BOWL_RADIUS + 0.01} 0.004" pos="0 0 0.004"/>'
    ]
    side = 2 * (BOWL_RADIUS + 0.006) * np.tan(np.pi / BOWL_SIDES)
    for k in range(BOWL_SIDES):
        angle = 2 * np.pi * k / BOWL_SIDES
        x, y = (BOWL_RADIUS + 0.006) * np.cos(angle), (BOWL_RADIUS + 0.006) * np.sin(angle)
        geoms.append(
            f'<geom class="bowl" type="box" size="0.005 {side / 2 + 0.002:.4f} {BOWL_HEIGHT / 2}" '
            f'pos="{x:.4f} {y:.4f} {BOWL_HEIGHT / 2}" euler="0 0 {angle:.4f}"/>'
        )
    return "\n".join(geoms)


def _tilt_direction(station, yaw: float, position: np.ndarray) -> float:
    """+1 or -1: the way to roll the scoop about its handle that the arm can follow.

    One way can run the wrist (joint 6) into its limit before the cup is tipped, depending on
    the arm's posture; the planner tries both for a few steps on a copy of the simulator and
    keeps the one that turns further (a person would feel the same)."""
    from vlaw.sim.expert import operational_space_action, rotation_error

    best_sign, best_error = 1.0, np.inf
    for sign in (1.0, -1.0):
        probe = copy.copy(station)
        probe.data = copy.copy(station.data)
        probe.task = copy.deepcopy(station.task)
        target = base.tool_rotation(yaw, sign * np.deg2rad(POUR_TILT_DEG))
        for _ in range(TILT_PROBE_STEPS):
            arm = operational_space_action(probe, position, target, 0.3)
            probe.apply_action(np.r_[arm, 1.0])
        error = np.linalg.norm(rotation_error(probe.tcp_pose()[1], target))
        if error < best_error:
            best_sign, best_error = sign, error
    return best_sign


class ScoopTask(base.Task):
    name = "scoop"
    noslip_iterations = 3  # the tipped scoop must not creep round in the fingers

    @classmethod
    def model_xml(cls):
        defaults = f"""
    <default class="scoop"><geom rgba="0.3 0.55 0.8 1" density="600"/></default>
    <default class="bowl"><geom rgba="0.92 0.92 0.9 1" density="800"/></default>
    <default class="granule">
      <geom type="sphere" size="{GRANULE_RADIUS}" mass="0.002" friction="0.8 0.005 0.0005"
            solref="0.004 1" rgba="0.78 0.58 0.33 1"/>
    </default>"""
        granules = "\n".join(
            f'<body name="granule_{i}" pos="0 0 {0.3 + i * 0.02}"><freejoint name="granule_{i}"/>'
            f'<geom class="granule"/></body>'
            for i in range(NUM_GRANULES)
        )
        bodies = f"""
    <body name="scoop" pos="0.5 0 0"><freejoint name="scoop"/>
      {_cup_xml()}
    </body>
    <body name="bowl" pos="0.5 0.2 0"><freejoint name="bowl"/>
      {_bowl_xml()}
    </body>
    {granules}"""
        return defaults, bodies, ""

    def __init__(self):
        self.snack = "peanuts"

    def reset(self, model, data, rng):
        self.snack = list(SNACKS)[rng.integers(len(SNACKS))]
        rgba = [float(v) for v in SNACKS[self.snack].split()]
        for i in range(NUM_GRANULES):
            model.geom_rgba[model.body(f"granule_{i}").geomadr[0]] = rgba
        if self.layout_spread == 1.0:
            scoop_xy, bowl_xy = base.sample_separated(
                rng, 2, min_distance=0.24, x_range=(0.42, 0.6), y_range=(-0.2, 0.2)
            )
            # The handle points to the robot's left or right (where the wrist can roll it).
            scoop_yaw = rng.choice([np.pi / 2, -np.pi / 2]) + rng.uniform(-0.3, 0.3)
        else:  # the scoop on the right, its handle pointing away from the bowl on the left
            scoop_xy = NOMINAL_SCOOP + self.uniform(rng, -1.0, 1.0, 2) * NOMINAL_JITTER
            bowl_xy = NOMINAL_BOWL + self.uniform(rng, -1.0, 1.0, 2) * NOMINAL_JITTER
            scoop_yaw = -np.pi / 2 + self.uniform(rng, -0.3, 0.3)
        base.free_joint_pose(model, data, "scoop", (*scoop_xy, 0.0), scoop_yaw)
        base.free_joint_pose(model, data, "bowl", (*bowl_xy, 0.0), self.uniform(rng, 0, np.pi))
        # Fill the cup: a 3x3 grid per layer, jittered so the pile differs per seed.
        spacing = 2 * GRANULE_RADIUS + 0.003
        rotation = base.rot_z(scoop_yaw)
        for i in range(NUM_GRANULES):
            layer, cell = divmod(i, 9)
            local = np.array([(cell % 3 - 1) * spacing, (cell // 3 - 1) * spacing, 0.0])
            local[:2] += rng.uniform(-0.002, 0.002, 2)
            position = np.array([*scoop_xy, WALL + GRANULE_RADIUS + 0.002 + layer * spacing])
            position[:2] += (rotation @ local)[:2]
            base.free_joint_pose(model, data, f"granule_{i}", position)
        return f"transfer some {self.snack} to the bowl"

    def granule_positions(self, data) -> np.ndarray:
        return np.stack([data.body(f"granule_{i}").xpos for i in range(NUM_GRANULES)])

    def counts(self, data) -> dict[str, int]:
        """How many granules are in the bowl, still in the scoop, and spilled elsewhere."""
        positions = self.granule_positions(data)
        bowl = data.body("bowl")
        in_bowl_frame = (positions - bowl.xpos) @ bowl.xmat.reshape(3, 3)
        in_bowl = (np.linalg.norm(in_bowl_frame[:, :2], axis=1) < BOWL_RADIUS + 0.004) & (
            in_bowl_frame[:, 2] < BOWL_HEIGHT + 0.01
        )
        scoop = data.body("scoop")
        in_scoop_frame = (positions - scoop.xpos) @ scoop.xmat.reshape(3, 3)
        in_scoop = (
            (np.abs(in_scoop_frame[:, :2]).max(axis=1) < CUP_HALF + 0.002)
            & (in_scoop_frame[:, 2] > -0.005)
            & (in_scoop_frame[:, 2] < CUP_DEPTH + 0.03)
        )
        in_bowl &= ~in_scoop  # still in the cup: not transferred, even with the cup in the bowl
        return {
            "in_bowl": int(in_bowl.sum()),
            "in_scoop": int(in_scoop.sum()),
            "spilled": int((~in_bowl & ~in_scoop).sum()),
        }

    def scoop_in_bowl(self, data) -> bool:
        """Whether the cup is (even partly) inside the bowl: its bottom below the bowl's rim and
        over the bowl's opening."""
        bowl = data.body("bowl")
        cup = (data.body("scoop").xpos - bowl.xpos) @ bowl.xmat.reshape(3, 3)
        return bool(np.linalg.norm(cup[:2]) < BOWL_RADIUS + CUP_HALF and cup[2] < BOWL_HEIGHT)

    def success(self, model, data) -> bool:
        counts = self.counts(data)
        transferred = counts["in_bowl"] >= MIN_IN_BOWL and counts["in_bowl"] > counts["spilled"]
        return transferred and not self.scoop_in_bowl(data)

    def carry_to_bowl(self, station):
        """Waypoints that grasp the scoop's handle and carry the level cup over the bowl; its
        return value (`yield from`) is (hand yaw, tool position over the bowl)."""
        data = station.data
        handle = data.geom("handle")
        handle_axis = handle.xmat.reshape(3, 3)[:, 0]
        grasp = handle.xpos + handle_axis * 0.015  # towards the handle's end, off the cup wall
        yaw = base.grasp_yaw(np.arctan2(handle_axis[1], handle_axis[0]), symmetry=np.pi)
        yield base.Waypoint(grasp + [0, 0, 0.1], yaw, gripper=0.3)
        yield base.Waypoint(grasp, yaw, gripper=0.3, tolerance=0.005, max_speed=0.25)
        yield base.Waypoint(grasp, yaw, gripper=1.0, min_steps=6, tolerance=1.0, noisy=False)
        lift = grasp + [0, 0, 0.11]
        yield base.Waypoint(lift, yaw, gripper=1.0, max_speed=0.3, noisy=False)
        # Carry the cup over the bowl: the cup hangs at a fixed offset from the tool.
        tcp_position, _ = station.tcp_pose()
        cup_offset = data.body("scoop").xpos - tcp_position
        bowl = data.body("bowl").xpos
        over_bowl = np.array([bowl[0] - cup_offset[0], bowl[1] - cup_offset[1], lift[2]])
        yield base.Waypoint(over_bowl, yaw, gripper=1.0, max_speed=0.35, tolerance=0.008)
        return yaw, over_bowl

    def plan(self, station):
        yaw, over_bowl = yield from self.carry_to_bowl(station)
        # Tip about the handle (the tool's x axis), the way the wrist can turn that far.
        sign = _tilt_direction(station, yaw, over_bowl)
        # Tipped, the cup swings to one side of the handle and pours over its lower rim: start
        # from the other side so that the stream lands near the bowl's middle.
        across = base.tool_rotation(yaw)[:, 1]
        over_bowl = over_bowl - across * sign * POUR_SHIFT
        for tilt in np.deg2rad([40, 80, 110, POUR_TILT_DEG]):
            yield base.Waypoint(
                over_bowl,
                yaw,
                gripper=1.0,
                tilt=sign * tilt,
                tolerance=0.015,
                min_steps=3,
                max_steps=10,
                noisy=False,
            )
        yield base.Waypoint(
            over_bowl,
            yaw,
            gripper=1.0,
            tilt=sign * np.deg2rad(POUR_TILT_DEG),
            min_steps=8,
            tolerance=1.0,
            noisy=False,
        )
        yield base.Waypoint(over_bowl, yaw, gripper=1.0, tilt=0.0, max_steps=15, noisy=False)
