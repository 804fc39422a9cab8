"""Stacking: "stack the A block on the B block" among four coloured 5 cm blocks.

Appendix B: success if A is stably on top of B (supported by B, not the table, and not held by
the gripper) and the stack stays upright through a short holding period (the station simulates
that period before calling `success`).
"""

import numpy as np

from vlaw.sim.tasks import base

BLOCK_HALF = 0.025
COLORS = {
    "red": "0.85 0.15 0.12 1",
    "green": "0.15 0.65 0.2 1",
    "blue": "0.15 0.3 0.85 1",
    "yellow": "0.95 0.8 0.1 1",
}

# Below full layout spread: the blocks' nominal places (a 14 cm square in front of the robot)
# and how far each may stray from its place at spread 1 (they stay > 10 cm apart).
NOMINAL_SPOTS = np.array([[0.44, -0.07], [0.44, 0.07], [0.58, -0.07], [0.58, 0.07]])
SPOT_JITTER = 0.02


class StackTask(base.Task):
    name = "stack"

    @classmethod
    def model_xml(cls):
        bodies = "\n".join(
            f'<body name="block_{color}" pos="0.5 0 {BLOCK_HALF}">'
            f'<freejoint name="block_{color}"/>'
            f'<geom type="box" size="{BLOCK_HALF} {BLOCK_HALF} {BLOCK_HALF}" rgba="{rgba}" '
            f'mass="0.08" friction="1.2 0.01 0.001" condim="4"/></body>'
            for color, rgba in COLORS.items()
        )
        return "", bodies, ""

    def __init__(self):
        self.top = "red"
        self.bottom = "green"

    def reset(self, model, data, rng):
        names = list(COLORS)
        self.top, self.bottom = (names[i] for i in rng.choice(len(names), 2, replace=False))
        if self.layout_spread == 1.0:
            points = base.sample_separated(rng, len(names), min_distance=0.1)
        else:  # one block per corner of a square, shuffled, each jittered about its corner
            jitter = self.uniform(rng, -SPOT_JITTER, SPOT_JITTER, (len(names), 2))
            points = NOMINAL_SPOTS[rng.permutation(len(names))] + jitter
        for (x, y), color in zip(points, names):
            base.free_joint_pose(
                model,
                data,
                f"block_{color}",
                (x, y, BLOCK_HALF),
                self.uniform(rng, -np.pi / 4, np.pi / 4),
            )
        return f"stack the {self.top} block on the {self.bottom} block"

    def success(self, model, data) -> bool:
        top = data.body(f"block_{self.top}")
        bottom = data.body(f"block_{self.bottom}")
        offset = top.xpos - bottom.xpos
        on_top = np.linalg.norm(offset[:2]) < BLOCK_HALF and abs(offset[2] - 2 * BLOCK_HALF) < 0.01
        bottom_on_table = abs(bottom.xpos[2] - BLOCK_HALF) < 0.01
        # A cube is upright when one of its axes points (nearly) straight up.
        upright = all(np.abs(b.xmat.reshape(3, 3)[2]).max() > 0.97 for b in (top, bottom))
        top_geoms = base.body_geoms(model, f"block_{self.top}")
        gripper = base.body_geoms(model, "finger_left") | base.body_geoms(model, "finger_right")
        held = base.geoms_in_contact(data, top_geoms, gripper)
        on_table = base.geoms_in_contact(data, top_geoms, {model.geom("table").id})
        still = np.linalg.norm(data.joint(f"block_{self.top}").qvel[:3]) < 0.05
        return bool(on_top and bottom_on_table and upright and not held and not on_table and still)

    def plan(self, station):
        top = station.data.body(f"block_{self.top}")
        position = top.xpos.copy()
        yaw = base.grasp_yaw(base.yaw_of(top.xmat.reshape(3, 3)))
        yield base.Waypoint(position + [0, 0, 0.12], yaw)
        yield base.Waypoint(position + [0, 0, 0.002], yaw, tolerance=0.006, max_speed=0.3)
        yield base.Waypoint(
            position + [0, 0, 0.002], yaw, gripper=1.0, min_steps=6, tolerance=1.0, noisy=False
        )
        yield base.Waypoint(position + [0, 0, 0.15], yaw, gripper=1.0)
        bottom = station.data.body(f"block_{self.bottom}")
        target = bottom.xpos.copy()
        yaw = base.grasp_yaw(base.yaw_of(bottom.xmat.reshape(3, 3)))
        yield base.Waypoint(target + [0, 0, 0.15], yaw, gripper=1.0, tolerance=0.008)
        place = target + [0, 0, 2 * BLOCK_HALF + 0.006]
        yield base.Waypoint(place, yaw, gripper=1.0, tolerance=0.005, max_speed=0.25)
        yield base.Waypoint(place, yaw, gripper=0.0, min_steps=5, tolerance=1.0, noisy=False)
        yield base.Waypoint(place + [0, 0, 0.12], yaw, gripper=0.0, noisy=False)
