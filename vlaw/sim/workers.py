"""Simulated stations in worker processes of their own.

Why processes: TensorFlow and MuJoCo's OpenGL rendering segfault in one process
(shared/research/environment_facts.md), and the parent writes RLDS with TensorFlow. Workers are
started with the "spawn" context (a fresh interpreter: nothing of the parent's TensorFlow or
JAX state is inherited) and import only numpy, mujoco, vlaw.sim, vlaw.rollout.station and
vlaw.data.{droid,episode}; they hand numpy observations and `Episode`s back through pipes.
Each worker steps its stations as one batch and renders them into one framebuffer; several
workers spread the stations over the cores.

`StationPool` is a `vlaw.rollout.station.StationBatch` over all the workers' stations (a policy
in the parent drives it step by step), and runs scripted-expert episodes inside the workers
(`expert_episodes`), where the expert can read the simulator's state.
"""

import contextlib
import multiprocessing
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait

import numpy as np

from vlaw.data.episode import Episode
from vlaw.rollout.station import (
    EpisodeRecorder,
    Observation,
    StepRecord,
    TaskSpec,
    episode_id,
    validate_action_chunk,
)


def expert_episodes_on_batch(
    batch,
    specs: Sequence[TaskSpec],
    *,
    noise: float,
    max_steps: int,
    source: str = "demo",
    iteration: int = 0,
    episode_ids: Sequence[str] | None = None,
) -> list[Episode]:
    """Runs the scripted expert on up to `batch.batch_size` stations in lockstep.

    A station's episode ends when its expert's plan is finished or after `max_steps` steps;
    finished stations are no longer stepped or rendered. Success is the station's label.
    """
    from vlaw.sim.expert import ScriptedExpert  # the expert needs only numpy + mujoco

    if len(specs) > batch.batch_size:
        raise ValueError(f"{len(specs)} episodes for a batch of {batch.batch_size}")
    active = [b < len(specs) for b in range(batch.batch_size)]
    padded = list(specs) + [specs[0]] * (batch.batch_size - len(specs))
    batch.reset(padded)
    experts, recorders = [], []
    for b, spec in enumerate(specs):
        station = batch.stations[b]
        experts.append(ScriptedExpert(station, noise=noise, seed=spec.seed))
        recorders.append(
            EpisodeRecorder(
                station.instruction,
                spec.task,
                source=source,
                iteration=iteration,
                policy_checkpoint=f"scripted_expert(noise={noise:g})",
                episode_id=episode_ids[b] if episode_ids else episode_id(source, iteration, spec),
            )
        )
    actions = np.zeros((batch.batch_size, 8))
    for _ in range(max_steps):
        for b, expert in enumerate(experts):
            if active[b]:
                action = expert.act()
                if action is None:
                    active[b] = False
                else:
                    actions[b] = action
        if not any(active):
            break
        for b, record in enumerate(batch.step(actions, active)):
            if record is not None:
                recorders[b].add([record])
    labels = batch.label()
    return [recorder.finish(labels[b]) for b, recorder in enumerate(recorders)]


