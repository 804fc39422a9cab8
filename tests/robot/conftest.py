"""A fake DROID `RobotEnv` that records every command, and scripted stand-ins for the people and
the policy around a real station."""

import numpy as np
import pytest

from vlaw.robot import limits as limits_lib
from vlaw.robot.droid import DroidStation, Verdict
from vlaw.sim import panda

SERIALS = {
    "exterior_image_1_left": "24259877",
    "exterior_image_2_left": "24514023",
    "wrist_image_left": "13062452",
}
RAW_SIZE = (72, 128)  # (H, W) of the fake ZED frames (16:9, as HD720)


class FakeRobotEnv:
    """DROID's RobotEnv in joint-velocity / gripper-position mode, as far as a station sees it:
    `step` moves the joints by 0.2 rad per unit velocity (and asserts DROID's [-1, 1] range),
    `get_observation` returns DROID's dict with BGRA frames keyed "<serial>_left/_right"."""

    def __init__(self, start=None):
        self.joint_position = np.array(panda.HOME_JOINT_POSITION if start is None else start)
        self.gripper_position = 0.0
        self.commands: list[np.ndarray] = []
        self.positions_before: list[np.ndarray] = []
        self.resets = 0

    def reset(self):
        self.resets += 1
        self.joint_position = np.array(panda.HOME_JOINT_POSITION)
        self.gripper_position = 0.0

    def frame(self, serial: str) -> np.ndarray:
        """BGRA: blue = the serial's last digit, red = 200, so a channel swap shows."""
        image = np.zeros((*RAW_SIZE, 4), np.uint8)
        image[..., 0] = int(serial[-1]) * 10
        image[..., 2] = 200
        image[..., 3] = 255
        return image

    def get_observation(self):
        images = {}
        for serial in SERIALS.values():
            images[f"{serial}_left"] = self.frame(serial)
            images[f"{serial}_right"] = np.full((*RAW_SIZE, 4), 7, np.uint8)
        return {
            "image": images,
            "robot_state": {
                "joint_positions": list(self.joint_position),
                "gripper_position": self.gripper_position,
                "cartesian_position": list(limits_lib.tool_position(self.joint_position))
                + [0.0, 0.0, 0.0],
            },
        }

    def step(self, action):
        action = np.asarray(action, np.float64)
        assert action.shape == (8,) and np.all(np.abs(action) <= 1.0), action
        self.positions_before.append(self.joint_position.copy())
        self.commands.append(action.copy())
        delta = limits_lib.MAX_JOINT_DELTA * action[:7]
        self.joint_position = self.joint_position + delta
        self.gripper_position = float(action[7])
        return {
            "joint_velocity": action[:7],
            "joint_position": self.joint_position.copy(),
            "gripper_position": action[7:],
            "gripper_delta": np.zeros(1),
            "cartesian_position": np.zeros(6),
            "cartesian_velocity": np.zeros(6),
        }


class ScriptedOperator:
    """Answers from lists: instructions per reset, verdicts per episode."""

    def __init__(self, verdicts=(), instruction="put the cup on the plate"):
        self.verdicts = [Verdict(v) for v in verdicts]
        self.instruction = instruction
        self.asked = 0

    def prepare(self, task):
        return self.instruction

    def verdict(self, instruction, stopped):
        self.asked += 1
        return self.verdicts.pop(0) if self.verdicts else Verdict.SUCCESS


class ConstantPolicy:
    """(B, H, 8) chunks of one action; records the observations it was shown."""

    checkpoint = "/fake/policy/1"

    def __init__(self, action, horizon: int = 10):
        self.action = np.asarray(action, np.float32)
        self.horizon = horizon
        self.seen = []

    def __call__(self, observations, **unused):
        self.seen.extend(observations)
        return np.tile(self.action, (len(observations), self.horizon, 1))


WORKSPACE = ((0.2, -0.6, 0.02), (0.9, 0.6, 0.9))


@pytest.fixture
def make_station():
    def make(env=None, operator=None, watchdog_s=30.0, workspace=WORKSPACE):
        return DroidStation(
            env or FakeRobotEnv(),
            cameras=SERIALS,
            image_size=(32, 32),
            limits=limits_lib.panda_limits(*workspace),
            operator=operator or ScriptedOperator(),
            watchdog_s=watchdog_s,
            sleep=lambda seconds: None,  # no real-time pacing in tests
        )

    return make


@pytest.fixture
def fakes():
    """The fakes of this module (tests import no helper modules under importlib mode)."""

    class Fakes:
        RobotEnv = FakeRobotEnv
        Operator = ScriptedOperator
        Policy = ConstantPolicy
        serials = SERIALS

    return Fakes
