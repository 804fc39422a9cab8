"""A client of `vlaw.robot.server` (or of any openpi policy server), and a policy made of it.

`PolicyClient(uri, token)` connects, reads the metadata frame and then answers `infer(request)`
with the server's reply dict; a text reply (the server's error) raises `ServerError`.
`RemotePolicy` wraps a client as a `vlaw.rollout.episodes.Policy` (observations -> (B, H, 8)),
so `collect` and `evaluate` can drive a station from a policy served on another machine.
"""

from collections.abc import Sequence

import numpy as np

from vlaw.robot import wire
from vlaw.rollout.station import Observation

try:
    from websockets.sync.client import connect
except ImportError:  # the `robot` extra; `wire.require_msgpack` names it when used
    connect = None


class ServerError(RuntimeError):
    """The server answered a request with an error message."""


class PolicyClient:
    """One websocket connection to a policy server (synchronous; one request at a time)."""

    def __init__(self, uri: str, *, token: str = "", open_timeout: float = 30.0):
        wire.require_msgpack()
        if connect is None:
            raise ImportError("the policy client needs websockets: pip install 'vlaw[robot]'")
        if not uri.startswith("ws"):
            uri = f"ws://{uri}"
        headers = {"Authorization": f"Api-Key {token}"} if token else None
        self.uri = uri
        self._connection = connect(
            uri,
            additional_headers=headers,
            compression=None,
            max_size=None,  # replies are small; the server bounds what it receives
            open_timeout=open_timeout,
        )
        self.metadata = wire.unpackb(self._connection.recv())

    def send_raw(self, frame: bytes | str) -> dict:
        """Sends one frame as given and returns the decoded reply (tests send bad frames)."""
        self._connection.send(frame)
        reply = self._connection.recv()
        if isinstance(reply, str):
            raise ServerError(reply)
        return wire.unpackb(reply)

    def infer(self, request: dict) -> dict:
        return self.send_raw(wire.packb(request))

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RemotePolicy:
    """A served policy as `vlaw.rollout.episodes.Policy`: one request per observation.

    `checkpoint` is the served checkpoint (from the metadata frame), recorded with episodes.
    Keyword arguments the local `TrainedPolicy` takes (`episode_calls`, ...) are accepted and
    ignored: the server draws its own noise.
    """

    def __init__(self, client: PolicyClient):
        self.client = client
        self.checkpoint = str(client.metadata.get("checkpoint", client.uri))
        self.open_loop_steps = int(client.metadata.get("open_loop_steps", 8))

    def __call__(self, observations: Sequence[Observation], **unused) -> np.ndarray:
        del unused
        chunks = []
        for observation in observations:
            reply = self.client.infer(wire.request_from_observation(observation))
            chunks.append(np.asarray(reply["actions"], np.float32))
        return np.stack(chunks)
