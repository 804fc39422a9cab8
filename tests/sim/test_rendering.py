"""Rendered observations, in worker processes (a pytest process may hold TensorFlow already,
and TensorFlow and MuJoCo's GL rendering cannot share a process)."""

import subprocess
import sys

import numpy as np
import pytest

from vlaw.data import droid
from vlaw.rollout.station import TaskSpec
from vlaw.sim.workers import StationPool


@pytest.fixture(scope="module")
def pool():
    with StationPool(["stack", "stack", "draw"], num_workers=1, stations_per_worker=3) as pool:
        yield pool


def _chunk(batch: int, steps: int, joint_velocity) -> np.ndarray:
    chunk = np.zeros((batch, steps, 8))
    chunk[:, :, :7] = joint_velocity
    return chunk


def test_observation_shapes_and_dtypes(pool):
    observations = pool.reset([TaskSpec("stack", 0), TaskSpec("stack", 1), TaskSpec("draw", 0)])
    for observation in observations:
        assert set(observation.images) == set(droid.CAMERA_NAMES)
        for image in observation.images.values():
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8
            assert image.std() > 5  # a scene, not a blank frame
        assert observation.joint_position.shape == (7,)
        assert observation.gripper_position.shape == (1,)
        assert observation.cartesian_position.shape == (6,)
        assert observation.instruction
    # Different stations (and tasks) render different scenes in their tiles.
    first = observations[0].images["exterior_image_1_left"].astype(int)
    assert np.abs(first - observations[2].images["exterior_image_1_left"]).mean() > 1


def test_act_returns_one_record_per_step(pool):
    pool.reset([TaskSpec("stack", 0), TaskSpec("stack", 1), TaskSpec("draw", 0)])
    records = pool.act(_chunk(3, 4, 0.2))
    assert [len(r) for r in records] == [4, 4, 4]
    step = records[0][0]
    assert set(step.action_dict) == {
        "cartesian_position",
        "cartesian_velocity",
        "gripper_position",
        "gripper_velocity",
        "joint_position",
        "joint_velocity",
    }
    np.testing.assert_allclose(step.action_dict["joint_velocity"], 0.2)
    # Each record holds the observation before its step: consecutive steps differ.
    assert not np.allclose(
        records[0][0].observation.joint_position, records[0][1].observation.joint_position
    )
    with pytest.raises(Exception, match="non-finite"):
        pool.act(np.full((3, 1, 8), np.nan))


def test_same_seed_and_actions_give_identical_states_and_images(pool):
    rng = np.random.default_rng(0)
    chunk = rng.uniform(-0.5, 0.5, (1, 6, 8)).repeat(3, axis=0)
    runs = []
    for _ in range(2):
        pool.reset([TaskSpec("stack", 4), TaskSpec("stack", 4), TaskSpec("draw", 2)])
        records = pool.act(chunk)
        runs.append((pool.observe(), records))
    (obs_a, rec_a), (obs_b, rec_b) = runs
    for a, b in zip(obs_a, obs_b):
        np.testing.assert_array_equal(a.joint_position, b.joint_position)
        for name in droid.CAMERA_NAMES:
            np.testing.assert_array_equal(a.images[name], b.images[name])
    # Two stations with the same seed and actions in one batch have the same state; their
    # tiles sit at different places in the framebuffer, which may move an edge pixel or two.
    np.testing.assert_array_equal(obs_a[0].joint_position, obs_a[1].joint_position)
    for name in droid.CAMERA_NAMES:
        differ = np.any(obs_a[0].images[name] != obs_a[1].images[name], axis=-1)
        assert differ.mean() < 0.005, name
    np.testing.assert_array_equal(
        rec_a[0][-1].action_dict["joint_position"], rec_b[0][-1].action_dict["joint_position"]
    )


def test_images_change_when_the_arm_moves_wrist_most(pool):
    before = pool.reset([TaskSpec("stack", 0)] * 2 + [TaskSpec("draw", 0)])[0]
    pool.act(_chunk(3, 5, [0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))  # pan the arm, turn the hand
    after = pool.observe()[0]
    change = {
        name: np.abs(after.images[name].astype(int) - before.images[name]).mean()
        for name in droid.CAMERA_NAMES
    }
    assert all(value > 0.5 for value in change.values()), change
    assert change["wrist_image_left"] == max(change.values()), change


def test_droid_resolution_renders():
    with StationPool(["open_book"], 1, 1, image_height=180, image_width=320) as pool:
        observation = pool.reset([TaskSpec("open_book", 0)])[0]
        assert observation.images["wrist_image_left"].shape == droid.DROID_IMAGE_SHAPE
        assert "tensorflow" not in pool.loaded_modules()


def test_single_station_protocol_in_a_fresh_process():
    """`SingleSimStation` (the one-station `Station`) renders in its own process here, since
    this test process may already hold TensorFlow."""
    code = """
import subprocess
import sys

import numpy as np
from vlaw.rollout.station import TaskSpec
from vlaw.sim.station import SingleSimStation
station = SingleSimStation("open_book")
observation = station.reset(TaskSpec("open_book", 3))
steps = station.act(np.zeros((5, 8)))
assert len(steps) == 5 and steps[0].observation.images["wrist_image_left"].shape == (64, 64, 3)
assert station.observe().instruction == "open the book cover"
assert station.label() is False
station.close()
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_camera_projections_land_on_what_the_cameras_render():
    """`cameras.camera_projections` (the world model's pose maps) agrees with MuJoCo's renderer:
    each stack block's centre projects onto a pixel of that block's colour, in both exterior
    cameras, at full layout spread; the wrist camera has none (it moves with the hand)."""
    code = """
import numpy as np
from vlaw.rollout.station import TaskSpec
from vlaw.data import cameras
from vlaw.sim.station import SimStationBatch
from vlaw.sim.tasks.stack import COLORS

colors = {c: np.array([float(v) for v in rgba.split()[:3]]) * 255 for c, rgba in COLORS.items()}
projections = cameras.camera_projections(1.0)
assert projections[2] is None and len(projections) == 3
batch = SimStationBatch(["stack"], 64, 64, layout_spread=1.0)
hits = 0
for seed in range(3):
    batch.reset([TaskSpec("stack", seed)])
    station = batch.stations[0]
    for view, name in enumerate(["exterior_image_1_left", "exterior_image_2_left"]):
        matrix = np.asarray(projections[view]).reshape(3, 4)
        for color in colors:
            ud, vd, depth = matrix @ np.append(station.data.body(f"block_{color}").xpos, 1.0)
            assert depth > 0
            pixel = station.images[name][int(vd / depth * 64), int(ud / depth * 64)].astype(float)
            nearest = min(colors, key=lambda c: np.linalg.norm(colors[c] - pixel))
            hits += nearest == color
batch.close()
print("hits", hits)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("hits 24")  # 3 layouts x 2 cameras x 4 blocks
