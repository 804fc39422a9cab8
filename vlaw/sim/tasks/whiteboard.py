"""The whiteboard shared by the Erase and Draw tasks, and the contact queries on it.

The board is a mocap body (fixed in the world, placed per seed through `data.mocap_pos`, so a
station's model is never edited for it). Ink (marker strokes, pen traces) is task state, not
geometry: dots in the board's frame, drawn into the rendered scene as flat discs.
"""

import mujoco
import numpy as np

from vlaw.sim.render import Decoration, flat_disc

BOARD_HALF = (0.13, 0.17, 0.005)  # x, y, thickness
BOARD_TOP = 2 * BOARD_HALF[2]  # the board lies on the table (z = 0)
INK_MARGIN = 0.03  # ink stays this far inside the board's edges


def board_xml() -> str:
    hx, hy, hz = BOARD_HALF
    return f"""
    <body name="board" mocap="true" pos="0.55 0 {hz}">
      <geom name="board" type="box" size="{hx} {hy} {hz}" rgba="0.97 0.97 0.97 1"
            friction="0.6 0.005 0.0001" solref="0.004 1"/>
      <geom type="box" size="{hx + 0.008} {hy + 0.008} {hz * 0.8}" rgba="0.55 0.55 0.6 1"
            contype="0" conaffinity="0"/>
    </body>"""


def place_board(model: mujoco.MjModel, data: mujoco.MjData, center_xy, yaw: float) -> None:
    mocap = model.body("board").mocapid[0]
    data.mocap_pos[mocap] = [center_xy[0], center_xy[1], BOARD_HALF[2]]
    data.mocap_quat[mocap] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]


def board_frame(data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
    """(centre of the board's top surface (3,), rotation (3, 3)) in the world."""
    board = data.body("board")
    rotation = board.xmat.reshape(3, 3).copy()
    return board.xpos + rotation[:, 2] * BOARD_HALF[2], rotation


def to_board(data: mujoco.MjData, points: np.ndarray) -> np.ndarray:
    """World points (N, 3) -> board-surface coordinates (N, 3) (z: height above the surface)."""
    origin, rotation = board_frame(data)
    return (np.atleast_2d(points) - origin) @ rotation


def to_world(data: mujoco.MjData, board_points: np.ndarray) -> np.ndarray:
    origin, rotation = board_frame(data)
    return np.atleast_2d(board_points) @ rotation.T + origin


def contacts_with_board(
    model: mujoco.MjModel, data: mujoco.MjData, geoms: set[int]
) -> list[tuple[np.ndarray, float]]:
    """(world position (3,), normal force N) of each contact between `geoms` and the board."""
    board = model.geom("board").id
    found = []
    if data.ncon == 0:
        return found
    geom1 = data.contact.geom1[: data.ncon]
    geom2 = data.contact.geom2[: data.ncon]
    wrench = np.zeros(6)
    for i in np.flatnonzero((geom1 == board) | (geom2 == board)):
        other = geom2[i] if geom1[i] == board else geom1[i]
        if other in geoms:
            mujoco.mj_contactForce(model, data, int(i), wrench)
            found.append((data.contact.pos[i].copy(), float(wrench[0])))
    return found


def ink_decorations(
    frame: tuple[np.ndarray, np.ndarray], board_points: np.ndarray, radius: float, rgba
) -> list[Decoration]:
    """Flat discs at `board_points` (N, 2 or 3), board coordinates; `frame` from board_frame."""
    if len(board_points) == 0:
        return []
    points = np.zeros((len(board_points), 3))
    points[:, :2] = np.asarray(board_points)[:, :2]
    points[:, 2] = 0.0007  # just above the surface, so the ink is never hidden in it
    origin, rotation = frame
    world = points @ rotation.T + origin
    return [flat_disc(p, radius, rgba) for p in world]
