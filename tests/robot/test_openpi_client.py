"""Byte compatibility with openpi's own client, openpi-client 0.1.2 (numpy < 2, so it gets a
virtual environment of its own), talking to our server. Needs the package index: skipped with
the reason when the install fails."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("websockets", reason="the robot extra (websockets) is not installed")
pytest.importorskip("msgpack", reason="the robot extra (msgpack) is not installed")

from vlaw.robot import wire  # noqa: E402
from vlaw.robot.server import PolicyServer  # noqa: E402

OPENPI_CLIENT = "openpi-client==0.1.2"
# Imported by its websocket_client_policy but not declared among its dependencies.
UNDECLARED = "typing_extensions"
TOKEN = "tok"

# Run by the openpi-client environment: the stock DROID request through the stock client.
CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from openpi_client import image_tools, msgpack_numpy, websocket_client_policy

    port, out = int(sys.argv[1]), sys.argv[2]
    policy = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, api_key="tok")
    frame = np.full((180, 320, 3), 128, np.uint8)
    request = {
        "observation/exterior_image_1_left": image_tools.resize_with_pad(frame, 224, 224),
        "observation/wrist_image_left": image_tools.resize_with_pad(frame, 224, 224),
        "observation/joint_position": np.array([0.5, 0, 0, -2, 0, 2, 0]),
        "observation/gripper_position": np.array([1.0]),
        "prompt": "open the book",
    }
    reply = policy.infer(request)
    try:
        policy.infer({"prompt": "no observation"})
        error = ""
    except RuntimeError as e:
        error = str(e)
    again = policy.infer(request)
    payload = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), "b": np.float32(1.5), "c": "x"}
    with open(out + ".bin", "wb") as f:
        f.write(msgpack_numpy.packb(payload))
    json.dump({
        "metadata": policy.get_server_metadata(),
        "shape": list(reply["actions"].shape),
        "dtype": str(reply["actions"].dtype),
        "first": float(reply["actions"][0, 0]),
        "again": float(again["actions"][0, 0]),
        "error": error,
    }, open(out, "w"))
    """
)


class EchoPolicy:
    def __call__(self, observations, **unused):
        actions = np.zeros((len(observations), 15, 8), np.float32)
        actions[:, :, 0] = [o.joint_position[0] for o in observations]
        return actions


@pytest.fixture(scope="module")
def openpi_python(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("openpi_client_env")
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = os.path.join(env_dir, "bin", "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", OPENPI_CLIENT, UNDECLARED],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0:
        pytest.skip(f"{OPENPI_CLIENT} could not be installed: {install.stderr.strip()[-300:]}")
    return python


@pytest.mark.slow
def test_stock_openpi_client_talks_to_our_server(openpi_python, tmp_path):
    metadata = {"policy": "echo", "action_horizon": 15}
    server = PolicyServer(
        EchoPolicy(), image_size=(224, 224), metadata=metadata, port=0, token=TOKEN
    ).start_in_thread()
    try:
        script, out = tmp_path / "client.py", str(tmp_path / "result.json")
        script.write_text(CLIENT_SCRIPT)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no vlaw in there
        subprocess.run(
            [openpi_python, str(script), str(server.port), out], check=True, env=env, timeout=120
        )
    finally:
        server.stop()
    with open(out) as f:
        result = json.load(f)
    assert result["metadata"] == metadata
    assert result["shape"] == [15, 8] and result["dtype"] == "float32"
    assert result["first"] == pytest.approx(0.5) and result["again"] == pytest.approx(0.5)
    assert "lacks" in result["error"]  # a text reply: openpi's client raises, connection kept
    with open(out + ".bin", "rb") as f:
        theirs = f.read()
    payload = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), "b": np.float32(1.5), "c": "x"}
    assert wire.packb(payload) == theirs  # byte for byte
    decoded = wire.unpackb(theirs)
    np.testing.assert_array_equal(decoded["a"], payload["a"])
    assert decoded["b"] == np.float32(1.5) and decoded["c"] == "x"
