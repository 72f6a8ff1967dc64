"""Facts about model files read from the files themselves: the GGUF header, or an MLX folder's config.json and
safetensors headers. No weights are loaded and nothing is guessed from file names. The `gguf` package names
the file and tensor types; `gguf_header` reads the header itself (GGUFReader is too slow on large vocabularies).

Also the content digest (sha256) of a file or folder, computed once and cached by path, size and modification
time, in memory and optionally in a JSON file so that a restart does not hash gigabytes again.

Imports nothing of ours but `gguf_header`: the API, the importer and the CLI all read models through it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heylook_llm.gguf_header import GgufError, GgufHeader, GgufTensor, read_gguf_header

log = logging.getLogger(__name__)

GGUF_LARGE_ARRAY = 64
"""GGUF arrays longer than this (token lists, merges) are left out of `metadata` unless asked for."""

_FIM_TOKEN_KEYS = ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id")
_FIM_TOKEN_TEXTS = frozenset({"<|fim_prefix|>", "<fim_prefix>", "<\uff5cfim\u2581begin\uff5c>", "<fim-prefix>"})
_SAFETENSORS_DTYPES = {"F64": "F64", "F32": "F32", "F16": "F16", "BF16": "BF16", "F8_E4M3": "F8", "F8_E5M2": "F8"}


class ModelFileError(Exception):
    """The path is missing or is not a GGUF file / an MLX model folder that can be read."""


@dataclass(frozen=True, slots=True)
class ModelFileInfo:
    """What a model's files say about it (Ollama's `details` and `model_info`, and more)."""

    path: Path
    format: str
    """"gguf" for a GGUF file, "safetensors" for an MLX (Hugging Face layout) folder."""
    family: str
    """Architecture: GGUF `general.architecture`, or config.json `model_type`."""
    families: tuple[str, ...]
    parameter_count: int
    """Counted from the tensor shapes (quantized MLX weights counted unpacked)."""
    quantization_level: str
    """"Q4_K_M", "Q8_0", "F16", "F32", "BF16" (GGUF file type), "Q4" for 4-bit MLX weights, or "unknown"."""
    context_length: int
    """Trained context length (0 when the files do not say)."""
    chat_template: str | None
    size_bytes: int
    modified_at: float
    """Latest modification time (seconds since the epoch)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """GGUF key-values (long arrays left out), or the MLX config mapped onto GGUF-style keys."""
    has_vision: bool = False
    """The weights include a vision tower (MLX `vision_config`); GGUF keeps it in a separate mmproj file."""
    has_fill_in_middle: bool = False
    """The tokenizer declares fill-in-the-middle tokens (completion with a suffix)."""

    @property
    def parameter_size(self) -> str:
        """Ollama's short form: "8.0B", "568.2M", "164.1K"."""
        return format_parameter_count(self.parameter_count)


def format_parameter_count(count: int) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}"
    return str(count)


# --- GGUF ----------------------------------------------------------------------------------------


def read_gguf(path: Path, *, include_large_arrays: bool = False) -> ModelFileInfo:
    try:
        header = read_gguf_header(
            path,
            include_large_arrays=include_large_arrays,
            large_array=GGUF_LARGE_ARRAY,
            watch_tokens=_FIM_TOKEN_TEXTS,
        )
    except GgufError as exc:
        raise ModelFileError(f"{path} is not a readable GGUF file: {exc}") from exc
    _check_tensor_data(path, header)
    metadata = header.metadata
    architecture = str(metadata.get("general.architecture", "unknown"))
    parameter_count = sum(t.n_elements for t in header.tensors)
    quantization = _gguf_quantization(metadata.get("general.file_type"), header.tensors)
    context_length = int(metadata.get(f"{architecture}.context_length", 0) or 0)
    chat_template = metadata.get("tokenizer.chat_template")
    has_fim = any(key in metadata for key in _FIM_TOKEN_KEYS) or bool(header.found_tokens)
    metadata.setdefault("general.parameter_count", parameter_count)
    for name in header.skipped_arrays:
        metadata[name] = None
    stat = path.stat()
    return ModelFileInfo(
        path=path,
        format="gguf",
        family=architecture,
        families=(architecture,),
        parameter_count=parameter_count,
        quantization_level=quantization,
        context_length=context_length,
        chat_template=str(chat_template) if chat_template is not None else None,
        size_bytes=stat.st_size,
        modified_at=stat.st_mtime,
        metadata=metadata,
        has_fill_in_middle=has_fim,
    )


