"""Memory estimates and budgets: the KV cache formula for each cache setting, the budget's forms, the models.yaml
fields that manage memory and lifetimes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from heylook_llm.config.registry import ModelEntry, RegistryError, budget_bytes, parse_registry
from heylook_llm.engine.memory import (
    DEFAULT_BUDGET_SHARE,
    NO_FOOTPRINT,
    estimate_footprint,
    format_bytes,
    kv_bytes_per_token,
    resolve_budget,
)
from heylook_llm.model_info import ModelFileInfo

pytestmark = pytest.mark.unit

MiB = 1024 * 1024
GiB = 1024 * MiB


def _info(
    metadata: dict[str, Any], *, context: int = 8192, size: int = 100 * MiB, quant: str = "Q4_1"
) -> ModelFileInfo:
    # SmolLM2-135M's shape: 30 layers, 9 heads of 64 over 576 wide, 3 KV heads.
    base = {
        "llama.block_count": 30,
        "llama.attention.head_count": 9,
        "llama.attention.head_count_kv": 3,
        "llama.embedding_length": 576,
    }
    return ModelFileInfo(
        path=Path("m.gguf"),
        format="gguf",
        family="llama",
        families=("llama",),
        parameter_count=0,
        quantization_level=quant,
        context_length=context,
        chat_template=None,
        size_bytes=size,
        modified_at=0.0,
        metadata={**base, **metadata},
    )


def _entry(provider: str = "llama_cpp", **config: Any) -> ModelEntry:
    registry = parse_registry(
        {"models": [{"id": "m", "provider": provider, "config": {"model_path": "m", **config}}]}, None
    )
    return registry.models[0]


def test_kv_bytes_per_token_counts_layers_heads_and_types() -> None:
    info = _info({})
    # 30 layers x 3 KV heads x 64 wide x (2 bytes of key + 2 of value)
    assert kv_bytes_per_token(info, 2.0, 2.0) == 30 * 3 * 64 * 4
    assert kv_bytes_per_token(info, 34 / 32, 34 / 32) == 30 * 3 * 64 * 2 * 34 / 32
    # Explicit key and value widths win over embedding / heads; a per-layer list of KV heads is summed.
    wide = _info({"llama.attention.key_length": 128, "llama.attention.value_length": 96})
    assert kv_bytes_per_token(wide, 1.0, 1.0) == 30 * 3 * (128 + 96)
    mixed = _info({"llama.block_count": 3, "llama.attention.head_count_kv": [3, 0, 1]})
    assert kv_bytes_per_token(mixed, 2.0, 2.0) == (3 + 0 + 1) * 64 * 4
    assert kv_bytes_per_token(_info({"llama.block_count": "x"}), 2.0, 2.0) == 0.0  # files that do not say


def test_llama_estimates_per_slot_unified_and_quantized_caches() -> None:
    info = _info({})
    per_token = 30 * 3 * 64 * 4
    per_slot = estimate_footprint(_entry(n_ctx=2048, parallel=4), info)
    assert per_slot.kv_tokens == 8192 and per_slot.kv_bytes == 8192 * per_token
    unified = estimate_footprint(_entry(n_ctx=2048, parallel=4, kv_unified=True), info)
    assert unified.kv_tokens == 2048 and unified.kv_bytes * 4 == per_slot.kv_bytes
    q8 = estimate_footprint(_entry(n_ctx=2048, parallel=4, cache_type_k="q8_0", cache_type_v="q8_0"), info)
    assert q8.kv_bytes == int(per_slot.kv_bytes * 17 / 32)
    q4_keys = estimate_footprint(_entry(n_ctx=2048, parallel=4, cache_type_k="q4_0"), info)
    assert q4_keys.kv_bytes == int(8192 * 30 * 3 * 64 * (18 / 32 + 2))
    assert per_slot.weights_bytes == 100 * MiB and per_slot.estimate_bytes > per_slot.weights_bytes + per_slot.kv_bytes
    assert per_slot.total_bytes == per_slot.estimate_bytes  # not measured yet
    embedder = estimate_footprint(_entry(n_ctx=512, embedding=True), info)
    assert embedder.kv_tokens == 512


def test_a_projector_counts_its_file(tmp_path: Path) -> None:
    projector = tmp_path / "mmproj.gguf"
    projector.write_bytes(b"\0" * 4096)
    footprint = estimate_footprint(_entry(mmproj_path=str(projector), n_ctx=256, parallel=1), _info({}))
    assert footprint.projector_bytes == 4096


def test_mlx_estimates_follow_its_cache_type() -> None:
    info = _info({}, context=32768, quant="F32")
    standard = estimate_footprint(_entry("mlx", parallel=2), info)
    # A working window of 4096 tokens per sequence, in float32 for float32 weights.
    assert standard.kv_tokens == 2 * 4096 and standard.kv_bytes == 2 * 4096 * 30 * 3 * 64 * 8
    rotating = estimate_footprint(_entry("mlx", cache_type="rotating", max_kv_size=1000), _info({}, quant="Q4"))
    assert rotating.kv_tokens == 1000 and rotating.kv_bytes == 1000 * 30 * 3 * 64 * 4
    quantized = estimate_footprint(_entry("mlx", cache_type="quantized", kv_bits=8, kv_group_size=64), info)
    assert quantized.kv_tokens == 4096
    assert quantized.kv_bytes == int(4096 * 30 * 3 * 64 * 2 * (1 + 4 / 64))


def test_a_measured_footprint_is_counted_but_never_below_its_weights_and_cache() -> None:
    estimate = estimate_footprint(_entry(n_ctx=2048, parallel=1), _info({}))
    assert estimate.with_measured(500 * MiB, 0).total_bytes == 500 * MiB
    low = estimate.with_measured(MiB, 0)  # memory-mapped weights not read yet
    assert low.total_bytes == estimate.weights_bytes + estimate.kv_bytes and low.measured_bytes == MiB
    assert NO_FOOTPRINT.total_bytes == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12 * GiB, 12 * GiB), ("12GiB", 12 * GiB), ("500MB", 500_000_000), ("512 MiB", 512 * MiB), ("50%", 8 * GiB)],
)
def test_budget_forms(value: Any, expected: int) -> None:
    assert budget_bytes(value, total_bytes=16 * GiB) == expected


@pytest.mark.parametrize("value", ["lots", "0%", "101%", "x%", 0, -5, True, 1.5])
def test_bad_budgets_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"memory_budget|size|percentage"):
        budget_bytes(value, total_bytes=16 * GiB)


def test_the_default_budget_is_a_share_of_available_memory() -> None:
    registry = parse_registry({"models": []}, None)
    assert resolve_budget(registry, 64 * GiB, 10 * GiB) == int(10 * GiB * DEFAULT_BUDGET_SHARE)
    configured = parse_registry({"memory_budget": "25%", "models": []}, None)
    assert resolve_budget(configured, 64 * GiB, 10 * GiB) == 16 * GiB


def test_models_yaml_memory_and_lifetime_fields() -> None:
    registry = parse_registry(
        {
            "memory_budget": "8GiB",
            "min_residency": "30s",
            "models": [
                {
                    "id": "a",
                    "provider": "llama_cpp",
                    "pin": True,
                    "preload": True,
                    "keep_alive": "10m",
                    "config": {"model_path": "a", "cache_type_k": "q8_0", "cache_type_v": "q4_0", "kv_unified": True},
                },
                {"id": "b", "provider": "mlx", "keep_alive": -1, "config": {"model_path": "b"}},
            ],
        },
        None,
    )
    a, b = registry.models
    assert registry.memory_budget_bytes(0) == 8 * GiB and registry.min_residency == 30.0
    assert a.pin and a.preload and a.keep_alive == 600.0 and b.keep_alive == math.inf and not b.pin
    assert a.config.cache_type_v == "q4_0" and a.config.kv_unified  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"memory_budget": "lots"}, "'lots' is not a size"),
        ({"min_residency": "soon"}, "min_residency"),
        (
            {"models": [{"id": "m", "provider": "llama_cpp", "config": {"model_path": "m", "cache_type_k": "q5_1"}}]},
            "cache_type_k",
        ),
        (
            {
                "models": [
                    {
                        "id": "m",
                        "provider": "llama_cpp",
                        "config": {"model_path": "m", "cache_type_v": "q8_0", "flash_attn": False},
                    }
                ]
            },
            "needs flash attention",
        ),
        (
            {"models": [{"id": "m", "provider": "llama_cpp", "keep_alive": "later", "config": {"model_path": "m"}}]},
            "keep_alive",
        ),
        (
            {
                "models": [
                    {
                        "id": "m",
                        "provider": "llama_cpp",
                        "config": {"model_path": "m", "embedding": True, "cache_type_k": "q8_0", "kv_unified": True},
                    }
                ]
            },
            "cache_type_k, kv_unified: only for generating models",
        ),
    ],
)
def test_bad_memory_fields_name_the_field(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(RegistryError, match=problem):
        parse_registry(raw, None)


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * GiB) == "3.0 GiB"
