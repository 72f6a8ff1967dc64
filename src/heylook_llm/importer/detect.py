"""What a file or folder is, read from its content: a GGUF model, a split shard, a vision projector, an MLX
model folder, or something the server cannot serve (with the reason).

File names decide nothing here except where llama.cpp itself relies on them (it finds the shards of a split
model by name), and whether an unrecognised file looks enough like weights to be worth a line in the report.
The headers are read by `model_info` / `gguf_header`; this module only interprets them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import logging
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from heylook_llm.gguf_header import GgufError, read_gguf_header
from heylook_llm.model_info import ModelFileError, ModelFileInfo, read_gguf, read_mlx_folder

log = logging.getLogger(__name__)

Provider = Literal["llama_cpp", "mlx"]

GGUF_MAGIC = b"GGUF"
# Encoder-only architectures in llama.cpp (names as gguf-py spells them): they embed, they never chat.
EMBEDDING_ARCHITECTURES = frozenset(
    {
        "bert",
        "nomic-bert",
        "nomic-bert-moe",
        "neo-bert",
        "jina-bert-v2",
        "jina-bert-v3",
        "modern-bert",
        "eurobert",
        "t5encoder",
        "gemma-embedding",
        "llama-embed",
    }
)
# gguf.PoolingType: NONE 0, MEAN 1, CLS 2, LAST 3, RANK 4.
_EMBEDDING_POOLING = frozenset({1, 2, 3})
_RANK_POOLING = 4
# llama.cpp's split naming (gguf-split and gguf-py's SHARD_NAME_FORMAT): PREFIX-00001-of-00003.gguf.
SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<number>\d{5})-of-(?P<count>\d{5})\.gguf$")
_TORCH_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx"})
WEIGHT_SUFFIXES = _TORCH_SUFFIXES | {".gguf", ".safetensors", ".ggml", ".npz"}
"""Names that suggest weights: an unrecognised file named so is reported as skipped, any other is ignored."""


@dataclass(frozen=True, slots=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class KvShape:
    """How much KV cache one token takes, from the model's shape."""

    values_per_token: int
    """Key and value numbers cached per token, over all layers."""
    head_dim: int
    element_bytes: int
    """Bytes per cached number at full precision: llama.cpp caches in f16; MLX in the model's dtype."""


@dataclass(slots=True)
class FoundModel:
    """A model the server can serve, as found on disk."""

    provider: Provider
    path: Path
    """What `model_path` gets: the GGUF file (the first shard of a split model) or the MLX folder, as found
    (a Hugging Face snapshot keeps its named symlinks: llama.cpp finds shards by name)."""
    resolved: Path
    """`path` with symlinks followed: the identity for duplicates and for --merge."""
    info: ModelFileInfo
    size_bytes: int
    parameter_count: int
    name: str
    """A readable base for the id: the file name without extension and shard suffix, or the folder name."""
    files: tuple[Path, ...]
    kv: KvShape | None
    embedding: bool = False
    vision: bool = False
    shard_count: int = 1
    mmproj_path: Path | None = None
    repo_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def quantization(self) -> str:
        return self.info.quantization_level

    @property
    def context_length(self) -> int:
        return self.info.context_length

    @property
    def embedding_length(self) -> int | None:
        value = self.info.metadata.get(f"{self.info.family}.embedding_length")
        return value if isinstance(value, int) else None


@dataclass(frozen=True, slots=True)
class Projector:
    """A GGUF vision projector (mmproj, architecture `clip`): paired with a model, never served on its own."""

    path: Path
    resolved: Path
    quantization: str
    projection_dim: int | None
    """The width it projects images to: it must equal the model's embedding length."""


@dataclass(frozen=True, slots=True)
class Shard:
    """A part of a split GGUF model other than the first (the first one stands for the model)."""

    path: Path
    number: int
    count: int