def _check_tensor_data(path: Path, header: GgufHeader) -> None:
    """A file cut short (an interrupted download or copy) keeps a whole header: the tensor data must fit too."""
    import gguf

    needed = header.data_start
    for tensor in header.tensors:
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(tensor.ggml_type)]
        except (ValueError, KeyError):
            raise ModelFileError(
                f"{path} is not a readable GGUF file: tensor '{tensor.name[:64]}' has the unknown type "
                f"{tensor.ggml_type}"
            ) from None
        needed = max(needed, header.data_start + tensor.offset + tensor.n_elements // block * type_size)
    if needed > header.file_size:
        raise ModelFileError(
            f"{path} is truncated: its tensors need {needed} bytes but the file has {header.file_size} "
            "(an interrupted download or copy?)"
        )


def _gguf_quantization(file_type: Any, tensors: Iterable[GgufTensor]) -> str:
    import gguf

    if isinstance(file_type, int):
        try:
            name: str = gguf.LlamaFileType(file_type).name
        except ValueError:
            name = ""
        for prefix in ("MOSTLY_", "ALL_"):
            name = name.removeprefix(prefix)
        if name and name != "GUESSED":
            return name
    # No file type: name the type most of the weights use.
    counts: dict[str, int] = {}
    for tensor in tensors:
        try:
            kind = gguf.GGMLQuantizationType(tensor.ggml_type).name
        except ValueError:
            kind = f"type {tensor.ggml_type}"
        counts[kind] = counts.get(kind, 0) + tensor.n_elements
    return max(counts, key=lambda k: counts[k]) if counts else "unknown"


# --- MLX folders ---------------------------------------------------------------------------------


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ModelFileError(f"{path} has an implausible safetensors header ({length} bytes)")
        header: dict[str, Any] = json.loads(handle.read(length))
    return header


def _mlx_parameters(folder: Path, bits: int | None) -> tuple[int, str]:
    """(parameter count, dominant dtype) from the safetensors headers; packed quantized weights are unpacked."""
    tensors: dict[str, dict[str, Any]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        header = _safetensors_header(file)
        tensors.update({k: v for k, v in header.items() if k != "__metadata__"})
    count = 0
    dtype_elements: dict[str, int] = {}
    for name, tensor in tensors.items():
        elements = 1
        for dim in tensor.get("shape", []):
            elements *= int(dim)
        layer = name.rsplit(".", 1)[0]
        quantized = bits is not None and f"{layer}.scales" in tensors
        if quantized and name.endswith((".scales", ".biases")):
            continue
        if quantized and name.endswith(".weight") and tensor.get("dtype") == "U32":
            elements = elements * 32 // bits  # type: ignore[operator]
        count += elements
        dtype = str(tensor.get("dtype", ""))
        dtype_elements[dtype] = dtype_elements.get(dtype, 0) + elements
    dominant = max(dtype_elements, key=lambda k: dtype_elements[k]) if dtype_elements else ""
    return count, dominant


def _mlx_chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        candidate = folder / name
        if not candidate.is_file():
            continue
        template = json.loads(candidate.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
        if isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            chosen = named.get("default") or next(iter(named.values()), None)
            if isinstance(chosen, str):
                return chosen
    return None


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts))


def read_mlx_folder(folder: Path) -> ModelFileInfo:
    config_path = folder / "config.json"
    try:
        config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{folder} is not an MLX model folder (config.json unreadable: {exc})") from exc
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else None
    core: dict[str, Any] = {**(text_config or {}), **{k: v for k, v in config.items() if k != "text_config"}}
    architecture = str(config.get("model_type") or "unknown")
    families = tuple(dict.fromkeys([architecture, str((text_config or {}).get("model_type") or architecture)]))
    quantization = config.get("quantization") or config.get("quantization_config")
    bits = int(quantization["bits"]) if isinstance(quantization, dict) and "bits" in quantization else None
    try:
        parameter_count, dtype = _mlx_parameters(folder, bits)
    except (OSError, ValueError, struct.error) as exc:
        raise ModelFileError(f"{folder}: the safetensors headers are unreadable: {exc}") from exc
    quantization_level = f"Q{bits}" if bits is not None else _SAFETENSORS_DTYPES.get(dtype, dtype or "unknown")
    context_length = int(core.get("max_position_embeddings") or 0)
    files = _folder_files(folder)
    stats = [f.stat() for f in files]
    metadata: dict[str, Any] = {
        "general.architecture": architecture,
        "general.parameter_count": parameter_count,
    }
    for key, gguf_key in (
        ("max_position_embeddings", "context_length"),
        ("hidden_size", "embedding_length"),
        ("num_hidden_layers", "block_count"),
        ("intermediate_size", "feed_forward_length"),
        ("num_attention_heads", "attention.head_count"),
        ("num_key_value_heads", "attention.head_count_kv"),
        ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
        ("rope_theta", "rope.freq_base"),
        ("vocab_size", "vocab_size"),
    ):
        if key in core:
            metadata[f"{architecture}.{gguf_key}"] = core[key]
    if bits is not None:
        metadata["general.quantization_bits"] = bits
    return ModelFileInfo(
        path=folder,
        format="safetensors",
        family=architecture,
        families=families,
        parameter_count=parameter_count,
        quantization_level=quantization_level,
        context_length=context_length,
        chat_template=_mlx_chat_template(folder),
        size_bytes=sum(s.st_size for s in stats),
        modified_at=max((s.st_mtime for s in stats), default=0.0),
        metadata=metadata,
        has_vision="vision_config" in config,
    )


def read_model_files(path: Path, *, include_large_arrays: bool = False) -> ModelFileInfo:
    """Facts about a GGUF file or an MLX model folder; ModelFileError for anything that cannot be read."""
    try:
        if path.is_dir():
            return read_mlx_folder(path)
        if path.is_file():
            return read_gguf(path, include_large_arrays=include_large_arrays)
    except (ModelFileError, OSError):
        raise
    except Exception as exc:
        # Model files are untrusted input: a config.json of the wrong shape (a string where a mapping belongs, JSON
        # nested too deep) is a file problem, not a server error.
        log.info("reading %s failed", path, exc_info=exc)
        raise ModelFileError(f"{path} cannot be read: {exc}") from exc
    raise ModelFileError(f"{path} does not exist")


# --- digests -------------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes; for a folder, of each file's relative path and sha256, in path order."""
    if path.is_file():
        return _file_sha256(path)
    digest = hashlib.sha256()
    for file in _folder_files(path):
        digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        digest.update(bytes.fromhex(_file_sha256(file)))
    return digest.hexdigest()


def _signature(path: Path) -> tuple[int, int, int]:
    """(size, latest mtime in ns, file count): any change to the content changes it in practice."""
    if path.is_file():
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns, 1
    if path.is_dir():
        stats = [f.stat() for f in _folder_files(path)]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0), len(stats)
    raise ModelFileError(f"{path} does not exist")


