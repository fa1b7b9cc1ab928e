"""Just enough PNG for thumbnails without an image library: read the size, write a solid-colour image.

A real worker would resize the pixels with an image library; the sample computes the thumbnail's size
exactly and writes a valid PNG of that size filled with one colour, so the flow stays dependency-free.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


class NotAnImage(ValueError):
    """The bytes are not a PNG image this worker can read."""


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the ``IHDR`` chunk of a PNG.

    Raises:
        NotAnImage: The data does not start like a PNG, or its size is zero.
    """
    if len(data) < 24 or not data.startswith(SIGNATURE) or data[12:16] != b"IHDR":
        raise NotAnImage("not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise NotAnImage(f"empty image ({width}x{height})")
    return width, height


def thumbnail_size(width: int, height: int, longest_side: int) -> tuple[int, int]:
    """Scales ``width`` x ``height`` down to fit ``longest_side``, keeping the aspect ratio (never up)."""
    scale = min(1.0, longest_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A ``width`` x ``height`` truecolour PNG filled with ``rgb``."""
    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * height))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
