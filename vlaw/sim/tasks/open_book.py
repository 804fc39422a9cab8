"""Open Book: "open the book cover" — a book whose front cover is a hinged body.

The book (a heavy free body: the page block) lies on the table with its spine towards the
robot; the cover is hinged along the spine and has an index tab standing on its free edge, the
only part a parallel gripper can hold. Four books differ in colour (the paper uses four books).

Appendix B: success if the cover is opened beyond a predefined angle (here 100 degrees, past
vertical, so gravity keeps it open) and remains open at the end (after the holding period, with
the gripper no longer holding it).
"""

import numpy as np

from vlaw.sim.tasks import base

PAGES_HALF = (0.08, 0.11, 0.015)  # page block half-extents (x across, y along the spine, z)
COVER_THICKNESS = 0.004
COVER_OVERHANG = 0.012  # the cover sticks out past the pages on the free edge
TAB_HALF = (0.006, 0.03, 0.017)  # the index tab standing on the cover's free edge
OPEN_ANGLE = np.deg2rad(100.0)
LIFT_ANGLE = np.deg2rad(55.0)  # the expert lifts the cover by its tab this far ...
PUSH_HEIGHT = 0.1  # ... then pushes it over at this height above the hinge (tool centre) ...
PUSH_START = 0.15  # ... starting this far out from the hinge ...
PUSH_PAST = 0.07  # ... and ending this far past it
BOOK_COLORS = (
    ("0.55 0.12 0.12 1", "0.95 0.93 0.85 1"),
    ("0.12 0.25 0.5 1", "0.97 0.96 0.9 1"),
    ("0.15 0.4 0.2 1", "0.92 0.9 0.82 1"),
    ("0.3 0.3 0.32 1", "0.96 0.95 0.92 1"),
)


