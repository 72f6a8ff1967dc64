"""Model memory: the footprint of a model before it loads, the measured one after, and the budget they must fit.

The estimate adds the weights (the GGUF file, or the MLX folder's safetensors), the KV cache (layers x KV heads x
head size x cached tokens x bytes per cached value, for keys and values), a vision projector (mmproj) and a margin
for the compute buffers. After a load, the process's resident growth over the load replaces the estimate (it can
read low for memory-mapped weights not yet touched, so the budget counts the larger of the two).

The budget is `memory_budget` from models.yaml (bytes, a size or a share of the machine's memory), else a safe share
of the memory available at start-up (`DEFAULT_BUDGET_SHARE`). docs/memory.md describes all of it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from heylook_llm.config.registry import LlamaCppConfig, MLXConfig, ModelEntry, Registry
from heylook_llm.model_info import ModelFileInfo

log = logging.getLogger(__name__)

DEFAULT_BUDGET_SHARE = 0.8
"""Without `memory_budget`: this share of the memory available when the server starts (the rest stays for the
system, the server itself and other programs)."""

MLX_WORKING_CONTEXT = 4096
"""MLX's standard cache grows with each sequence; the estimate counts this many tokens per sequence (or the model's
own context, when shorter) rather than its whole trained window."""

CACHE_TYPE_BYTES: dict[str, float] = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
"""Bytes per cached value: ggml's q8_0 and q4_0 blocks hold 32 values in 34 and 18 bytes."""

MARGIN_SHARE = 0.05
"""Compute buffers and allocator slack, as a share of weights and cache..."""
MARGIN_BYTES = 8 * 1024 * 1024
"""...plus a fixed part (the context's own structures, thread stacks)."""


@dataclass(frozen=True, slots=True)
class Footprint:
    """Bytes one loaded model takes (estimated before load, measured after)."""

    weights_bytes: int
    kv_bytes: int
    projector_bytes: int
    margin_bytes: int
    kv_tokens: int
    """Tokens of KV cache the estimate counts (n_ctx x slots, or the shared pool)."""
    accelerator_bytes: int = 0
    """Of the total, bytes in GPU (or Apple unified) memory; 0 on the CPU."""
    measured_bytes: int | None = None
    """Resident growth of the process while the model loaded; None before it loads."""

    @property
    def estimate_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.projector_bytes + self.margin_bytes

    @property
    def total_bytes(self) -> int:
        """What the model is counted as: the measured size once loaded, never below the estimate's weights and
        cache (memory-mapped weights become resident only as they are read)."""
        if self.measured_bytes is None:
            return self.estimate_bytes
        return max(self.measured_bytes, self.weights_bytes + self.kv_bytes + self.projector_bytes)

    def with_measured(self, resident_growth: int, accelerator_bytes: int) -> Footprint:
        return replace(self, measured_bytes=max(0, resident_growth), accelerator_bytes=accelerator_bytes)


NO_FOOTPRINT = Footprint(0, 0, 0, 0, 0)
"""Models another server runs (upstream providers) take no memory here."""


def format_bytes(count: int | float) -> str:
    """Human units for messages: 1536 -> '1.5 KiB', 3.2e9 -> '3.0 GiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _int(metadata: dict[str, Any], key: str, default: int = 0) -> int:
    value = metadata.get(key)
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float) and math.isfinite(value):
        return int(value)
    return default


def _kv_heads_per_layer(metadata: dict[str, Any], arch: str, layers: int, heads: int) -> list[int]:
    """KV heads of each layer: one number for all, or a per-layer list (models mixing attention types)."""
    value = metadata.get(f"{arch}.attention.head_count_kv")
    if isinstance(value, list):
        counts = [int(v) for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
        return (counts + [counts[-1] if counts else heads] * layers)[:layers]
    kv = _int(metadata, f"{arch}.attention.head_count_kv", heads)
    return [kv] * layers


def kv_bytes_per_token(info: ModelFileInfo, key_bytes: float, value_bytes: float) -> float:
    """Bytes of keys and values one cached token takes over all layers (0 when the files do not say)."""
    md, arch = info.metadata, info.family
    layers = _int(md, f"{arch}.block_count")
    heads = _int(md, f"{arch}.attention.head_count")
    embedding = _int(md, f"{arch}.embedding_length")
    if layers <= 0 or heads <= 0 or embedding <= 0:
        return 0.0
    key_width = _int(md, f"{arch}.attention.key_length", embedding // heads)
    value_width = _int(md, f"{arch}.attention.value_length", embedding // heads)
    per_layer = _kv_heads_per_layer(md, arch, layers, heads)
    return float(sum(kv * (key_width * key_bytes + value_width * value_bytes) for kv in per_layer))


def kv_tokens(entry: ModelEntry, info: ModelFileInfo) -> int:
    """Tokens of KV cache the model's context holds at once."""
    cfg = entry.config
    if isinstance(cfg, LlamaCppConfig):
        if cfg.embedding:
            return cfg.n_ctx
        return cfg.n_ctx if cfg.kv_unified else cfg.n_ctx * cfg.parallel
    if isinstance(cfg, MLXConfig):
        if cfg.cache_type == "rotating" and cfg.max_kv_size is not None:
            return cfg.max_kv_size
        window = min(info.context_length, MLX_WORKING_CONTEXT) if info.context_length > 0 else MLX_WORKING_CONTEXT
        return window * (cfg.parallel if cfg.cache_type == "standard" else 1)
    return 0