class ModelInfoReader:
    """Reads model facts and digests once per (path, size, mtime) and keeps them; safe to call from threads.

    Hashing is slow (seconds per gigabyte): call `digest` off the event loop. With `digest_cache_file`, digests
    survive restarts.
    """

    def __init__(self, digest_cache_file: Path | None = None) -> None:
        self._cache_file = digest_cache_file
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._infos: dict[tuple[str, tuple[int, int, int]], ModelFileInfo] = {}
        self._digests: dict[str, dict[str, Any]] = self._load_digest_file()

    def info(self, path: Path) -> ModelFileInfo:
        key = (str(path), _signature(path))
        with self._lock:
            cached = self._infos.get(key)
        if cached is not None:
            return cached
        info = read_model_files(path)
        with self._lock:
            self._infos[key] = info
        return info

    def digest(self, path: Path) -> str:
        """The content sha256 (hex) of a file or folder; computed at most once while it does not change."""
        name = str(path.resolve())
        with self._lock:
            key_lock = self._key_locks.setdefault(name, threading.Lock())
        # One hash per path at a time: a second caller waits and then finds the result cached.
        with key_lock:
            size, mtime_ns, files = _signature(path)
            with self._lock:
                known = self._digests.get(name)
            if known and (known.get("size"), known.get("mtime_ns"), known.get("files")) == (size, mtime_ns, files):
                return str(known["sha256"])
            log.info("computing the sha256 of %s (%.1f MB)", path, size / 1e6)
            value = content_sha256(path)
            with self._lock:
                self._digests[name] = {"size": size, "mtime_ns": mtime_ns, "files": files, "sha256": value}
                self._save_digest_file()
            return value

    def _load_digest_file(self) -> dict[str, dict[str, Any]]:
        if self._cache_file is None or not self._cache_file.is_file():
            return {}
        try:
            data = json.loads(self._cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable digest cache %s: %s", self._cache_file, exc)
            return {}
        entries = data.get("digests") if isinstance(data, dict) else None
        return {k: v for k, v in (entries or {}).items() if isinstance(v, dict) and "sha256" in v}

    def _save_digest_file(self) -> None:
        if self._cache_file is None:
            return
        # Paths that are gone (deleted models, old temporary folders) are dropped as the file is rewritten.
        live = {k: v for k, v in self._digests.items() if os.path.exists(k)}
        try:
            self._cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"version": 1, "digests": live}, indent=1), encoding="utf-8")
            tmp.replace(self._cache_file)
        except OSError as exc:
            log.warning("could not write the digest cache %s: %s", self._cache_file, exc)
