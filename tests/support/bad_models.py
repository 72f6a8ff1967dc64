"""Broken model files for robustness tests: cut short, nested absurdly deep, not GGUF at all."""

from __future__ import annotations

import struct
from pathlib import Path

_ARRAY = 9
_UINT32 = 4


def write_nested_gguf(path: Path, depth: int = 100_000) -> Path:
    """A GGUF header whose one key-value is an array of an array of ... `depth` deep (no tensors)."""
    key = b"general.nested"
    parts = [b"GGUF", struct.pack("<IQQ", 3, 0, 1), struct.pack("<Q", len(key)), key, struct.pack("<I", _ARRAY)]
    # Each level: item type array, one item; the innermost array holds no uint32 items.
    level = struct.pack("<IQ", _ARRAY, 1)
    parts.append(level * (depth - 1))
    parts.append(struct.pack("<IQ", _UINT32, 0))
    path.write_bytes(b"".join(parts))
    return path


def write_truncated_copy(source: Path, path: Path, keep: float = 0.6) -> Path:
    """The first `keep` of `source`: the header is whole, the tensor data is cut (an interrupted download)."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_garbage(path: Path) -> Path:
    path.write_bytes(b"this is not a GGUF file\n" * 10)
    return path


def write_huge_count_gguf(path: Path) -> Path:
    """A header that claims 2**60 key-values in a few bytes."""
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2**60) + b"\0" * 32)
    return path
