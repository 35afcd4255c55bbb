"""PNG files from uint8 pixel arrays, with the stdlib only (no imaging library needed)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

_COLOUR_TYPE = {2: 0, 3: 2}  # greyscale (height, width); RGB (height, width, 3)


def encode(pixels: Any, level: int = 6) -> bytes:
    """An 8-bit PNG of ``pixels``: a (height, width) greyscale or (height, width, 3) RGB array."""
    height, width = pixels.shape[:2]
    colour = _COLOUR_TYPE[pixels.ndim]

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, level))
        + chunk(b"IEND", b"")
    )
