"""How a llama.cpp engine is set up: its options and the flash-attention default."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def default_flash_attn(head_width: int, offloaded: bool) -> bool | None:
    """Off for CPU-only models whose attention heads are narrower than 64; otherwise None (llama.cpp decides).

    llama.cpp's CPU flash-attention kernel pays a fixed cost per key row that narrow heads do not repay:
    on a model with 16-wide heads it cut single-sequence decoding from 14,000 to 8,500 tok/s, and 60 new
    tokens after 1,270 cached ones took 16 ms instead of 2.3 ms. With 64-wide heads it decodes a little faster.
    """
    if offloaded or head_width <= 0:
        return None
    return False if head_width < 64 else None


@dataclass(slots=True)
class EngineOptions:
    model_path: Path
    n_ctx: int
    """Context window of each sequence slot."""
    parallel: int
    n_batch: int
    n_threads: int
    """Threads for steps of one token per sequence."""
    n_gpu_layers: int
    use_mmap: bool
    prefix_cache: bool
    mmproj_path: Path | None = None
    """A vision projector GGUF loaded with libmtmd against the model: prompts may then hold images."""
    n_threads_batch: int | None = None
    """Threads for prompts and multi-token batches (default: n_threads)."""
    flash_attn: bool | None = None
    """None applies `default_flash_attn`."""
    cache_type_k: str = "f16"
    """KV cache key type: f16, q8_0 or q4_0."""
    cache_type_v: str = "f16"
    """KV cache value type; a quantized one switches flash attention on."""
    kv_unified: bool = False
    """One pool of n_ctx tokens shared by all slots (instead of n_ctx per slot)."""
    on_progress: Callable[[float], None] | None = None
    """Called on the loading thread with the share of the weights read (0 to 1) while the model loads."""
