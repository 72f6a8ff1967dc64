"""The `mlx` config block: settings that generation would not use are registry errors, not silently ignored."""

from __future__ import annotations

from typing import Any

import pytest

from heylook_llm.config.registry import MLXConfig, RegistryError, parse_registry

pytestmark = pytest.mark.unit


def _mlx(**config: Any) -> MLXConfig:
    registry = parse_registry(
        {"models": [{"id": "m", "provider": "mlx", "config": {"model_path": "m", **config}}]}, None
    )
    entry = registry.get("m")
    assert entry is not None and isinstance(entry.config, MLXConfig)
    return entry.config


def _problem(**config: Any) -> str:
    with pytest.raises(RegistryError) as caught:
        _mlx(**config)
    assert len(caught.value.problems) == 1
    return caught.value.problems[0]


def test_defaults() -> None:
    cfg = _mlx()
    assert cfg.cache_type == "standard" and cfg.max_kv_size is None and cfg.kv_bits is None
    assert cfg.kv_group_size == 64 and cfg.quantized_kv_start == 0
    assert cfg.draft_model_path is None and cfg.num_draft_tokens == 2 and cfg.vision is False


def test_valid_cache_and_draft_settings() -> None:
    assert _mlx(cache_type="rotating", max_kv_size=128).max_kv_size == 128
    quantized = _mlx(cache_type="quantized", kv_bits=4, kv_group_size=32, quantized_kv_start=256)
    assert (quantized.kv_bits, quantized.kv_group_size, quantized.quantized_kv_start) == (4, 32, 256)
    draft = _mlx(draft_model_path="small", num_draft_tokens=4)
    assert draft.draft_model_path is not None and draft.draft_model_path.name == "small"
    assert draft.num_draft_tokens == 4


def test_sampling_defaults_feed_the_resolved_sampling() -> None:
    defaults = _mlx(temperature=0.2, top_k=5, repetition_penalty=1.3, repetition_context_size=32, stop="###")
    overrides = defaults.sampling_defaults()
    assert overrides.temperature == 0.2 and overrides.top_k == 5
    assert overrides.repeat_penalty == 1.3 and overrides.repeat_last_n == 32 and overrides.stop == ["###"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cache_type": "rotating"}, "cache_type rotating needs max_kv_size"),
        ({"max_kv_size": 64}, "max_kv_size applies only to cache_type rotating"),
        ({"cache_type": "quantized", "max_kv_size": 64, "kv_bits": 4}, "max_kv_size applies only"),
        ({"cache_type": "quantized"}, "cache_type quantized needs kv_bits"),
        ({"kv_bits": 4}, "kv_bits applies only to cache_type quantized"),
        ({"kv_group_size": 32, "quantized_kv_start": 9}, "kv_group_size, quantized_kv_start apply only"),
        ({"num_draft_tokens": 3}, "num_draft_tokens applies only with draft_model_path"),
        ({"cache_type": "paged"}, "field 'config.cache_type'"),
        ({"kv_bits": 9, "cache_type": "quantized"}, "field 'config.kv_bits'"),
        ({"draft_model": "x"}, "did you mean 'draft_model_path'"),
    ],
)
def test_settings_that_would_be_ignored_are_errors(config: dict[str, Any], message: str) -> None:
    problem = _problem(**config)
    assert problem.startswith("model 'm': ") and message in problem
