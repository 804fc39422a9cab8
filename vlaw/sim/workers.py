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
import dataclasses
import multiprocessing
import os
import sys
import time
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
    expert_actor,
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
    corrections: bool = False,
) -> list[Episode]:
    """Runs the scripted expert on up to `batch.batch_size` stations in lockstep.

    A station's episode ends when its expert's plan is finished or after `max_steps` steps;
    finished stations are no longer stepped or rendered. Success is the station's label.
    With `corrections` each step records the expert's correction instead of the noisy action
    it executed (vlaw/sim/expert.py); the observations are those of the executed one.
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
        experts.append(
            ScriptedExpert(station, noise=noise, seed=spec.seed, corrections=corrections)
        )
        recorders.append(
            EpisodeRecorder(
                station.instruction,
                spec.task,
                source=source,
                iteration=iteration,
                policy_checkpoint=expert_actor(noise, corrections),
                episode_id=episode_ids[b] if episode_ids else episode_id(source, iteration, spec),
            )
        )
    actions = np.zeros((batch.batch_size, 8))
    corrected: dict[int, dict] = {}
    for _ in range(max_steps):
        for b, expert in enumerate(experts):
            if active[b]:
                action = expert.act()
                if action is None:
                    active[b] = False
                else:
                    actions[b] = action
                    if corrections:  # before the step: the command from this state
                        corrected[b] = batch.stations[b].command_record(expert.recorded)
        if not any(active):
            break
        for b, record in enumerate(batch.step(actions, active)):
            if record is not None:
                if corrections:
                    record = dataclasses.replace(record, action_dict=corrected[b])
                recorders[b].add([record])
    labels = batch.label()
    return [recorder.finish(labels[b]) for b, recorder in enumerate(recorders)]


def _worker_main(
    connection: Connection, task_names: list[str], height: int, width: int, layout_spread: float
):
    """Serves commands for one batch of stations until "close" (or the parent goes away)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from vlaw.sim.station import SimStationBatch

    batch = None
    try:
        batch = SimStationBatch(task_names, height, width, layout_spread)
        connection.send(("ok", None))  # ready
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
    """A simulator worker failed or died; the message names it and carries its traceback."""


CLOSE_SECONDS = 5.0  # how long `close` lets the workers exit on their own before ending them


