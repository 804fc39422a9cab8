"""Images of the report: a PNG encoder (zlib only, no imaging library among the runtime
dependencies) and the frame layouts of the report's figures: replay strips (recorded above,
imagined below) and rollout grids (paper Fig. 8: a recorded start and imagined futures, each
framed green for success, red for failure).

Frames are (H, W, 3) uint8; small world-model frames (8x16 at tiny) are enlarged by an integer
factor, nearest neighbour, so a pixel stays a visible square.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

SUCCESS_RGB = (46, 160, 67)
FAILURE_RGB = (207, 34, 46)
NEUTRAL_RGB = (140, 140, 140)
BACKGROUND_RGB = (255, 255, 255)
MISSING_RGB = (225, 225, 225)  # a frame past the end of a recording


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an (H, W, 3) uint8 image: one IDAT of rows with filter type 0
    (none) after the signature and IHDR (PNG spec, ISO/IEC 15948)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need (H, W, 3) uint8, got {image.shape} {image.dtype}")
    height, width, _ = image.shape
    if height == 0 or width == 0:
        raise ValueError("an image needs pixels")
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            _chunk(b"IEND", b""),
        ]
    )


def write_png(path: str, image: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(encode_png(image))


def enlarge(image: np.ndarray, min_height: int) -> np.ndarray:
    """Nearest-neighbour enlargement by the smallest integer factor reaching `min_height`."""
    factor = max(1, -(-min_height // image.shape[0]))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def framed(image: np.ndarray, rgb: Sequence[int], width: int = 3) -> np.ndarray:
    out = np.empty((image.shape[0] + 2 * width, image.shape[1] + 2 * width, 3), np.uint8)
    out[:] = np.asarray(rgb, np.uint8)
    out[width:-width, width:-width] = image
    return out


def tile(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Images in rows (each image of one size), `gap` pixels of background between them."""
    height = max(image.shape[0] for row in rows for image in row)
    width = max(sum(image.shape[1] for image in row) + gap * (len(row) - 1) for row in rows)
    canvas = np.empty((len(rows) * (height + gap) - gap, width, 3), np.uint8)
    canvas[:] = np.asarray(BACKGROUND_RGB, np.uint8)
    for r, row in enumerate(rows):
        x = 0
        for image in row:
            y = r * (height + gap)
            canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
            x += image.shape[1] + gap
    return canvas


def replay_strip(
    recorded: np.ndarray, predicted: np.ndarray, valid: np.ndarray, min_height: int = 64
) -> np.ndarray:
    """Recorded frames (K, H, W, 3) above the world model's (K, H, W, 3), frame by frame; a
    frame past the end of the recording shows grey."""
    top = [
        enlarge(f if ok else np.full_like(f, MISSING_RGB), min_height)
        for f, ok in zip(recorded, valid, strict=True)
    ]
    bottom = [enlarge(f, min_height) for f in predicted]
    return tile([top, bottom])


def shown_frames(count: int, shown: int) -> np.ndarray:
    """`shown` indices spread over `count` frames, the last always included."""
    return np.unique(np.linspace(0, count - 1, min(shown, count)).round().astype(int))


def rollout_grid(
    start: np.ndarray,
    futures: Sequence[tuple[np.ndarray, bool]],
    *,
    shown: int = 4,
    min_height: int = 64,
) -> np.ndarray:
    """Paper Fig. 8: one row per imagined future (K, H, W, 3): the recorded start frame (grey
    frame), then `shown` of its frames, framed green (success) or red (failure)."""
    rows = []
    for frames, success in futures:
        colour = SUCCESS_RGB if success else FAILURE_RGB
        picked = frames[shown_frames(len(frames), shown)]
        rows.append(
            [framed(enlarge(start, min_height), NEUTRAL_RGB)]
            + [framed(enlarge(f, min_height), colour) for f in picked]
        )
    return tile(rows)
