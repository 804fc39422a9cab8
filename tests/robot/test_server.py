import threading
import urllib.request

import numpy as np
import pytest

pytest.importorskip("websockets", reason="the robot extra (websockets) is not installed")
pytest.importorskip("msgpack", reason="the robot extra (msgpack) is not installed")

from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from vlaw.robot import wire  # noqa: E402
from vlaw.robot.client import PolicyClient, RemotePolicy, ServerError  # noqa: E402
from vlaw.robot.server import PolicyServer  # noqa: E402

TOKEN = "s3cret"
LIMIT = 16384


class EchoPolicy:
    """Actions whose first joint echoes the request's first joint (replies are told apart)."""

    def __init__(self):
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, observations, **unused):
        self.started.set()
        assert self.release.wait(60)
        actions = np.zeros((len(observations), 15, 8), np.float32)
        actions[:, :, 0] = [o.joint_position[0] for o in observations]
        actions[:, :, 7] = len(observations[0].instruction)
        return actions


def _request(joint0: float = 0.25, size: int = 16) -> dict:
    rng = np.random.default_rng(0)
    return {
        "observation/exterior_image_1_left": rng.integers(0, 255, (size, size, 3), np.uint8),
        "observation/wrist_image_left": rng.integers(0, 255, (size, size, 3), np.uint8),
        "observation/joint_position": np.array([joint0, 0, 0, -2, 0, 2, 0]),
        "observation/gripper_position": np.array([0.0]),
        "prompt": "stack the cubes",
    }


@pytest.fixture
def served():
    policy = EchoPolicy()
    server = PolicyServer(
        policy,
        image_size=(24, 24),
        metadata={"policy": "echo", "action_horizon": 15},
        port=0,
        token=TOKEN,
        max_request_bytes=LIMIT,
    ).start_in_thread()
    yield server, policy
    policy.release.set()
    server.stop()


def _client(server, token=TOKEN) -> PolicyClient:
    return PolicyClient(server.uri, token=token, open_timeout=30)


def test_round_trip_metadata_first_then_actions(served):
    server, _ = served
    assert server.host == "127.0.0.1"  # loopback unless told otherwise
    with _client(server) as client:
        assert client.metadata == {"policy": "echo", "action_horizon": 15}
        for joint0 in (0.25, -0.5):
            reply = client.infer(_request(joint0))
            assert reply["actions"].shape == (15, 8) and reply["actions"].dtype == np.float32
            assert reply["actions"][0, 0] == pytest.approx(joint0)
            assert reply["actions"][0, 7] == len("stack the cubes")
            assert set(reply["server_timing"]) >= {"infer_ms"}


@pytest.mark.parametrize(
    "frame, message",
    [
        (b"\xc1 not msgpack", "malformed"),
        (wire.packb([1, 2, 3]), "must be a map"),
        (wire.packb({k: v for k, v in _request().items() if k != "prompt"}), "lacks"),
        (wire.packb({**_request(), "observation/joint_position": np.zeros(3)}), "7 finite"),
        (wire.packb({**_request(), "observation/wrist_image_left": np.zeros((8, 8))}), "uint8"),
        (
            wire.packb({"x": {"__ndarray__": True, "data": b"123", "dtype": "<f4", "shape": [2]}}),
            "malformed",
        ),
        (wire.packb(_request(size=56)), "exceeds the limit"),
        ("a text frame", "binary msgpack"),
    ],
)
def test_bad_requests_get_an_error_reply_and_the_connection_goes_on(served, frame, message):
    server, _ = served
    with _client(server) as client, _client(server) as other:
        with pytest.raises(ServerError, match=message):
            client.send_raw(frame)
        assert client.infer(_request(0.5))["actions"][0, 0] == pytest.approx(0.5)
        assert other.infer(_request(0.75))["actions"][0, 0] == pytest.approx(0.75)


def test_a_frame_far_over_the_limit_is_cut_unbuffered_and_others_are_served(served):
    server, _ = served
    with _client(server) as client, _client(server) as other:
        with pytest.raises(ConnectionClosed) as cut:
            client.send_raw(wire.packb(_request(size=128)))  # 98 kB, over twice the limit
        assert cut.value.rcvd.code == 1009  # "message too big"
        assert other.infer(_request(0.2))["actions"][0, 0] == pytest.approx(0.2)


def test_wrong_or_missing_token_is_refused_while_others_are_served(served):
    server, _ = served
    with _client(server) as client:
        for token in ("wrong", ""):
            with pytest.raises(InvalidStatus) as refused:
                _client(server, token=token)
            assert refused.value.response.status_code == 401
        assert client.infer(_request(0.1))["actions"][0, 0] == pytest.approx(0.1)


