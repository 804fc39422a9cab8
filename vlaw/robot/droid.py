"""The Station protocol over DROID's `RobotEnv` (droid_rlds.md §3), with the safety around it.

`DroidStation(env, cameras=..., image_size=..., limits=...)` drives one real DROID station in
DROID's joint-velocity action space with absolute gripper positions (openpi's DROID client's
choice). Every command goes through the same steps:

  gripper binarised (> 0.5 closes), then `vlaw.robot.limits.safe_command` (velocity, joint
  position and workspace limits); only the result reaches `env.step`, paced to 15 Hz.

Two things stop the arm (a hold command: zero velocity, gripper as it is) and end the episode
with `StationStopped`: the watchdog, armed whenever the station hands an observation to the
policy, fires when no action chunk arrives within `watchdog_s`; and the operator's Ctrl+C
(`KeyboardStop`), checked before every command. The recording loop (vlaw.robot.recording) then
asks the operator to label or discard what was recorded.

Observations: DROID's camera dict is keyed "<serial>_left" / "<serial>_right"; `cameras` maps
each DROID camera name to a serial and the left lens is used (as DROID's RLDS and openpi's
client), alpha dropped, BGR turned RGB, resized with padding to `image_size`.
`RobotEnv` is imported only by `open_robot_env`, so everything else runs without DROID.
"""

import enum
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
from absl import logging

from vlaw.data import droid
from vlaw.robot import limits as limits_lib
from vlaw.robot.wire import resize_with_pad
from vlaw.rollout.station import (
    ACTION_DICT_NAMES,
    Observation,
    StepRecord,
    TaskSpec,
    validate_action_chunk,
)

ACTION_DICT_SIZES = {
    "cartesian_position": 6,
    "cartesian_velocity": 6,
    "gripper_position": 1,
    "gripper_velocity": 1,
    "joint_position": 7,
    "joint_velocity": 7,
}


class StationStopped(RuntimeError):
    """The arm was stopped mid-episode (watchdog or operator); the message says why."""


def open_robot_env(**kwargs):
    """DROID's RobotEnv in the joint-velocity / gripper-position action spaces."""
    try:
        from droid.robot_env import RobotEnv  # the DROID stack: only on the robot's laptop
    except ImportError as error:
        raise ImportError(
            "the real DROID station needs DROID's robot stack (`droid.robot_env.RobotEnv`, with "
            "polymetis): install it from the droid-dataset/droid repository on the station's "
            "laptop, with vlaw's `robot` extra (pip install 'vlaw[robot]')"
        ) from error
    return RobotEnv(action_space="joint_velocity", gripper_action_space="position", **kwargs)


