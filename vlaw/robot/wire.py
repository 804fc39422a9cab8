"""openpi's websocket wire format, spoken by `vlaw.robot.server` and `vlaw.robot.client`.

Frames are msgpack maps. A numpy array travels as a map {b"__ndarray__": True, b"data": raw
bytes, b"dtype": dtype.str, b"shape": shape} and a numpy scalar as {b"__npgeneric__": True,
b"data": item, b"dtype": dtype.str} (openpi-client's msgpack_numpy; byte-compatible with
openpi-client 0.1.2, checked by tests/robot/test_openpi_client.py). Object, void and complex
arrays are refused: they cannot be rebuilt from raw bytes safely.

After the handshake the server sends one metadata frame, then answers every request frame with
one reply frame: a binary frame (a packed dict holding "actions") or, on error, a text frame
holding the message (openpi's clients raise on a text reply).

A DROID request (openpi's examples/droid client) holds:
  observation/exterior_image_1_left, observation/wrist_image_left   uint8 (H, W, 3)
  observation/joint_position (7,), observation/gripper_position (1,), prompt (str)
and optionally observation/exterior_image_2_left (the stock client sends one exterior view; a
missing second view is fed to the policy as a black frame).
"""

import numpy as np

try:
    import msgpack
except ImportError:  # the `robot` extra; `require_msgpack` names it when used
    msgpack = None

from vlaw.data import droid
from vlaw.rollout.station import Observation

REQUIRED_IMAGES = ("exterior_image_1_left", "wrist_image_left")
OPTIONAL_IMAGES = ("exterior_image_2_left",)
STATE_SIZES = {"joint_position": 7, "gripper_position": 1}
PROMPT_KEY = "prompt"
_REFUSED_KINDS = "OVc"  # object, void, complex


class WireError(ValueError):
    """A request that cannot be decoded or is not a DROID observation; its message is the reply."""


def require_msgpack() -> None:
    if msgpack is None:
        raise ImportError(
            "the policy server and client need msgpack and websockets: pip install 'vlaw[robot]'"
        )


def _encode(obj):
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind in _REFUSED_KINDS:
        raise TypeError(f"arrays of dtype {obj.dtype} cannot go over the wire")
    if isinstance(obj, np.ndarray):
        return {
            b"__ndarray__": True,
            b"data": obj.tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": obj.shape,
        }
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _field(obj: dict, name: str):
    """A map field under its bytes name (openpi's packer) or its str name (other packers)."""
    return obj[name.encode()] if name.encode() in obj else obj[name]


def _decode(obj: dict):
    if obj.get(b"__ndarray__", obj.get("__ndarray__")):
        dtype = np.dtype(_field(obj, "dtype"))
        if dtype.kind in _REFUSED_KINDS:
            raise WireError(f"arrays of dtype {dtype} are refused")
        shape = tuple(_field(obj, "shape"))
        # A copy: frombuffer's view of the message is read-only and pins the whole frame.
        return np.frombuffer(_field(obj, "data"), dtype=dtype).reshape(shape).copy()
    if obj.get(b"__npgeneric__", obj.get("__npgeneric__")):
        dtype = np.dtype(_field(obj, "dtype"))
        if dtype.kind in _REFUSED_KINDS:
            raise WireError(f"scalars of dtype {dtype} are refused")
        return dtype.type(_field(obj, "data"))
    return obj


def packb(obj) -> bytes:
    require_msgpack()
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpackb(data: bytes):
    """Decodes one frame; any malformation (bad msgpack, bad array header, a buffer that does not
    match its shape) is a WireError."""
    require_msgpack()
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)
    except WireError:
        raise
    except Exception as error:  # msgpack's, numpy's and KeyError alike: all mean "malformed"
        raise WireError(f"malformed request frame: {type(error).__name__}: {error}") from error


def _image(request: dict, name: str) -> np.ndarray:
    image = np.asarray(request[f"observation/{name}"])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise WireError(
            f"observation/{name} must be uint8 (H, W, 3), got {image.dtype} {image.shape}"
        )
    return image


def observation_from_request(request, image_size: tuple[int, int]) -> Observation:
    """A DROID request -> Observation with every camera resized with padding to `image_size`.

    Raises WireError naming the missing or malformed key. cartesian_position is not sent by the
    stock client and not read by the policy: zeros."""
    if not isinstance(request, dict):
        raise WireError(f"a request must be a map, got {type(request).__name__}")
    needed = [f"observation/{n}" for n in (*REQUIRED_IMAGES, *STATE_SIZES)] + [PROMPT_KEY]
    missing = [key for key in needed if key not in request]
    if missing:
        raise WireError(f"request lacks {missing}; it has {sorted(map(str, request))}")
    prompt = request[PROMPT_KEY]
    if isinstance(prompt, np.ndarray | np.str_) and prompt.dtype.kind == "U":
        prompt = str(prompt)
    if not isinstance(prompt, str):
        raise WireError(f"prompt must be a string, got {type(prompt).__name__}")
    images = {}
    for name in (*REQUIRED_IMAGES, *OPTIONAL_IMAGES):
        if f"observation/{name}" in request:
            images[name] = resize_with_pad(_image(request, name), *image_size)
        else:
            images[name] = np.zeros((*image_size, 3), np.uint8)
    state = {}
    for name, size in STATE_SIZES.items():
        try:
            value = np.asarray(request[f"observation/{name}"], np.float64).reshape(-1)
        except (TypeError, ValueError) as error:
            raise WireError(f"observation/{name} is not numeric: {error}") from error
        if value.shape != (size,) or not np.all(np.isfinite(value)):
            raise WireError(f"observation/{name} must be {size} finite numbers, got {value}")
        state[name] = value
    return Observation(
        images={name: images[name] for name in droid.CAMERA_NAMES},
        joint_position=state["joint_position"],
        gripper_position=state["gripper_position"],
        cartesian_position=np.zeros(6),
        instruction=prompt,
    )


def request_from_observation(observation: Observation) -> dict:
    """The DROID request for an observation (all three cameras, as recorded)."""
    request = {f"observation/{name}": image for name, image in observation.images.items()}
    request["observation/joint_position"] = np.asarray(observation.joint_position, np.float64)
    request["observation/gripper_position"] = np.asarray(observation.gripper_position, np.float64)
    request[PROMPT_KEY] = observation.instruction
    return request


def resize_with_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (height, width, 3): scaled (bilinear) to fit, aspect kept, centred on
    black (tf.image.resize_with_pad's layout, as openpi's image_tools). Unchanged if it fits."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    ratio = max(w / width, h / height)
    new_h, new_w = max(1, int(h / ratio)), max(1, int(w / ratio))
    # Bilinear sampling at pixel centres (half-pixel convention).
    ys = np.clip((np.arange(new_h) + 0.5) * h / new_h - 0.5, 0, h - 1)
    xs = np.clip((np.arange(new_w) + 0.5) * w / new_w - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    pixels = image.astype(np.float32)
    top = pixels[y0][:, x0] * (1 - wx) + pixels[y0][:, x1] * wx
    bottom = pixels[y1][:, x0] * (1 - wx) + pixels[y1][:, x1] * wx
    resized = np.round(top * (1 - wy) + bottom * wy).clip(0, 255).astype(np.uint8)
    canvas = np.zeros((height, width, 3), np.uint8)
    top_pad, left_pad = (height - new_h) // 2, (width - new_w) // 2
    canvas[top_pad : top_pad + new_h, left_pad : left_pad + new_w] = resized
    return canvas