def test_a_slow_inference_blocks_neither_the_health_check_nor_new_connections(served):
    server, policy = served
    policy.release.clear()  # the next inference hangs until released
    replies = []
    with _client(server) as slow:
        worker = threading.Thread(target=lambda: replies.append(slow.infer(_request(0.3))))
        worker.start()
        assert policy.started.wait(60)
        health = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=30)
        assert health.status == 200 and health.read() == b"OK\n"
        with _client(server) as newcomer:  # handshake and metadata while inference hangs
            assert newcomer.metadata["policy"] == "echo"
        policy.release.set()
        worker.join(60)
    assert replies[0]["actions"][0, 0] == pytest.approx(0.3)


def test_remote_policy_drives_like_a_local_one(served, fakes, make_station):
    from vlaw.rollout.station import TaskSpec

    server, _ = served
    station = make_station()
    observation = station.reset(TaskSpec("stack", 1))
    station.watchdog.disarm()
    with _client(server) as client:
        chunks = RemotePolicy(client)([observation, observation], episode_calls=[(1, 0), (1, 0)])
    assert chunks.shape == (2, 15, 8)
    np.testing.assert_allclose(chunks[:, 0, 0], observation.joint_position[0])


def test_the_served_policy_dir_is_the_workdir_layout():
    from vlaw import workdir as workdir_lib
    from vlaw.robot.server import workdir_policy_dir

    for iteration in (0, 3, 12):
        expected = workdir_lib.checkpoint_dir("/runs/a", "policy", iteration)
        assert workdir_policy_dir("/runs/a", iteration) == expected


def test_wire_round_trips_arrays_and_scalars_and_refuses_objects():
    payload = {
        "a": np.arange(6, dtype=np.int16).reshape(2, 3),
        "b": np.float32(1.5),
        "c": [np.array([True, False]), "text", 3],
        "d": np.array(["ab", "c"]),
    }
    decoded = wire.unpackb(wire.packb(payload))
    np.testing.assert_array_equal(decoded["a"], payload["a"])
    assert decoded["a"].dtype == np.int16 and decoded["b"] == np.float32(1.5)
    assert isinstance(decoded["b"], np.float32)
    np.testing.assert_array_equal(decoded["c"][0], [True, False])
    np.testing.assert_array_equal(decoded["d"], ["ab", "c"])
    with pytest.raises(TypeError, match="cannot go over the wire"):
        wire.packb({"x": np.array([object()])})


def test_resize_with_pad_keeps_the_aspect_and_centres():
    image = np.full((180, 320, 3), 255, np.uint8)
    resized = wire.resize_with_pad(image, 224, 224)
    rows = np.flatnonzero(resized[:, 112, 0])
    assert resized.shape == (224, 224, 3) and (rows[0], rows[-1]) == (49, 174)  # 126 rows
    assert wire.resize_with_pad(resized, 224, 224) is resized


def _tiny_policy_workdir(workdir: str) -> None:
    """collect's iteration-0 demonstrations and a random-weight policy of iteration 0, laid out
    as train_policy writes it (as tests/phases/test_imagine.py does)."""
    import flax.linen as nn
    import jax

    from vlaw import pipeline
    from vlaw.agents import policy as policy_lib
    from vlaw.config import experiment_config
    from vlaw.models.policy import pi05
    from vlaw.phases import train_policy

    config = experiment_config(("stack",), "tiny")
    pipeline.run_phase("collect", config, workdir, iteration=0)
    spec, directory, _ = train_policy.prepare(config, workdir, 0)
    abstract = nn.unbox(pi05.abstract_params(policy_lib.model_config_from_spec(spec)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: (0.05 * rng.standard_normal(a.shape)).astype(a.dtype), abstract)
    policy_lib.save_policy(directory, params, spec=spec, step=1, ckpt_config=config.ckpt)


@pytest.mark.slow
def test_a_trained_policy_is_loaded_compiled_and_served(tmp_path):
    from vlaw.robot.server import policy_server, workdir_policy_dir

    _tiny_policy_workdir(str(tmp_path))
    policy_dir = workdir_policy_dir(str(tmp_path), 0)
    server = policy_server(policy_dir, port=0, token=TOKEN).start_in_thread()
    try:
        with _client(server) as client:
            assert client.metadata["iteration"] == 0
            assert client.metadata["checkpoint"].endswith("/1")
            request = _request(size=224)
            first, second = client.infer(request), client.infer(request)
    finally:
        server.stop()
    for reply in (first, second):
        actions = reply["actions"]
        assert actions.shape == (15, 8)
        assert np.all(np.abs(actions[:, :7]) <= 1) and np.all(
            (actions[:, 7] >= 0) & (actions[:, 7] <= 1)
        )
    assert not np.array_equal(first["actions"], second["actions"])  # fresh noise per call
