"""A fast reader of GGUF headers: key-values and tensor shapes, without touching the weights.

The `gguf` package's GGUFReader builds a numpy view per array element; on a 150k-token vocabulary that takes
about 10 seconds, too slow for listing models. This reader walks the same layout (GGUF v2/v3, either byte
order) with `struct` over a memory map, skipping long arrays unless asked for them: milliseconds per file.
Imports nothing of ours.

Model files are untrusted input: every count and length is checked against the bytes left in the file before it
is used, arrays may nest only `MAX_ARRAY_DEPTH` deep and tensors have at most `MAX_DIMS` dimensions, so a
malformed file is a `GgufError` in bounded time and memory, never a crash or a hang.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_FLOAT32 = 6
_STRING = 8
_ARRAY = 9
MAX_ARRAY_DEPTH = 4
"""Arrays of arrays nest at most this deep (real files hold flat arrays; llama.cpp refuses nested ones)."""
MAX_DIMS = 4
"""ggml's GGML_MAX_DIMS."""
_MIN_ITEM_BYTES = {_STRING: 8, _ARRAY: 12}
"""The least bytes one array item of these types takes (a length; an item type and a count)."""
_MIN_KV_BYTES = 8 + 4
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8
DEFAULT_ALIGNMENT = 32


def _short_float32(value: float) -> float:
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.unpack("f", struct.pack("f", candidate))[0] == value:
            return candidate
    return value


class GgufError(Exception):
    """The file is not a GGUF file this reader understands (or is cut short)."""