class StationPool:
    """`num_workers` processes x `stations_per_worker` stations, one task per station.

    Implements `StationBatch` over all stations in worker order, plus `expert_episodes`.
    Use as a context manager (or call `close`) so the workers exit.

    Every call sends one command to each worker and reads every worker's reply before it
    returns or raises, so the pipes never fall out of step. A worker that raises leaves the
    pool usable, but a failed `reset` or `act` leaves the episode broken: `observe`, `act` and
    `label` then raise until the next `reset`. A worker that dies closes the pool.
    """

    def __init__(
        self,
        task_names: Sequence[str],
        num_workers: int,
        stations_per_worker: int,
        image_height: int = 64,
        image_width: int = 64,
        start_method: str = "spawn",
        layout_spread: float = 1.0,
    ):
        if len(task_names) != num_workers * stations_per_worker:
            raise ValueError("need one task name per station")
        context = multiprocessing.get_context(start_method)
        self.stations_per_worker = stations_per_worker
        self.task_names = list(task_names)
        self._connections: list[Connection] = []
        self._processes = []
        self._closed = False
        self._owed: set[int] = set()  # workers that were sent a command and owe its reply
        self._broken_episode = ""  # why observe/act/label must wait for a reset, if they must
        for w in range(num_workers):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(
                    child_end,
                    self._split(self.task_names)[w],
                    image_height,
                    image_width,
                    layout_spread,
                ),
                daemon=True,
                name=f"vlaw-sim-{w}",
            )
            with _main_script_hidden():
                process.start()
            child_end.close()
            self._connections.append(parent_end)
            self._processes.append(process)
        try:
            self._gather("start", range(num_workers))
        except WorkerError:
            self.close()
            raise

    @property
    def batch_size(self) -> int:
        return len(self.task_names)

    @property
    def num_workers(self) -> int:
        return len(self._processes)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def worker_pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    # --- talking to the workers ------------------------------------------------------------
    def _describe(self, w: int) -> str:
        process = self._processes[w]
        state = "running" if process.is_alive() else f"exit code {process.exitcode}"
        stations = self._split(self.task_names)[w]
        return f"worker {w} ({process.name}, pid {process.pid}, {state}, stations {stations})"

    def _check_open(self) -> None:
        if self._closed:
            raise WorkerError("the station pool is closed")

    def _send(self, w: int, command: str, args) -> str | None:
        """Sends a command to worker `w`; returns why it could not (a dead worker) or None."""
        try:
            self._connections[w].send((command, args))
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError) as error:
            return f"{self._describe(w)} is gone ({type(error).__name__})"
        self._owed.add(w)
        return None

    def _reply(self, w: int) -> tuple[str, object]:
        """Worker `w`'s reply: ("ok", result), ("error", traceback) or ("dead", why)."""
        try:
            reply = self._connections[w].recv()
            self._owed.discard(w)
            return reply
        except (EOFError, ConnectionResetError, OSError) as error:
            self._owed.discard(w)
            self._processes[w].join(timeout=1.0)  # let its exit code arrive for the message
            return "dead", f"{self._describe(w)} exited unexpectedly ({type(error).__name__})"

    def _gather(self, command: str, workers, failed: dict[int, str] | None = None) -> dict:
        """Reads one reply from each of `workers` (all of them, even after an error); returns
        {worker: result}, or raises one WorkerError naming every worker that failed. A dead
        worker closes the pool."""
        failed = dict(failed or {})
        dead = set(failed)
        results = {}
        for w in workers:
            if w in failed:
                continue
            status, payload = self._reply(w)
            if status == "ok":
                results[w] = payload
            else:
                failed[w] = payload if status == "dead" else f"{self._describe(w)}:\n{payload}"
                if status == "dead":
                    dead.add(w)
        if failed:
            if dead:
                self.close()
            reports = "\n".join(failed[w] for w in sorted(failed))
            raise WorkerError(
                f"{len(failed)} of {self.num_workers} simulator workers failed on "
                f"{command!r}{'; the pool is closed' if dead else ''}:\n{reports}"
            )
        return results

    def _broadcast(self, command: str, per_worker_args: Sequence) -> list:
        """Sends `command` to every worker and returns their replies joined in worker order."""
        self._check_open()
        failed = {}
        for w, args in enumerate(per_worker_args):
            why = self._send(w, command, args)
            if why is not None:
                failed[w] = why
        results = self._gather(command, range(self.num_workers), failed)
        return [item for w in range(self.num_workers) for item in results[w]]

    def _split(self, items: Sequence) -> list:
        n = self.stations_per_worker
        return [items[w * n : (w + 1) * n] for w in range(len(items) // n)]

    def _episode_call(self, command: str, per_worker_args: Sequence) -> list:
        """A call inside an episode: refused while the episode is broken, and breaks it if it
        fails on any worker (the stations are then no longer in one consistent state)."""
        self._check_open()
        if self._broken_episode:
            raise WorkerError(
                f"{command!r} needs a successful reset first ({self._broken_episode})"
            )
        try:
            return self._broadcast(command, per_worker_args)
        except WorkerError:
            self._broken_episode = f"{command!r} failed"
            raise

    # --- StationBatch ----------------------------------------------------------------------
    def reset(self, tasks: Sequence[TaskSpec]) -> list[Observation]:
        if len(tasks) != self.batch_size:
            raise ValueError(f"{len(tasks)} task specs for {self.batch_size} stations")
        try:
            observations = self._broadcast("reset", self._split(list(tasks)))
        except WorkerError:
            self._broken_episode = "the last reset failed"
            raise
        self._broken_episode = ""
        return observations

    def observe(self) -> list[Observation]:
        return self._episode_call("observe", [None] * self.num_workers)

    def act(self, action_chunks: np.ndarray) -> list[list[StepRecord]]:
        chunks = np.asarray(action_chunks, np.float64)
        if chunks.ndim != 3 or chunks.shape[0] != self.batch_size:
            raise ValueError(f"expected ({self.batch_size}, T, 8) actions, got {chunks.shape}")
        for chunk in chunks:
            validate_action_chunk(chunk)
        return self._episode_call("act", self._split(chunks))

    def label(self) -> list[bool]:
        return self._episode_call("label", [None] * self.num_workers)

    def expert_episodes(
        self,
        specs: Sequence[TaskSpec],
        *,
        noise: float,
        max_steps: int,
        source: str = "demo",
        iteration: int = 0,
        corrections: bool = False,
    ) -> Iterator[Episode]:
        """Yields one scripted-expert `Episode` per spec, as the workers finish them.

        Each worker takes up to `stations_per_worker` specs at a time whose tasks match its
        stations' tasks, in order; the order of the yielded episodes is the completion order.
        A worker's error is raised once the other busy workers have replied, and a consumer
        that stops early waits for them too, so the pool stays in step; after either,
        `observe`, `act` and `label` wait for a `reset`.
        """
        self._check_open()
        pending = list(specs)
        busy: set[int] = set()
        try:
            while pending or busy:
                failed = {}
                for w in range(self.num_workers):
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
                            corrections=corrections,
                        )
                        why = self._send(w, "expert_episodes", args)
                        if why is not None:
                            failed[w] = why
                        busy.add(w)
                if failed:
                    owed, busy = sorted(busy), set()
                    self._gather("expert_episodes", owed, failed)
                if not busy:
                    raise ValueError(f"no station runs the tasks of {[s.task for s in pending]}")
                ready = wait([self._connections[w] for w in busy])
                done = [w for w in sorted(busy) if self._connections[w] in ready]
                busy.difference_update(done)
                results = self._gather("expert_episodes", done)
                for w in done:
                    yield from results[w]
        except BaseException:  # an error, or a consumer that stopped early (GeneratorExit)
            self._broken_episode = "expert episodes were interrupted"
            raise
        finally:
            # Read the replies still owed, so the next call finds the pipes in step.
            owed = sorted(busy & self._owed)
            if owed and not self._closed:
                with contextlib.suppress(WorkerError):
                    self._gather("expert_episodes (left over)", owed)

    def loaded_modules(self) -> list[str]:
        """Top-level modules imported in each worker (concatenated)."""
        return self._broadcast("loaded_modules", [None] * self.num_workers)

    def close(self) -> None:
        """Asks every worker to exit, then ends any still running after `CLOSE_SECONDS` (a
        worker blocked on a reply nobody reads, or a hung one). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for w, process in enumerate(self._processes):
            if w in self._owed:  # busy with a reply nobody will read (it may block on it)
                process.terminate()
            elif process.is_alive():
                self._send(w, "close", None)
        deadline = time.monotonic() + CLOSE_SECONDS
        for process in self._processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in self._processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=1.0)
            if process.is_alive():
                process.kill()
                process.join()
        for connection in self._connections:
            connection.close()

    def __enter__(self) -> "StationPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