class Watchdog:
    """Calls `on_expire` once if armed for longer than `timeout_s` without a disarm."""

    def __init__(self, timeout_s: float, on_expire: Callable[[], None]):
        self.timeout_s = float(timeout_s)
        self._on_expire = on_expire
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.fired = False

    def arm(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self.fired = False
            self._timer = threading.Timer(self.timeout_s, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            if self._timer is None:
                return  # disarmed meanwhile
            self._timer = None
            self.fired = True
        self._on_expire()

    def disarm(self) -> bool:
        """Stops the countdown; True if it had already fired."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return self.fired


class KeyboardStop:
    """Ctrl+C as an emergency stop while installed (`with KeyboardStop() as stop:`): it sets a
    flag the station reads before each command, instead of killing the process mid-command."""

    def __init__(self):
        self._event = threading.Event()
        self._previous = None

    def request(self) -> None:
        self._event.set()

    def requested(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()

    def __enter__(self) -> "KeyboardStop":
        self._previous = signal.signal(signal.SIGINT, lambda *_: self.request())
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)


class Verdict(enum.Enum):
    SUCCESS = "y"
    FAILURE = "n"
    DISCARD = "d"


class Operator(Protocol):
    """The person at the station: sets each scene up and judges each episode."""

    def prepare(self, task: TaskSpec) -> str:
        """Sets the scene of `task` up; returns the instruction the policy gets."""
        ...

    def verdict(self, instruction: str, stopped: str) -> Verdict:
        """Success, failure or discard of the episode just run (`stopped`: why it was cut
        short, '' if it ran its course)."""
        ...


class TerminalOperator:
    """Asks at the terminal. An empty instruction reuses the task's previous one."""

    def __init__(self, read: Callable[[str], str] | None = None):
        self._read = read or (lambda prompt: input(prompt))  # looked up when asked
        self._instructions: dict[str, str] = {}

    def prepare(self, task: TaskSpec) -> str:
        previous = self._instructions.get(task.task, "")
        while True:
            typed = self._read(
                f"Set up task {task.task!r} (episode seed {task.seed}) and type its "
                f"instruction [{previous}]: "
            ).strip()
            if typed or previous:
                self._instructions[task.task] = typed or previous
                return self._instructions[task.task]

    def verdict(self, instruction: str, stopped: str) -> Verdict:
        note = f" (stopped: {stopped})" if stopped else ""
        while True:
            answer = self._read(
                f"{instruction!r}{note}: success? [y]es / [n]o / [d]iscard (Ctrl+D quits): "
            )
            answer = answer.strip().lower()[:1]
            if answer in {v.value for v in Verdict}:
                return Verdict(answer)


class DroidStation:
    """One DROID station as `vlaw.rollout.station.Station` (see the module docstring)."""

    def __init__(
        self,
        env,
        *,
        cameras: dict[str, str],
        image_size: tuple[int, int],
        limits: limits_lib.SafetyLimits,
        operator: "Operator",
        watchdog_s: float = 1.0,
        stop: KeyboardStop | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        missing = [name for name in droid.CAMERA_NAMES if not cameras.get(name)]
        if missing:  # an empty serial would match every camera's key
            raise ValueError(f"no camera serial for {missing} (config.robot.cameras)")
        self.env = env
        self.cameras = dict(cameras)
        self.image_size = tuple(image_size)
        self.limits = limits
        self.stop = stop or KeyboardStop()
        self._clock, self._sleep = clock, sleep
        self._command_lock = threading.Lock()  # the watchdog's hold never interleaves a step
        self.watchdog = Watchdog(watchdog_s, lambda: self.hold("watchdog"))
        self.operator = operator
        self._observation: Observation | None = None
        self._instruction = ""
        self._stopped = ""
        self.clip_counts: dict[str, int] = {}
        self.partial_records: list[StepRecord] = []

    # --- Observations ----------------------------------------------------------------------

    def _camera_image(self, images: dict, name: str) -> np.ndarray:
        serial = self.cameras[name]
        keys = [k for k in images if serial in k and "left" in k]
        if not keys:
            raise KeyError(f"no left image of camera {serial} ({name}) in {sorted(images)}")
        bgra = np.asarray(images[keys[0]])
        return resize_with_pad(np.ascontiguousarray(bgra[..., 2::-1]), *self.image_size)

    def _read(self) -> Observation:
        raw = self.env.get_observation()
        state = raw["robot_state"]
        return Observation(
            images={name: self._camera_image(raw["image"], name) for name in droid.CAMERA_NAMES},
            joint_position=np.asarray(state["joint_positions"], np.float64),
            gripper_position=np.asarray([state["gripper_position"]], np.float64),
            cartesian_position=np.asarray(state["cartesian_position"], np.float64),
            instruction=self._instruction,
        )

    def _hand_to_policy(self) -> Observation:
        """The current observation, the watchdog armed: the policy's answer is now awaited."""
        self.watchdog.arm()
        return self._observation

    def reset(self, task: TaskSpec) -> Observation:
        self.watchdog.disarm()
        self.stop.clear()
        self._stopped = ""
        with self._command_lock:
            self.env.reset()
        self._instruction = task.instruction or self.operator.prepare(task)
        self._observation = self._read()
        return self._hand_to_policy()

    def observe(self) -> Observation:
        return self._hand_to_policy()

    # --- Commands --------------------------------------------------------------------------

    def hold(self, reason: str) -> None:
        """Stops the arm where it is: zero joint velocity, the gripper kept as it is."""
        with self._command_lock:
            self._stopped = self._stopped or reason
            gripper = float(self.env.get_observation()["robot_state"]["gripper_position"])
            self.env.step(np.append(np.zeros(7), 1.0 if gripper > 0.5 else 0.0))
        logging.warning("DROID station: arm stopped (%s)", reason)

    def _recorded_action(self, sent: np.ndarray, returned) -> dict[str, np.ndarray]:
        """DROID's action dict (every representation of the step) in ACTION_DICT_NAMES."""
        returned = dict(returned or {})
        if "gripper_velocity" not in returned and "gripper_delta" in returned:
            returned["gripper_velocity"] = returned["gripper_delta"]  # DROID's position-mode name
        returned.setdefault("joint_velocity", sent[:7])
        returned.setdefault("gripper_position", sent[7:])
        return {
            name: np.asarray(returned.get(name, np.zeros(size)), np.float64).reshape(size)
            for name, size in ((n, ACTION_DICT_SIZES[n]) for n in ACTION_DICT_NAMES)
        }

    def _command(self, action: np.ndarray) -> tuple[np.ndarray, dict]:
        action = np.array(action, np.float64)
        action[7] = 1.0 if action[7] > 0.5 else 0.0
        with self._command_lock:
            if self._stopped:
                raise StationStopped(self._stopped)
            command = limits_lib.safe_command(action, self._observation.joint_position, self.limits)
            for name in command.clipped:
                self.clip_counts[name] = self.clip_counts.get(name, 0) + 1
            returned = self.env.step(command.action)
        return command.action, returned

    def act(self, action_chunk: np.ndarray) -> list[StepRecord]:
        """Executes the chunk's rows at 15 Hz; StationStopped ends the episode (the steps done
        so far are in `partial_records`)."""
        self.partial_records: list[StepRecord] = []
        if self.watchdog.disarm():
            raise StationStopped(f"watchdog: no action chunk within {self.watchdog.timeout_s} s")
        chunk = validate_action_chunk(action_chunk)
        period = 1.0 / limits_lib.CONTROL_HZ
        for action in chunk:
            started = self._clock()
            if self.stop.requested():
                self.hold("operator stop")
            sent, returned = self._command(action)
            self.partial_records.append(
                StepRecord(self._observation, self._recorded_action(sent, returned))
            )
            self._observation = self._read()
            self._sleep(max(0.0, period - (self._clock() - started)))
        return self.partial_records

    # --- Labels ----------------------------------------------------------------------------

    def verdict(self) -> Verdict:
        """The operator's judgement of the episode just run (the arm held meanwhile)."""
        self.watchdog.disarm()
        return self.operator.verdict(self._instruction, self._stopped)

    def label(self) -> bool:
        return self.verdict() is Verdict.SUCCESS
