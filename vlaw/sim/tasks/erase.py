"""Erase Marks: "erase all marks using a tissue" — one to three marker strokes on a whiteboard.

The tissue is a crumpled wad: a small box whose contact with the board is a spring of its own
(MuJoCo's direct stiffness/damping `solref`, 1.5 N/mm, independent of the wad's small mass), so
it squashes a few millimetres under the pressure of a wipe. Ink is task state: dots along each
stroke, in board coordinates.
A dot is wiped off when the tissue presses on the board with a total normal force of at least
`ERASE_FORCE` while the tissue's surface is at the dot (within `WIPE_REACH` of the box: the
wad squashes a few millimetres into the board, so a face pressed flat covers the dots beneath
it, while a wad pressed on an edge wipes only the narrow strip along that edge), checked four
times per control step. Pressing too lightly, or missing part of a stroke, leaves ink behind.

Appendix B: success if all visible strokes are removed (at most `MAX_REMAINING` of the ink
left, i.e. no clearly detectable mark) at the end of the episode.
"""

import numpy as np

from vlaw.sim.tasks import base, whiteboard

TISSUE_HALF = (0.022, 0.022, 0.018)
ERASE_FORCE = 2.0  # N: lighter touches smear nothing off
DOT_SPACING = 0.006
DOT_RADIUS = 0.0035
MAX_REMAINING = 0.03  # fraction of ink dots allowed to remain
INK_RGBA = (0.1, 0.15, 0.65, 1.0)
WIPE_REACH = 0.003  # metres: ink this close to the tissue's surface is wiped
PRESS_DEPTH = 0.016  # how far below the surface the expert aims the tissue's underside


def random_stroke(rng: np.random.Generator) -> np.ndarray:
    """A marker stroke in board coordinates: (N, 2) dots along a gently curved line."""
    hx, hy, _ = whiteboard.BOARD_HALF
    limit = np.array([hx, hy]) - whiteboard.INK_MARGIN
    for _ in range(100):
        start = rng.uniform(-limit, limit)
        heading = rng.uniform(0, 2 * np.pi)
        curvature = rng.uniform(-12.0, 12.0)  # 1/m
        length = rng.uniform(0.06, 0.12)
        s = np.arange(0.0, length, DOT_SPACING)
        angle = heading + curvature * s
        steps = np.stack([np.cos(angle), np.sin(angle)], axis=1) * DOT_SPACING
        points = start + np.cumsum(steps, axis=0) - steps[0]
        if np.all(np.abs(points) <= limit):
            return points
    raise RuntimeError("could not draw a stroke inside the board")