def starts_with_gguf_magic(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def gguf_kv_shape(metadata: dict[str, Any], architecture: str) -> KvShape | None:
    """KV numbers per token from the GGUF hyperparameters (per-layer head counts summed when given)."""
    layers = _int(metadata.get(f"{architecture}.block_count"))
    heads_raw = metadata.get(f"{architecture}.attention.head_count")
    width = _int(metadata.get(f"{architecture}.embedding_length"))
    if layers is None or width is None or heads_raw is None:
        return None
    heads = max(heads_raw) if isinstance(heads_raw, list) and heads_raw else _int(heads_raw)
    if not heads:
        return None
    kv_raw = metadata.get(f"{architecture}.attention.head_count_kv", heads_raw)
    if isinstance(kv_raw, list) and len(kv_raw) == layers:
        kv_heads_total = sum(int(v) for v in kv_raw)
    else:
        # A long per-layer list is left out of the metadata by the header reader; assume full heads then.
        kv_heads_total = layers * (_int(kv_raw) or heads)
    key_dim = _int(metadata.get(f"{architecture}.attention.key_length")) or width // heads
    value_dim = _int(metadata.get(f"{architecture}.attention.value_length")) or key_dim
    return KvShape(values_per_token=kv_heads_total * (key_dim + value_dim), head_dim=key_dim, element_bytes=2)


def detect_gguf(path: Path) -> FoundModel | Projector | Shard | Skipped:
    """A file that starts with the GGUF magic number."""
    try:
        info = read_gguf(path)
    except ModelFileError as exc:
        return Skipped(path, f"starts like a GGUF file but its header is unreadable ({exc})")
    metadata = info.metadata
    count = _int(metadata.get("split.count")) or 1
    number = (_int(metadata.get("split.no")) or 0) + 1
    if count > 1 and number > 1:
        return Shard(path, number, count)
    kind = str(metadata.get("general.type") or "model")
    architecture = info.family
    if architecture == "clip" or kind == "mmproj":
        return _projector(path, info)
    if kind != "model":
        what = {"adapter": "a LoRA adapter", "imatrix": "an importance matrix (for quantizing)"}.get(kind, kind)
        return Skipped(path, f"{what} (general.type {kind}), not a model")
    if info.parameter_count == 0 and count == 1:
        return Skipped(path, "has no tensors (a vocabulary-only file)")
    pooling = _int(metadata.get(f"{architecture}.pooling_type"))
    if pooling == _RANK_POOLING:
        return Skipped(path, "a reranker (pooling type rank); the server has no rerank endpoint")
    embedding = pooling in _EMBEDDING_POOLING or architecture in EMBEDDING_ARCHITECTURES
    files: tuple[Path, ...] = (path,)
    parameter_count = info.parameter_count
    name = path.stem
    if count > 1:
        parts = _split_parts(path, count)
        if isinstance(parts, str):
            return Skipped(path, parts)
        files = tuple(p for p, _ in parts)
        parameter_count = sum(n for _, n in parts)
        match = SHARD_NAME.match(path.name)
        name = match["prefix"] if match else path.stem
    found = FoundModel(
        provider="llama_cpp",
        path=path,
        resolved=path.resolve(),
        info=info,
        size_bytes=sum(p.stat().st_size for p in files),
        parameter_count=parameter_count,
        name=name,
        files=files,
        kv=gguf_kv_shape(metadata, architecture),
        embedding=embedding,
        shard_count=count,
    )
    if not embedding and info.chat_template is None:
        found.notes.append("no chat template in the file: chat uses chatml (set chat_format to change)")
    return found


def _projector(path: Path, info: ModelFileInfo) -> Projector | Skipped:
    metadata = info.metadata
    has_vision = metadata.get("clip.has_vision_encoder")
    if has_vision is False:
        return Skipped(path, "a projector without a vision encoder (audio); the server has no audio input")
    return Projector(
        path=path,
        resolved=path.resolve(),
        quantization=info.quantization_level,
        projection_dim=_int(metadata.get("clip.vision.projection_dim")),
    )


def _split_parts(first: Path, count: int) -> list[tuple[Path, int]] | str:
    """Every shard of a split model with its parameter count, or why the model cannot load."""
    match = SHARD_NAME.match(first.name)
    if match is None or int(match["number"]) != 1 or int(match["count"]) != count:
        return (
            f"shard 1 of {count} of a split model, but llama.cpp finds the other shards by name and needs "
            f"this one named PREFIX-00001-of-{count:05d}.gguf"
        )
    parts: list[tuple[Path, int]] = []
    for number in range(1, count + 1):
        part = first.with_name(f"{match['prefix']}-{number:05d}-of-{count:05d}.gguf")
        if not part.is_file():
            return f"shard {number} of {count} ({part.name}) is missing"
        try:
            header = read_gguf_header(part)
        except GgufError:
            return f"shard {number} of {count} ({part.name}) is not a readable GGUF file"
        if header.metadata.get("split.no") != number - 1 or header.metadata.get("split.count") != count:
            return f"{part.name} is not shard {number} of {count} of this model (its split keys differ)"
        parts.append((part, sum(t.n_elements for t in header.tensors)))
    return parts


# --- folders -------------------------------------------------------------------------------------


def safetensors_format(path: Path) -> str:
    """The `format` a safetensors file records: "mlx" from MLX's writers, "pt" from transformers/PyTorch."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ValueError(f"implausible safetensors header length {length}")
        header = json.loads(handle.read(length))
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    value = metadata.get("format") if isinstance(metadata, dict) else None
    return str(value) if value else "none"


@functools.cache
def has_model_code(package: str, model_type: str) -> bool | None:
    """Whether the installed mlx-lm or mlx-vlm (`package`) has code for this `model_type`; None when the
    package cannot be imported (the check is then skipped, not the model)."""
    try:
        utils = importlib.import_module(f"{package}.utils")
    except Exception as exc:  # missing or broken install: anything it raises means "cannot tell"
        log.debug("%s is not importable (%s): model types are not checked", package, exc)
        return None
    remapping = getattr(utils, "MODEL_REMAPPING", {})
    module = remapping.get(model_type, model_type) if isinstance(remapping, dict) else model_type
    return importlib.util.find_spec(f"{package}.models.{module}") is not None


def _mlx_config_core(config: dict[str, Any]) -> dict[str, Any]:
    # Vision-language configs keep the language model's shape under text_config.
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config


def mlx_kv_shape(config: dict[str, Any]) -> KvShape | None:
    core = _mlx_config_core(config)
    layers, heads = _int(core.get("num_hidden_layers")), _int(core.get("num_attention_heads"))
    if not layers or not heads:
        return None
    kv_heads = _int(core.get("num_key_value_heads")) or heads
    hidden = _int(core.get("hidden_size")) or 0
    head_dim = _int(core.get("head_dim")) or hidden // heads
    if not head_dim:
        return None
    dtype = str(core.get("torch_dtype") or core.get("dtype") or "float16")
    return KvShape(
        values_per_token=layers * kv_heads * head_dim * 2,
        head_dim=head_dim,
        element_bytes=4 if dtype == "float32" else 2,
    )


def detect_folder(folder: Path) -> FoundModel | Skipped | None:
    """A folder holding config.json: an MLX model, a checkpoint MLX cannot load as it is, or None (no model)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Skipped(folder, f"config.json is unreadable ({exc})")
    if not isinstance(config, dict) or not ("model_type" in config or "text_config" in config):
        return None  # a config.json of something else (a tokenizer, a pipeline): not a model folder
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        torch_files = sorted(p.name for p in folder.iterdir() if p.suffix in _TORCH_SUFFIXES)
        if torch_files:
            return Skipped(
                folder,
                f"PyTorch/TensorFlow weights only ({torch_files[0]}), not safetensors: convert the model with "
                f"`mlx_lm.convert --hf-path {folder}` or use a GGUF file",
            )
        return None  # config.json without weights, as GGUF repositories often have
    missing = _missing_indexed_weights(folder)
    if missing:
        return Skipped(folder, f"weights listed in model.safetensors.index.json are missing ({missing[0]}, ...)")
    try:
        formats = sorted({safetensors_format(p) for p in weights})
    except (OSError, ValueError, struct.error) as exc:
        return Skipped(folder, f"a safetensors header is unreadable ({exc})")
    if formats != ["mlx"]:
        return Skipped(
            folder,
            f"a transformers checkpoint (safetensors format {', '.join(formats)}), not converted for MLX: "
            f"convert it with `mlx_lm.convert --hf-path {folder}` or use a GGUF file",
        )
    try:
        info = read_mlx_folder(folder)
    except ModelFileError as exc:
        return Skipped(folder, str(exc))
    found = FoundModel(
        provider="mlx",
        path=folder,
        resolved=folder.resolve(),
        info=info,
        size_bytes=info.size_bytes,
        parameter_count=info.parameter_count,
        name=folder.name,
        files=tuple(sorted(p for p in folder.iterdir() if p.is_file())),
        kv=mlx_kv_shape(config),
        vision=info.has_vision,
    )
    package = "mlx_vlm" if info.has_vision else "mlx_lm"
    if has_model_code(package, info.family) is False:
        return Skipped(folder, f"{package.replace('_', '-')} has no model code for model_type '{info.family}'")
    if info.chat_template is None:
        found.notes.append("no chat template: chat uses chatml")
    return found


def _missing_indexed_weights(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return []
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
    except (OSError, ValueError, AttributeError):
        return []
    return sorted({str(name) for name in weight_map.values() if not (folder / str(name)).is_file()})


def unrecognised_reason(path: Path) -> str | None:
    """Why a file named like weights is not a model here; None for files not named like weights (ignored)."""
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        return None
    if suffix == ".gguf":
        return "named .gguf but is not a GGUF file (no GGUF magic number)"
    if suffix == ".safetensors":
        return "safetensors weights without a model config.json beside them"
    return f"{suffix} weights: the server loads GGUF files and MLX folders only"