@dataclass(frozen=True, slots=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    """A `gguf.GGMLQuantizationType` value (0 F32, 1 F16, 8 Q8_0, ...)."""
    offset: int = 0
    """Where its data starts, from the start of the data section (`GgufHeader.data_start`)."""

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(slots=True)
class GgufHeader:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    """Key-values; arrays longer than the limit are left out unless asked for (see `skipped_arrays`)."""
    skipped_arrays: list[str] = field(default_factory=list)
    tensors: list[GgufTensor] = field(default_factory=list)
    found_tokens: set[str] = field(default_factory=set)
    """Those of the watched token texts that `tokenizer.ggml.tokens` holds."""
    data_start: int = 0
    """File offset of the tensor data section (after the tensor infos, aligned to `general.alignment`)."""
    file_size: int = 0


class _Cursor:
    def __init__(self, buffer: mmap.mmap, endian: str) -> None:
        self.buffer = buffer
        self.endian = endian
        self.pos = 0

    def unpack(self, code: str) -> Any:
        fmt = self.endian + code
        (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    @property
    def left(self) -> int:
        return len(self.buffer) - self.pos

    def count(self, what: str, min_item_bytes: int) -> int:
        """A count read from the file, refused when that many items could not fit in the bytes left."""
        value: int = self.unpack("Q")
        if value * min_item_bytes > self.left:
            raise GgufError(f"the file says it holds {value} {what}, more than its remaining {self.left} bytes can")
        return value

    def raw_string(self) -> bytes:
        length = self.unpack("Q")
        if length > self.left:
            raise GgufError("a string runs past the end of the file")
        data = self.buffer[self.pos : self.pos + length]
        self.pos += length
        return data

    def value(self, value_type: int, keep: bool, depth: int = 0) -> Any:
        if value_type == _FLOAT32:
            # Shortest decimal that round-trips through float32: 1e-05, not 9.999999747378752e-06.
            return _short_float32(self.unpack("f"))
        if value_type in _SCALARS:
            return self.unpack(_SCALARS[value_type])
        if value_type == _STRING:
            return self.raw_string().decode("utf-8", "replace")
        if value_type == _ARRAY:
            return self.array(keep, depth=depth + 1)
        raise GgufError(f"unknown value type {value_type}")

    def array(
        self, keep: bool, watch: frozenset[bytes] = frozenset(), found: set[str] | None = None, depth: int = 1
    ) -> Any:
        if depth > MAX_ARRAY_DEPTH:
            raise GgufError(f"arrays nest more than {MAX_ARRAY_DEPTH} deep")
        item_type = self.unpack("I")
        if item_type in _SCALARS:
            size = struct.calcsize(self.endian + _SCALARS[item_type])
            count = self.count("array items", size)
            values = None
            if keep:
                fmt = f"{self.endian}{count}{_SCALARS[item_type]}"
                values = list(struct.unpack_from(fmt, self.buffer, self.pos))
            self.pos += count * size
            return values
        if item_type not in _MIN_ITEM_BYTES:
            raise GgufError(f"unknown array item type {item_type}")
        count = self.count("array items", _MIN_ITEM_BYTES[item_type])
        items: list[Any] | None = [] if keep else None
        for _ in range(count):
            if item_type == _STRING:
                raw = self.raw_string()
                if found is not None and raw in watch:
                    found.add(raw.decode("utf-8"))
                if items is not None:
                    items.append(raw.decode("utf-8", "replace"))
            elif items is not None:
                items.append(self.value(item_type, True, depth))
            else:
                self.value(item_type, False, depth)
        return items


def read_gguf_header(
    path: Path,
    *,
    include_large_arrays: bool = False,
    large_array: int = 64,
    watch_tokens: frozenset[str] = frozenset(),
) -> GgufHeader:
    """Key-values and tensor infos of a GGUF file. Arrays longer than `large_array` are skipped (their names
    listed) unless `include_large_arrays`; `watch_tokens` are looked for in the token list on the way."""
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return _parse(buffer, include_large_arrays, large_array, watch_tokens)
    except GgufError:
        raise
    except (OSError, ValueError, struct.error, UnicodeDecodeError, OverflowError, MemoryError, RecursionError) as exc:
        # The path is the caller's to add (and to show relative to the models folder).
        raise GgufError(str(exc) or type(exc).__name__) from exc


def _parse(buffer: mmap.mmap, include_large: bool, large_array: int, watch_tokens: frozenset[str]) -> GgufHeader:
    if buffer[:4] != b"GGUF":
        raise GgufError("no GGUF magic number")
    endian = "<"
    (version,) = struct.unpack_from("<I", buffer, 4)
    if version > 0xFFFF:  # a big-endian file reads as a huge little-endian version
        endian = ">"
        (version,) = struct.unpack_from(">I", buffer, 4)
    if version < 2:
        raise GgufError(f"GGUF version {version} is too old (2 or later is needed)")
    cursor = _Cursor(buffer, endian)
    cursor.pos = 8
    tensor_count = cursor.count("tensors", _MIN_TENSOR_INFO_BYTES)
    kv_count = cursor.count("key-values", _MIN_KV_BYTES)
    header = GgufHeader(version=version)
    watch = frozenset(t.encode("utf-8") for t in watch_tokens)
    for _ in range(kv_count):
        key = cursor.raw_string().decode("utf-8", "replace")
        value_type = cursor.unpack("I")
        if value_type != _ARRAY:
            header.metadata[key] = cursor.value(value_type, True)
            continue
        start = cursor.pos
        if cursor.left < 12:
            raise GgufError("an array runs past the end of the file")
        count = struct.unpack_from(endian + "Q", buffer, start + 4)[0]
        keep = include_large or count <= large_array
        found = header.found_tokens if key == "tokenizer.ggml.tokens" and watch else None
        values = cursor.array(keep, watch, found)
        if keep:
            header.metadata[key] = values
        else:
            header.skipped_arrays.append(key)
    for _ in range(tensor_count):
        name = cursor.raw_string().decode("utf-8", "replace")
        dims = cursor.unpack("I")
        if dims > MAX_DIMS:
            raise GgufError(f"tensor '{name[:64]}' has {dims} dimensions (at most {MAX_DIMS})")
        shape = tuple(cursor.unpack("Q") for _ in range(dims))
        ggml_type = cursor.unpack("I")
        offset = cursor.unpack("Q")  # where its data is; the weights themselves are not read
        header.tensors.append(GgufTensor(name, shape, ggml_type, offset))
    alignment = header.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise GgufError(f"general.alignment is {alignment!r}, not a positive number")
    header.data_start = -(-cursor.pos // alignment) * alignment
    header.file_size = len(buffer)
    return header
