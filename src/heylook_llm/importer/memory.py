"""Memory estimates: a model's weights (its size on disk) plus its KV cache at the configured context.

An estimate, not a measurement: compute buffers, the projector and the runtime's own overhead come on top, and
llama.cpp maps weights from disk (the kernel may keep only part of them resident). Good enough to warn that the
`max_loaded_models` largest models cannot all be loaded on this machine at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from heylook_llm.config.registry import LlamaCppConfig, MLXConfig, ModelEntry
from heylook_llm.importer.detect import FoundModel, KvShape, detect_folder, detect_gguf

log = logging.getLogger(__name__)

_SCALE_AND_BIAS = 2
"""Numbers a quantized group stores beside its values (MLX's affine quantization: a scale and a bias)."""


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    model_id: str
    weights_bytes: int
    kv_bytes: int
    kv_tokens: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes


def kv_cache_bytes(kv: KvShape | None, tokens: int, *, kv_bits: int | None = None, group_size: int = 64) -> int:
    if kv is None or tokens <= 0:
        return 0
    if kv_bits is None:
        per_value = float(kv.element_bytes)
    else:
        per_value = kv_bits / 8 + _SCALE_AND_BIAS * kv.element_bytes / group_size
    return int(kv.values_per_token * tokens * per_value)


def estimate(model_id: str, found: FoundModel, config: dict[str, object], kv_tokens: int) -> MemoryEstimate:
    """For an entry about to be written: `config` as planned, `kv_tokens` the tokens its cache holds."""
    quantized = found.provider == "mlx" and config.get("cache_type") == "quantized"
    bits = config.get("kv_bits") if quantized else None
    group = config.get("kv_group_size", 64)
    kv = kv_cache_bytes(
        found.kv,
        kv_tokens,
        kv_bits=bits if isinstance(bits, int) else None,
        group_size=group if isinstance(group, int) else 64,
    )
    return MemoryEstimate(model_id, found.size_bytes, kv, kv_tokens)


def estimate_entry(entry: ModelEntry, mlx_context: int) -> MemoryEstimate | None:
    """For an entry already in models.yaml (read from its files); None when they cannot be read.

    An MLX cache grows with the conversation, so it is sized at `mlx_context` tokens unless it rotates."""
    config = entry.config
    if isinstance(config, LlamaCppConfig):
        found = detect_gguf(config.model_path) if config.model_path.is_file() else None
        tokens = config.n_ctx if config.kv_unified else config.n_ctx * config.parallel
    else:
        assert isinstance(config, MLXConfig)
        found = detect_folder(config.model_path) if (config.model_path / "config.json").is_file() else None
        if config.max_kv_size:
            tokens = min(mlx_context, config.max_kv_size)
        elif config.cache_type == "standard":
            tokens = mlx_context * int(getattr(config, "parallel", 1))  # one cache per batched request
        else:
            tokens = mlx_context
    if not isinstance(found, FoundModel):
        return None
    return estimate(entry.id, found, config.model_dump(), tokens)


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine (Linux and macOS); None where the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def fit_warning(estimates: Sequence[MemoryEstimate], max_loaded_models: int, available: int | None) -> str | None:
    """A warning when the `max_loaded_models` largest models together need more than `available` bytes."""
    if available is None or not estimates:
        return None
    largest = sorted(estimates, key=lambda e: e.total_bytes, reverse=True)[:max_loaded_models]
    needed = sum(e.total_bytes for e in largest)
    if needed <= available:
        return None
    names = ", ".join(f"{e.model_id} ({e.total_bytes / 1e9:.1f} GB)" for e in largest)
    count = f"the {len(largest)} largest models" if len(largest) > 1 else "the largest model"
    return (
        f"{count} ({names}) need about {needed / 1e9:.1f} GB together with their KV caches, more than this "
        f"machine's {available / 1e9:.1f} GB: lower max_loaded_models, choose --profile memory, or use smaller "
        "quantizations"
    )