class EraseTask(base.Task):
    name = "erase"
    noslip_iterations = 3

    @classmethod
    def model_xml(cls):
        hx, hy, hz = TISSUE_HALF
        bodies = (
            whiteboard.board_xml()
            + f"""
    <body name="tissue" pos="0.4 0.2 {hz}">
      <freejoint name="tissue"/>
      <geom name="tissue" type="box" size="{hx} {hy} {hz}" rgba="0.9 0.93 0.97 1" mass="0.08"
            friction="1.2 0.02 0.002" condim="4"/>
    </body>"""
        )
        # Only the wad's contact with the board is the spring (its grip in the fingers is not).
        extras = """
  <contact>
    <pair geom1="tissue" geom2="board" solref="-1500 -15" condim="3"
          friction="0.3 0.3 0.005 0.0001 0.0001"/>
  </contact>"""
        return "", bodies, extras

    def __init__(self):
        self.strokes: list[np.ndarray] = []  # (N_k, 2) board coordinates
        self.remaining: list[np.ndarray] = []  # (N_k,) bool: ink still there
        self.frame = (np.zeros(3), np.eye(3))

    def reset(self, model, data, rng):
        board_xy = (self.uniform(rng, 0.5, 0.6), self.uniform(rng, -0.12, 0.0))
        whiteboard.place_board(model, data, board_xy, self.uniform(rng, -0.3, 0.3))
        # The tissue lies beside the board, on the side nearer the robot's left.
        tissue_xy = (self.uniform(rng, 0.38, 0.5), self.uniform(rng, 0.17, 0.25))
        tissue_yaw = self.uniform(rng, -np.pi / 4, np.pi / 4)
        base.free_joint_pose(model, data, "tissue", (*tissue_xy, TISSUE_HALF[2]), tissue_yaw)
        # The marks stay as varied at any layout spread: reading them is the task.
        self.strokes = [random_stroke(rng) for _ in range(rng.integers(1, 4))]
        self.remaining = [np.ones(len(stroke), bool) for stroke in self.strokes]
        return "erase all marks using a tissue"

    def after_settle(self, model, data):
        self.frame = whiteboard.board_frame(data)

    def remaining_fraction(self) -> float:
        total = sum(len(r) for r in self.remaining)
        return sum(int(r.sum()) for r in self.remaining) / max(total, 1)

    def after_substeps(self, model, data):
        contacts = whiteboard.contacts_with_board(model, data, {model.geom("tissue").id})
        if sum(force for _, force in contacts) < ERASE_FORCE:
            return
        tissue = data.geom("tissue")
        rotation = tissue.xmat.reshape(3, 3)
        origin, board_rotation = self.frame
        for stroke, remaining in zip(self.strokes, self.remaining):
            world = np.c_[stroke, np.zeros(len(stroke))] @ board_rotation.T + origin
            local = (world - tissue.xpos) @ rotation
            # Distance from each dot to the tissue's box (0 inside it, where it squashes into
            # the board): all three axes, so a tilted wad wipes only where it reaches the board.
            outside = np.maximum(np.abs(local) - np.array(TISSUE_HALF), 0.0)
            remaining &= np.linalg.norm(outside, axis=1) > WIPE_REACH

    def decorations(self):
        dots = [stroke[remaining] for stroke, remaining in zip(self.strokes, self.remaining)]
        points = np.concatenate(dots) if dots else np.zeros((0, 2))
        return whiteboard.ink_decorations(self.frame, points, DOT_RADIUS, INK_RGBA)

    def success(self, model, data) -> bool:
        return self.remaining_fraction() <= MAX_REMAINING

    def pick_up(self, station):
        """Waypoints that grasp the tissue by its top and lift it; the return value (`yield
        from`) is (hand yaw, tool height that presses the tissue PRESS_DEPTH into the board)."""
        data = station.data
        tissue = data.body("tissue")
        grasp = tissue.xpos + [0, 0, TISSUE_HALF[2] - 0.005]  # hold its top, wipe with the rest
        yaw = base.grasp_yaw(base.yaw_of(tissue.xmat.reshape(3, 3)))
        yield base.Waypoint(grasp + [0, 0, 0.1], yaw, gripper=0.0)
        yield base.Waypoint(grasp, yaw, tolerance=0.005, max_speed=0.3)
        yield base.Waypoint(grasp, yaw, gripper=1.0, min_steps=5, tolerance=1.0, noisy=False)
        yield base.Waypoint(grasp + [0, 0, 0.08], yaw, gripper=1.0, noisy=False)
        # The tissue's underside sits this far below the tool centre point.
        tcp_position, _ = station.tcp_pose()
        drop = tcp_position[2] - (data.body("tissue").xpos[2] - TISSUE_HALF[2])
        return yaw, whiteboard.BOARD_TOP + drop - PRESS_DEPTH

    def plan(self, station):
        data = station.data
        yaw, press_height = yield from self.pick_up(station)
        for stroke in self.strokes:
            path = whiteboard.to_world(data, np.c_[stroke, np.zeros(len(stroke))])
            path[:, 2] = press_height
            above = path[0] + [0, 0, 0.05]
            yield base.Waypoint(above, yaw, gripper=1.0, tolerance=0.015)
            yield base.Waypoint(
                path[0],
                yaw,
                gripper=1.0,
                tolerance=0.006,
                max_speed=0.3,
                min_steps=4,
                max_steps=14,
                planar=True,
            )
            for point in path[2::2].tolist() + [path[-1]]:
                yield base.Waypoint(
                    np.array(point),
                    yaw,
                    gripper=1.0,
                    tolerance=0.006,
                    max_speed=0.15,
                    max_steps=8,
                    planar=True,
                    noisy=False,
                )
            yield base.Waypoint(path[-1] + [0, 0, 0.05], yaw, gripper=1.0, noisy=False)