class OpenBookTask(base.Task):
    name = "open_book"

    @classmethod
    def model_xml(cls):
        px, py, pz = PAGES_HALF
        cover_half_x = px + COVER_OVERHANG / 2
        cover_length = 2 * px + COVER_OVERHANG
        tab_x = cover_length - TAB_HALF[0] - 0.004
        bodies = f"""
    <body name="book" pos="0.55 0 {pz}">
      <freejoint name="book"/>
      <geom name="pages" type="box" size="{px} {py} {pz}" rgba="0.95 0.93 0.85 1" mass="1.5"
            friction="1.2 0.01 0.001"/>
      <geom name="back_cover" type="box" size="{px + 0.004} {py + 0.004} 0.002"
            pos="0 0 {-pz + 0.002}" rgba="0.55 0.12 0.12 1" contype="0" conaffinity="0"/>
      <body name="cover" pos="{-px} 0 {pz}">
        <joint name="cover_hinge" type="hinge" axis="0 -1 0" range="0 3.05" damping="0.005"
               frictionloss="0.05" armature="0.001"/>
        <geom name="cover" type="box" size="{cover_half_x} {py + 0.004} {COVER_THICKNESS / 2}"
              pos="{cover_half_x} 0 {COVER_THICKNESS / 2}" rgba="0.55 0.12 0.12 1" mass="0.08"/>
        <geom name="tab" type="box" size="{TAB_HALF[0]} {TAB_HALF[1]} {TAB_HALF[2]}"
              pos="{tab_x} 0 {COVER_THICKNESS + TAB_HALF[2]}" rgba="0.85 0.7 0.2 1"
              mass="0.01" friction="1.5 0.02 0.002" condim="4"/>
      </body>
    </body>"""
        return "", bodies, ""

    def __init__(self):
        self.book_yaw = 0.0

    def reset(self, model, data, rng):
        # Spine parallel to the robot's reach (the cover opens sideways, where the wrist can
        # follow it), turned by up to 20 degrees.
        self.book_yaw = np.pi / 2 + self.uniform(rng, -np.deg2rad(20), np.deg2rad(20))
        x = self.uniform(rng, 0.45, 0.60)
        y = self.uniform(rng, -0.2, 0.0)
        base.free_joint_pose(model, data, "book", (x, y, PAGES_HALF[2]), self.book_yaw)
        data.qpos[model.joint("cover_hinge").qposadr[0]] = 0.0
        cover, pages = BOOK_COLORS[rng.integers(len(BOOK_COLORS))]
        # Per-station model copy: colour is the only per-seed model change (render only).
        rgba = np.array([float(v) for v in cover.split()])
        for geom in ("cover", "back_cover"):
            model.geom_rgba[model.geom(geom).id] = rgba
        model.geom_rgba[model.geom("pages").id] = [float(v) for v in pages.split()]
        return "open the book cover"

    def cover_angle(self, model, data) -> float:
        return float(data.qpos[model.joint("cover_hinge").qposadr[0]])

    def success(self, model, data) -> bool:
        gripper = base.body_geoms(model, "finger_left") | base.body_geoms(model, "finger_right")
        held = base.geoms_in_contact(data, base.body_geoms(model, "cover"), gripper)
        return bool(self.cover_angle(model, data) > OPEN_ANGLE and not held)

    def plan(self, station):
        data, model = station.data, station.model
        tab = data.geom("tab")
        tab_axis = tab.xmat.reshape(3, 3)[:, 1]
        tab_position = tab.xpos.copy()
        # Fingers close across the tab: the tool's x axis runs along it (and the spine).
        yaw = base.grasp_yaw(np.arctan2(tab_axis[1], tab_axis[0]), symmetry=np.pi)
        yield base.Waypoint(tab_position + [0, 0, 0.1], yaw, gripper=0.4)
        yield base.Waypoint(tab_position, yaw, gripper=0.4, tolerance=0.005, max_speed=0.25)
        yield base.Waypoint(tab_position, yaw, gripper=1.0, min_steps=6, tolerance=1.0, noisy=False)
        # Lift the cover by the tab along its arc about the hinge, turning the tool with it,
        # as far as the wrist turns comfortably ...
        hinge = model.joint("cover_hinge").id
        anchor, axis = data.xanchor[hinge].copy(), data.xaxis[hinge].copy()
        tcp_position, tcp_rotation = station.tcp_pose()
        for angle in np.linspace(0.0, LIFT_ANGLE, 5)[1:]:
            rotation = base.axis_angle_matrix(axis, angle)
            yield base.Waypoint(
                anchor + rotation @ (tcp_position - anchor),
                gripper=1.0,
                rotation=rotation @ tcp_rotation,
                tolerance=0.02,
                min_steps=3,
                max_steps=12,
                max_speed=0.3,
                noisy=False,
            )
        rotation = base.axis_angle_matrix(axis, LIFT_ANGLE)
        release = anchor + rotation @ (tcp_position - anchor)
        yield base.Waypoint(
            release,
            gripper=0.4,
            rotation=rotation @ tcp_rotation,
            min_steps=4,
            tolerance=1.0,
            noisy=False,
        )
        away = release - (rotation @ tcp_rotation)[:, 2] * 0.06
        yield base.Waypoint(
            away, gripper=0.4, rotation=rotation @ tcp_rotation, noisy=False, max_steps=10
        )
        # ... then, pointing down again, push the leaning cover over the spine with the closed
        # fingers held flat against its inside.
        outward = tab_position - anchor
        outward[2] = 0.0
        outward /= np.linalg.norm(outward)
        height = anchor[2] + PUSH_HEIGHT
        start = anchor + outward * PUSH_START + [0, 0, PUSH_HEIGHT]
        yield base.Waypoint(start + [0, 0, 0.1], yaw, gripper=1.0, noisy=False)
        yield base.Waypoint(start, yaw, gripper=1.0, tolerance=0.01)
        end = anchor - outward * PUSH_PAST
        end[2] = height
        yield base.Waypoint(end, yaw, gripper=1.0, max_speed=0.2, tolerance=0.01, noisy=False)
        yield base.Waypoint(end + [0, 0, 0.1], yaw, gripper=1.0, noisy=False)