def estimate_footprint(entry: ModelEntry, info: ModelFileInfo) -> Footprint:
    """The memory `entry` will take once loaded, from its files' facts and its models.yaml settings."""
    cfg = entry.config
    if not isinstance(cfg, LlamaCppConfig | MLXConfig):
        return NO_FOOTPRINT
    tokens = kv_tokens(entry, info)
    projector = 0
    if isinstance(cfg, LlamaCppConfig):
        per_token = kv_bytes_per_token(info, CACHE_TYPE_BYTES[cfg.cache_type_k], CACHE_TYPE_BYTES[cfg.cache_type_v])
        if cfg.mmproj_path is not None:
            projector = _file_size(cfg.mmproj_path)
    else:
        # MLX caches keys and values in the activations' type: float32 for float32 weights, else 16-bit.
        value_bytes = 4.0 if info.quantization_level == "F32" else 2.0
        if cfg.cache_type == "quantized" and cfg.kv_bits is not None:
            # Packed values plus a 16-bit scale and bias per group.
            value_bytes = cfg.kv_bits / 8 + 4 / cfg.kv_group_size
        per_token = kv_bytes_per_token(info, value_bytes, value_bytes)
    kv = int(per_token * tokens)
    weights = info.size_bytes
    if isinstance(cfg, LlamaCppConfig) and cfg.draft_model_path is not None:
        # A draft model (speculative decoding) is loaded beside it; its KV cache is not estimated.
        weights += _file_size(cfg.draft_model_path)
    margin = int((weights + kv + projector) * MARGIN_SHARE) + MARGIN_BYTES
    return Footprint(weights, kv, projector, margin, tokens)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def machine_memory() -> tuple[int, int]:
    """(total, available) bytes of the machine's memory (unified memory on Apple silicon)."""
    memory = psutil.virtual_memory()
    return int(memory.total), int(memory.available)


def resolve_budget(registry: Registry, total: int, available: int) -> int:
    """The budget in bytes: models.yaml's `memory_budget`, else DEFAULT_BUDGET_SHARE of what is available."""
    configured = registry.memory_budget_bytes(total)
    if configured is not None:
        return configured
    return int(available * DEFAULT_BUDGET_SHARE)


def resident_bytes() -> int:
    """This process's resident memory now."""
    return int(psutil.Process().memory_info().rss)


def never_fits(
    model_id: str, footprint: Footprint, budget: int, pinned: list[tuple[str, int]], max_loaded: int
) -> str | None:
    """Why a model of this footprint could not load even with every unpinned model gone, or None when it could.
    `pinned`: the pinned models that stay loaded, as (id, bytes)."""
    need = footprint.estimate_bytes
    parts = (
        f"weights {format_bytes(footprint.weights_bytes)}, KV cache {format_bytes(footprint.kv_bytes)} for "
        f"{footprint.kv_tokens:,} tokens"
        + (f", projector {format_bytes(footprint.projector_bytes)}" if footprint.projector_bytes else "")
    )
    if need > budget:
        return (
            f"model '{model_id}' needs about {format_bytes(need)} ({parts}) but the memory budget is "
            f"{format_bytes(budget)}; lower n_ctx or parallel, use a quantized KV cache (cache_type_k/v), or "
            "raise memory_budget in models.yaml"
        )
    pinned_bytes = sum(size for _, size in pinned)
    if pinned and need > budget - pinned_bytes:
        names = ", ".join(f"'{name}'" for name, _ in pinned)
        return (
            f"model '{model_id}' needs about {format_bytes(need)} ({parts}) but pinned models ({names}) hold "
            f"{format_bytes(pinned_bytes)} of the {format_bytes(budget)} memory budget"
        )
    if len(pinned) >= max_loaded:
        return f"model '{model_id}' cannot load: all {max_loaded} places of max_loaded_models are held by pinned models"
    return None
