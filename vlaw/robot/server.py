"""Serves a trained vlaw policy over openpi's websocket protocol (`vlaw.robot.wire`).

    python -m vlaw.robot.server --workdir=W --iteration=N (or --policy_dir=D)
        [--host=127.0.0.1] [--port=8000]
        [--token=T | $VLAW_POLICY_TOKEN] [--max_request_mb=16]

openpi's stock DROID client (examples/droid/main.py, `WebsocketClientPolicy`) works against it
unchanged: metadata frame first, DROID's observation keys in, {"actions": (H, 8)} out, plus
openpi's "policy_timing" and "server_timing" dicts. Unlike openpi's server, an error does not end
the connection: a malformed, oversized or wrongly keyed request gets a text reply (the message)
and the connection goes on.

Safety of the service itself: binds to 127.0.0.1 unless told otherwise; with a token, the
handshake must carry `Authorization: Api-Key <token>` (openpi-client's `api_key`) or it is
refused with HTTP 401; frames over `max_request_bytes` get an error reply, and frames over twice
that are cut by the websocket layer (close code 1009) before they are buffered. Inference runs
in one worker thread (one model, one accelerator: requests queue there), never on the event
loop, so slow steps block neither other connections' handshakes nor `GET /healthz`. The policy
is loaded once and compiled by a warm-up call before the port opens.
"""

import argparse
import asyncio
import concurrent.futures
import hmac
import http
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging

from vlaw.data import droid
from vlaw.data.atomic_json import read_json
from vlaw.robot import wire
from vlaw.rollout.station import Observation

try:
    from websockets.asyncio.server import serve
except ImportError:  # the `robot` extra; `wire.require_msgpack` names it when used
    serve = None

HEALTH_PATH = "/healthz"
DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20

# observations -> (B, H, 8) actions: a `vlaw.agents.policy.TrainedPolicy` or any stand-in
ServedPolicy = Callable[[Sequence[Observation]], np.ndarray]


