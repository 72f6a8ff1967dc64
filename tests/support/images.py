"""Small images for tests, encoded in memory."""

from __future__ import annotations

import base64
import io
import struct
import zlib

from PIL import Image


def encoded(image: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def gradient(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image with detail everywhere (so JPEG quality changes its size), different per seed."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [
            ((x * 7 + seed * 50) % 256, (y * 5 + x * seed) % 256, (x * y + seed * 31) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    return image


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of width x height pixels that compresses to a few kilobytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