def _worker_main(connection: Connection, task_names: list[str], height: int, width: int):
    """Serves commands for one batch of stations until "close" (or the parent goes away)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from vlaw.sim.station import SimStationBatch

    batch = None
    try:
        batch = SimStationBatch(task_names, height, width)
        connection.send(("ready", None))
        while True:
            try:
                command, args = connection.recv()
            except EOFError:
                return
            if command == "close":
                return
            try:
                if command == "reset":
                    result = batch.reset(args)
                elif command == "act":
                    result = batch.act(args)
                elif command == "observe":
                    result = batch.observe()
                elif command == "label":
                    result = batch.label()
                elif command == "expert_episodes":
                    result = expert_episodes_on_batch(batch, **args)
                elif command == "loaded_modules":  # lets tests prove TensorFlow stays out
                    result = sorted({name.split(".")[0] for name in sys.modules})
                else:
                    raise ValueError(f"unknown command {command!r}")
                connection.send(("ok", result))
            except Exception:  # reported to the parent, which raises it there
                connection.send(("error", traceback.format_exc()))
    except Exception:
        connection.send(("error", traceback.format_exc()))
    finally:
        if batch is not None:
            batch.close()


@contextlib.contextmanager
def _main_script_hidden():
    """Spawned children re-import the parent's `__main__` script (to find functions pickled
    from it). The workers need nothing from it, and a script that imports TensorFlow at its top
    would bring TensorFlow into the rendering processes; so the script is hidden from
    multiprocessing while the workers start."""
    main = sys.modules["__main__"]
    saved = {
        name: main.__dict__[name] for name in ("__spec__", "__file__") if name in main.__dict__
    }
    main.__dict__["__spec__"] = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class WorkerError(RuntimeError):
    """A simulator worker failed; the message carries its traceback."""


class StationPool:
    """`num_workers` processes x `stations_per_worker` stations, one task per station.

    Implements `StationBatch` over all stations in worker order, plus `expert_episodes`.
    Use as a context manager (or call `close`) so the workers exit.
    """

    def __init__(
        self,
        task_names: Sequence[str],
        num_workers: int,
        stations_per_worker: int,
        image_height: int = 64,
        image_width: int = 64,
        start_method: str = "spawn",
    ):
        if len(task_names) != num_workers * stations_per_worker:
            raise ValueError("need one task name per station")
        context = multiprocessing.get_context(start_method)
        self.stations_per_worker = stations_per_worker
        self.task_names = list(task_names)
        self._connections: list[Connection] = []
        self._processes = []
        for w in range(num_workers):
            parent_end, child_end = context.Pipe()
            names = self.task_names[w * stations_per_worker : (w + 1) * stations_per_worker]
            process = context.Process(
                target=_worker_main,
                args=(child_end, names, image_height, image_width),
                daemon=True,
                name=f"vlaw-sim-{w}",
            )
            with _main_script_hidden():
                process.start()
            child_end.close()
            self._connections.append(parent_end)
            self._processes.append(process)
        for connection in self._connections:
            self._receive(connection)

    @property
    def batch_size(self) -> int:
        return len(self.task_names)

    @property
    def num_workers(self) -> int:
        return len(self._connections)

    def _receive(self, connection: Connection):
        try:
            status, payload = connection.recv()
        except EOFError as error:
            raise WorkerError("a simulator worker exited unexpectedly") from error
        if status == "error":
            raise WorkerError(payload)
        return payload

    def _broadcast(self, command: str, per_worker_args: Sequence) -> list:
        for connection, args in zip(self._connections, per_worker_args):
            connection.send((command, args))
        results = []
        for connection in self._connections:
            results.extend(self._receive(connection))
        return results

    def _split(self, items: Sequence) -> list:
        n = self.stations_per_worker
        return [items[w * n : (w + 1) * n] for w in range(self.num_workers)]

    def reset(self, tasks: Sequence[TaskSpec]) -> list[Observation]:
        if len(tasks) != self.batch_size:
            raise ValueError(f"{len(tasks)} task specs for {self.batch_size} stations")
        return self._broadcast("reset", self._split(list(tasks)))

    def observe(self) -> list[Observation]:
        return self._broadcast("observe", [None] * self.num_workers)

    def act(self, action_chunks: np.ndarray) -> list[list[StepRecord]]:
        chunks = np.asarray(action_chunks, np.float64)
        if chunks.ndim != 3 or chunks.shape[0] != self.batch_size:
            raise ValueError(f"expected ({self.batch_size}, T, 8) actions, got {chunks.shape}")
        for chunk in chunks:
            validate_action_chunk(chunk)
        return self._broadcast("act", self._split(chunks))

    def label(self) -> list[bool]:
        return self._broadcast("label", [None] * self.num_workers)

    def expert_episodes(
        self,
        specs: Sequence[TaskSpec],
        *,
        noise: float,
        max_steps: int,
        source: str = "demo",
        iteration: int = 0,
    ) -> Iterator[Episode]:
        """Yields one scripted-expert `Episode` per spec, as the workers finish them.

        Each worker takes up to `stations_per_worker` specs at a time whose tasks match its
        stations' tasks, in order; the order of the yielded episodes is the completion order.
        """
        pending = list(specs)
        busy: dict[int, bool] = {}
        while pending or busy:
            for w, connection in enumerate(self._connections):
                if w in busy or not pending:
                    continue
                names = self._split(self.task_names)[w]
                chunk = []
                for spec in list(pending):
                    if len(chunk) < len(names) and spec.task == names[len(chunk)]:
                        chunk.append(spec)
                        pending.remove(spec)
                if chunk:
                    args = dict(
                        specs=chunk,
                        noise=noise,
                        max_steps=max_steps,
                        source=source,
                        iteration=iteration,
                    )
                    connection.send(("expert_episodes", args))
                    busy[w] = True
            if not busy:
                raise ValueError(f"no station runs the tasks of {[s.task for s in pending]}")
            ready = wait([self._connections[w] for w in busy])
            for w in list(busy):
                if self._connections[w] in ready:
                    del busy[w]
                    yield from self._receive(self._connections[w])

    def loaded_modules(self) -> list[str]:
        """Top-level modules imported in each worker (concatenated)."""
        return self._broadcast("loaded_modules", [None] * self.num_workers)

    def close(self) -> None:
        for connection in self._connections:
            with contextlib.suppress(BrokenPipeError, OSError):  # a worker that already died
                connection.send(("close", None))
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        self._connections = []

    def __enter__(self) -> "StationPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