class PolicyServer:
    """One policy behind a websocket port; `serve_forever` or `start_in_thread`."""

    def __init__(
        self,
        policy: ServedPolicy,
        *,
        image_size: tuple[int, int],
        metadata: dict | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        token: str = "",
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ):
        wire.require_msgpack()
        if serve is None:
            raise ImportError("the policy server needs websockets: pip install 'vlaw[robot]'")
        self.policy = policy
        self.image_size = tuple(image_size)
        self.metadata = dict(metadata or {})
        self.host, self.port, self.token = host, port, token
        self.max_request_bytes = int(max_request_bytes)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="infer")
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _infer(self, observation: Observation) -> np.ndarray:
        actions = np.asarray(self.policy([observation]), np.float32)
        if actions.ndim != 3 or actions.shape[0] != 1 or actions.shape[2] != 8:
            raise RuntimeError(f"policy returned actions of shape {actions.shape}, not (1, H, 8)")
        return actions[0]

    def _process_request(self, connection, request):
        """The HTTP side of the handshake: health check and token."""
        if request.path == HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self.token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.token}".encode()):
                logging.warning("refused a connection without the right token")
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "wrong or missing token\n")
        return None

    async def _reply(self, websocket, message) -> None:
        """Answers one frame: actions, or the error as a text frame."""
        if isinstance(message, str):
            await websocket.send("vlaw policy server: requests are binary msgpack frames")
            return
        if len(message) > self.max_request_bytes:
            await websocket.send(
                f"vlaw policy server: request of {len(message)} bytes exceeds the limit of "
                f"{self.max_request_bytes} bytes"
            )
            return
        received = time.monotonic()
        try:
            observation = wire.observation_from_request(wire.unpackb(message), self.image_size)
        except wire.WireError as error:
            await websocket.send(f"vlaw policy server: {error}")
            return
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            actions = await loop.run_in_executor(self._executor, self._infer, observation)
        except Exception:  # the policy's failure is this request's, not the server's
            logging.exception("inference failed")
            await websocket.send(f"vlaw policy server: inference failed\n{traceback.format_exc()}")
            return
        infer_ms = 1000 * (time.monotonic() - started)
        await websocket.send(
            wire.packb(
                {
                    "actions": actions,
                    "policy_timing": {"infer_ms": infer_ms},
                    "server_timing": {
                        "infer_ms": infer_ms,
                        "total_ms": 1000 * (time.monotonic() - received),
                    },
                }
            )
        )

    async def _handle(self, websocket) -> None:
        logging.info("connection from %s", websocket.remote_address)
        await websocket.send(wire.packb(self.metadata))
        async for message in websocket:
            await self._reply(websocket, message)

    async def serve_forever(self, ready: threading.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            compression=None,
            max_size=2 * self.max_request_bytes,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]  # the bound port when 0 was asked
            logging.info("serving the policy on ws://%s:%d", self.host, self.port)
            if ready is not None:
                ready.set()
            await self._stop.wait()
        self._executor.shutdown(wait=False)

    def start_in_thread(self) -> "PolicyServer":
        """Serves from a daemon thread (tests, benchmarks); returns once the port is open."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.serve_forever(ready)), daemon=True
        )
        self._thread.start()
        if not ready.wait(60):
            raise RuntimeError("the policy server did not start within 60 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def uri(self) -> str:
        return f"ws://{self.host}:{self.port}"


def warm_up(policy: ServedPolicy, image_size: tuple[int, int], **call_kwargs) -> float:
    """Calls the policy once on a blank observation, as it will be called (`call_kwargs`), so it
    is compiled before the first real request; returns the seconds it took."""
    blank = Observation(
        images={name: np.zeros((*image_size, 3), np.uint8) for name in droid.CAMERA_NAMES},
        joint_position=np.zeros(7),
        gripper_position=np.zeros(1),
        cartesian_position=np.zeros(6),
        instruction="warm up",
    )
    started = time.monotonic()
    policy([blank], **call_kwargs)
    return time.monotonic() - started


def workdir_policy_dir(workdir: str, iteration: int) -> str:
    """Where train_policy wrote iteration `iteration`'s policy: vlaw.workdir's layout, which
    this layer may not import (tests/robot/test_server.py holds the two equal)."""
    return os.path.join(workdir, "checkpoints", "policy", f"iter_{iteration:02d}")


def policy_server(policy_dir: str, *, seed: int = 0, **server_kwargs) -> PolicyServer:
    """A server for the policy trained into `policy_dir`, loaded and compiled."""
    from vlaw.agents import policy as policy_agent  # JAX: the serving process only

    policy = policy_agent.load_policy(policy_dir, seed=seed)
    size = int(policy.config.image_size)
    seconds = warm_up(policy, (size, size))
    logging.info("policy %s compiled in %.1f s", policy.checkpoint, seconds)
    metadata = {
        "policy": "vlaw pi0.5",
        "checkpoint": policy.checkpoint,
        "iteration": read_json(os.path.join(policy_dir, policy_agent.SPEC_FILE))["iteration"],
        "action_horizon": int(policy.config.action_horizon),
        "open_loop_steps": int(policy.open_loop_steps),
        "action_space": "joint_velocity",
        "gripper_action_space": "position",
        "image_size": [size, size],
        "cameras": list(droid.CAMERA_NAMES),
    }
    return PolicyServer(policy, image_size=(size, size), metadata=metadata, **server_kwargs)


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    # argparse, not absl flags: this module is imported by processes that define their own
    # flags (collect's, through vlaw.robot.recording), and absl flags are process-global.
    parser = argparse.ArgumentParser(prog="python -m vlaw.robot.server", description=__doc__)
    parser.add_argument("--workdir", default="", help="the run's working directory")
    parser.add_argument("--iteration", type=int, help="serve the policy of this iteration")
    parser.add_argument("--policy_dir", default="", help="or: a policy checkpoint directory")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (openpi DROID: 8000)")
    parser.add_argument("--token", default="", help="shared token; default $VLAW_POLICY_TOKEN")
    parser.add_argument("--max_request_mb", type=float, default=16.0, help="largest request")
    parser.add_argument("--seed", type=int, default=0, help="the sampling-noise seed")
    args = parser.parse_args(argv)
    if not args.policy_dir:
        if not args.workdir or args.iteration is None:
            parser.error("give --workdir and --iteration, or --policy_dir")
        args.policy_dir = workdir_policy_dir(args.workdir, args.iteration)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    logging.set_verbosity(logging.INFO)
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    token = args.token or os.environ.get("VLAW_POLICY_TOKEN", "")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        logging.warning("serving on %s without a token: anyone who reaches it can drive", args.host)
    server = policy_server(
        args.policy_dir,
        seed=args.seed,
        host=args.host,
        port=args.port,
        token=token,
        max_request_bytes=int(args.max_request_mb * 2**20),
    )
    asyncio.run(server.serve_forever())


if __name__ == "__main__":
    main()
