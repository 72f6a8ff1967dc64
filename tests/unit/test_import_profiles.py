"""Profiles, --override and their precedence, value by value (importer/profiles.py, overrides.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from heylook_llm.config.registry import LlamaCppConfig, MLXConfig
from heylook_llm.importer.detect import FoundModel, detect_folder, detect_gguf
from heylook_llm.importer.overrides import OverrideError, parse_override, parse_overrides
from heylook_llm.importer.profiles import PROFILES, PlanError, plan_entry
from tests.support.import_fixtures import write_gguf

pytestmark = pytest.mark.unit

# The values docs/import.md promises, written out again so that a change to profiles.py must be deliberate.
SAMPLING = {
    "fast": {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "max_tokens": 256},
    "balanced": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "max_tokens": 1024},
    "quality": {"temperature": 0.6, "top_p": 0.95, "top_k": 64, "min_p": 0.02, "max_tokens": 4096},
    "memory": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "max_tokens": 512},
    "interactive": {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "max_tokens": 512},
}
PENALTY = {"fast": 1.0, "balanced": 1.05, "quality": 1.0, "memory": 1.05, "interactive": 1.1}
LLAMA = {
    "fast": {"n_ctx": 2048, "parallel": 4, "n_batch": 512},
    "balanced": {"n_ctx": 4096, "parallel": 4, "n_batch": 512},
    "quality": {"n_ctx": 8192, "parallel": 2, "n_batch": 1024},
    "memory": {"n_ctx": 2048, "parallel": 1, "n_batch": 256},
    "interactive": {"n_ctx": 8192, "parallel": 1, "n_batch": 512},
}
# MLX `parallel` (continuous batching) exists where the registry schema has it; mlx-lm batches standard caches only.
MLX_PARALLEL = "parallel" in MLXConfig.model_fields
MLX_CACHE: dict[str, dict[str, Any]] = {
    "fast": {},
    "balanced": {},
    "quality": {},
    "memory": {"cache_type": "quantized", "kv_bits": 4, "kv_group_size": 64},
    "interactive": {"cache_type": "rotating", "max_kv_size": 8192},
}


@pytest.fixture()
def long_gguf(tmp_path: Path) -> FoundModel:
    found = detect_gguf(write_gguf(tmp_path / "long.gguf", context=32768))
    assert isinstance(found, FoundModel)
    return found


@pytest.fixture()
def long_mlx(demo_dir: Path, tmp_path: Path) -> FoundModel:
    """The demo MLX folder claiming 64-wide heads and a 32k context (its config is all detection reads)."""
    folder = Path(shutil.copytree(demo_dir / "demo-mlx", tmp_path / "long-mlx"))
    config = json.loads((folder / "config.json").read_text())
    config.update(head_dim=64, max_position_embeddings=32768)
    (folder / "config.json").write_text(json.dumps(config))
    found = detect_folder(folder)
    assert isinstance(found, FoundModel)
    return found


def test_there_are_five_profiles() -> None:
    assert list(PROFILES) == ["fast", "balanced", "quality", "memory", "interactive"]


@pytest.mark.parametrize("name", list(PROFILES))
def test_profile_values_for_llama_cpp(long_gguf: FoundModel, name: str) -> None:
    planned = plan_entry(long_gguf, "m", PROFILES[name], [])
    expected = {"model_path": str(long_gguf.path), **LLAMA[name], **SAMPLING[name], "repeat_penalty": PENALTY[name]}
    assert planned.config == expected
    assert planned.sources["model_path"] == "detected"
    assert all(planned.sources[k] == "profile" for k in expected if k != "model_path")
    assert planned.context == LLAMA[name]["n_ctx"] * LLAMA[name]["parallel"]
    LlamaCppConfig.model_validate(planned.config)


@pytest.mark.parametrize("name", list(PROFILES))
def test_profile_values_for_mlx(long_mlx: FoundModel, name: str) -> None:
    planned = plan_entry(long_mlx, "m", PROFILES[name], [])
    expected = {
        "model_path": str(long_mlx.path),
        **MLX_CACHE[name],
        **({"parallel": LLAMA[name]["parallel"]} if MLX_PARALLEL else {}),
        **SAMPLING[name],
        "repetition_penalty": PENALTY[name],
    }
    assert planned.config == expected
    # the KV estimate: the profile's context, once per batched request
    assert planned.context == LLAMA[name]["n_ctx"] * (LLAMA[name]["parallel"] if MLX_PARALLEL else 1)
    MLXConfig.model_validate(planned.config)


def test_every_profile_differs_from_every_other(long_gguf: FoundModel, long_mlx: FoundModel) -> None:
    for found in (long_gguf, long_mlx):
        configs = [json.dumps(plan_entry(found, "m", p, []).config, sort_keys=True) for p in PROFILES.values()]
        assert len(set(configs)) == len(configs)


def test_profile_context_is_bounded_by_the_trained_context(demo_dir: Path) -> None:
    found = detect_gguf(demo_dir / "demo-gguf.gguf")  # trained on 2048 tokens
    assert isinstance(found, FoundModel)
    assert plan_entry(found, "m", PROFILES["quality"], []).config["n_ctx"] == 2048


def test_memory_profile_on_narrow_heads_uses_a_rotating_cache(demo_dir: Path) -> None:
    found = detect_folder(demo_dir / "demo-mlx")  # 16-wide heads: MLX cannot quantize them
    assert isinstance(found, FoundModel)
    planned = plan_entry(found, "m", PROFILES["memory"], [])
    assert (planned.config["cache_type"], planned.config["max_kv_size"]) == ("rotating", 2048)
    assert "kv_bits" not in planned.config and any("cannot be quantized" in n for n in planned.notes)


def test_memory_profile_picks_a_group_size_the_heads_allow(long_mlx: FoundModel) -> None:
    assert long_mlx.kv is not None
    long_mlx.kv = type(long_mlx.kv)(long_mlx.kv.values_per_token, 96, long_mlx.kv.element_bytes)
    planned = plan_entry(long_mlx, "m", PROFILES["memory"], [])
    assert (planned.config["cache_type"], planned.config["kv_group_size"]) == ("quantized", 32)


def test_embedding_models_get_no_sampling_and_a_batch_as_long_as_the_context(demo_dir: Path) -> None:
    found = detect_gguf(demo_dir / "demo-embed-gguf.gguf")
    assert isinstance(found, FoundModel)
    planned = plan_entry(found, "e", PROFILES["fast"], [])
    assert planned.config == {
        "model_path": str(found.path),
        "n_ctx": 2048,
        "embedding": True,
        "parallel": 4,
        "n_batch": 2048,
    }


def test_precedence_detected_then_profile_then_override(long_gguf: FoundModel) -> None:
    detected_only = plan_entry(long_gguf, "m", PROFILES["fast"], parse_overrides(["n_ctx=null"]))
    assert "n_ctx" not in detected_only.config  # null removes the key: the schema default applies
    overrides = parse_overrides(["n_ctx=1000", "temperature=0.1", "top_k=null", "enabled=false", "tags=[x]"])
    planned = plan_entry(long_gguf, "m", PROFILES["fast"], overrides)
    assert (planned.config["n_ctx"], planned.sources["n_ctx"]) == (1000, "override")
    assert (planned.config["temperature"], planned.sources["temperature"]) == (0.1, "override")
    assert "top_k" not in planned.config
    assert (planned.config["top_p"], planned.sources["top_p"]) == (0.9, "profile")
    assert planned.entry_fields == {"enabled": False, "tags": ["x"]}
    assert planned.context == 1000 * 4


def test_override_above_the_trained_context_is_kept_with_a_note(long_gguf: FoundModel) -> None:
    planned = plan_entry(long_gguf, "m", PROFILES["fast"], parse_overrides(["n_ctx=65536"]))
    assert planned.config["n_ctx"] == 65536 and any("above the trained context" in n for n in planned.notes)


def test_provider_specific_overrides_touch_only_their_provider(long_gguf: FoundModel, long_mlx: FoundModel) -> None:
    overrides = parse_overrides(["n_ctx=1024", "kv_group_size=32", "cache_type=quantized", "kv_bits=8"])
    assert plan_entry(long_gguf, "g", PROFILES["balanced"], overrides).config["n_ctx"] == 1024
    mlx = plan_entry(long_mlx, "x", PROFILES["interactive"], overrides).config
    assert "n_ctx" not in mlx
    # cache_type from the override: the profile's rotating max_kv_size goes, the override's settings stay
    assert (mlx["cache_type"], mlx["kv_bits"], mlx["kv_group_size"]) == ("quantized", 8, 32)
    assert "max_kv_size" not in mlx
    if MLX_PARALLEL:
        assert mlx["parallel"] == 1  # a quantized cache is not batched
        fast = plan_entry(long_mlx, "x", PROFILES["fast"], parse_overrides(["cache_type=rotating", "max_kv_size=64"]))
        assert (fast.config["parallel"], fast.config["max_kv_size"]) == (1, 64)


def test_an_override_that_breaks_a_combination_names_the_model_field_and_override(long_mlx: FoundModel) -> None:
    with pytest.raises(PlanError) as caught:
        plan_entry(long_mlx, "mx", PROFILES["balanced"], parse_overrides(["max_kv_size=100"]))
    (problem,) = caught.value.problems
    assert "model 'mx'" in problem and "max_kv_size applies only to cache_type rotating" in problem
    assert "--override max_kv_size=100" in problem
    with pytest.raises(PlanError, match="needs kv_bits"):
        plan_entry(long_mlx, "mx", PROFILES["interactive"], parse_overrides(["cache_type=quantized"]))


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("temperature=0.2", "temperature", 0.2),
        ("temperature=1", "temperature", 1.0),
        ("n_ctx=8192", "n_ctx", 8192),
        ("use_mmap=false", "use_mmap", False),
        ("stop=[</s>, END]", "stop", ["</s>", "END"]),
        ("stop=END", "stop", ["END"]),
        ("cache_type=rotating", "cache_type", "rotating"),
        ("kv_bits=4", "kv_bits", 4),
        ("chat_format=chatml", "chat_format", "chatml"),
        ("enabled=false", "enabled", False),
        ("tags=[a, b]", "tags", ["a", "b"]),
        ("system=Be brief.", "system", "Be brief."),
        ("system=yes", "system", "yes"),  # YAML 1.1 would say True; a text field takes the text
        ("top_k=", "top_k", None),
    ],
)
def test_override_values_are_typed(text: str, key: str, value: object) -> None:
    override = parse_override(text)
    assert (override.key, override.value) == (key, value)
    assert type(override.value) is type(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("temprature=0.2", "unknown key; did you mean 'temperature'?"),
        ("n_cxt=4096", "did you mean 'n_ctx'?"),
        ("zzzz=1", "known keys: "),
        ("n_ctx=big", "valid integer"),
        ("temperature=9", "less than or equal to 5"),
        ("kv_bits=16", "less than or equal to 8"),
        ("chat_format=chatmll", "did you mean 'chatml'?"),
        ("model_path=/x", "set per model by the import"),
        ("temperature", "expected KEY=VALUE"),
        ("stop=[unclosed", "not valid YAML"),
    ],
)
def test_bad_overrides_are_errors_that_say_why(text: str, message: str) -> None:
    with pytest.raises(OverrideError) as caught:
        parse_override(text)
    assert message in caught.value.problems[0]
    assert caught.value.problems[0].startswith("--override ")


def test_every_bad_override_is_listed_and_the_last_of_a_key_wins() -> None:
    with pytest.raises(OverrideError) as caught:
        parse_overrides(["temprature=1", "n_ctx=x", "top_p=0.5"])
    assert len(caught.value.problems) == 2
    assert [o.value for o in parse_overrides(["top_p=0.5", "top_p=0.7"])] == [0.7]
