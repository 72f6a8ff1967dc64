"""Prompt-lookup drafting (n-gram index) and the speculative-decoding fields of a llama.cpp model's config."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from heylook_llm.backends.llama_speculative import NgramLookup, SpeculationOptions, speculation_options
from heylook_llm.config.registry import LlamaCppConfig, RegistryError, load_registry

pytestmark = pytest.mark.unit


def _scan(tokens: list[int], k: int, ngram_min: int, ngram_max: int) -> list[int]:
    """What prompt lookup should propose, by scanning: the longest n-gram first, its latest earlier occurrence."""
    end = len(tokens)
    for n in range(min(ngram_max, end), ngram_min - 1, -1):
        suffix = tokens[end - n :]
        for start in range(end - n - 1, -1, -1):
            if tokens[start : start + n] == suffix:
                return tokens[start + n : start + n + k]
    return []


def test_lookup_proposes_what_followed_the_context_end_before() -> None:
    lookup = NgramLookup(2, 3, [1, 2, 3, 4, 5, 6, 9, 2, 3])
    assert lookup.propose(3) == [4, 5, 6]
    assert lookup.propose(1) == [4]
    # The latest occurrence wins among equally long matches; a longer match wins over a later shorter one.
    lookup.extend([4, 7, 8, 2, 3])
    assert lookup.propose(2) == [4, 7]
    lookup.extend([4, 5])
    assert lookup.propose(4) == [6, 9, 2, 3]


def test_lookup_proposes_nothing_without_a_long_enough_match() -> None:
    assert NgramLookup(2, 3, [1, 2, 3, 4, 3]).propose(4) == []
    assert NgramLookup(1, 3, [1, 2, 3, 4, 3]).propose(4) == [4, 3]
    assert NgramLookup(1, 1, [7]).propose(4) == []
    assert NgramLookup(1, 2, []).propose(4) == []


def test_a_match_never_runs_past_the_context() -> None:
    lookup = NgramLookup(1, 2, [5, 5, 5])
    # The latest earlier "5 5" ends one token before the end: only that token follows it.
    assert lookup.propose(8) == [5]


def test_lookup_agrees_with_a_scan_as_tokens_arrive() -> None:
    rng = random.Random(5)
    for _ in range(40):
        ngram_min = rng.randint(1, 3)
        ngram_max = rng.randint(ngram_min, 5)
        tokens = [rng.randint(0, 6) for _ in range(rng.randint(0, 30))]
        lookup = NgramLookup(ngram_min, ngram_max, tokens[:3])
        seen = tokens[:3]
        for i in range(3, len(tokens) + 1, rng.randint(1, 4)):
            lookup.extend(tokens[len(seen) : i])
            seen = tokens[:i]
            k = rng.randint(1, 8)
            assert lookup.propose(k) == _scan(seen, k, ngram_min, ngram_max), (seen, k, ngram_min, ngram_max)


def _registry(tmp_path: Path, config: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(f"models:\n  - id: m\n    provider: llama_cpp\n    config:\n      model_path: m.gguf\n{config}")
    return path


def test_config_turns_on_prompt_lookup_or_a_draft_model(tmp_path: Path) -> None:
    lookup = load_registry(_registry(tmp_path, "      prompt_lookup: {ngram_max: 4, num_draft_tokens: 5}\n")).get("m")
    assert lookup is not None and isinstance(lookup.config, LlamaCppConfig)
    assert speculation_options(lookup.config) == SpeculationOptions(5, ngram_min=2, ngram_max=4)
    drafted = load_registry(_registry(tmp_path, "      draft_model_path: small.gguf\n")).get("m")
    assert drafted is not None and isinstance(drafted.config, LlamaCppConfig)
    options = speculation_options(drafted.config)
    assert options == SpeculationOptions(4, draft_model_path=(tmp_path / "small.gguf").resolve())
    plain = load_registry(_registry(tmp_path, "")).get("m")
    assert plain is not None and isinstance(plain.config, LlamaCppConfig)
    assert speculation_options(plain.config) is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("      num_draft_tokens: 3\n", "num_draft_tokens applies only with draft_model_path"),
        ("      draft_model_path: s.gguf\n      prompt_lookup: {}\n", "either draft_model_path or prompt_lookup"),
        ("      prompt_lookup: {ngram_min: 4, ngram_max: 2}\n", "ngram_min (4) is larger than ngram_max (2)"),
        ("      embedding: true\n      prompt_lookup: {}\n", "needs a generating model"),
        ("      prompt_lookup: {num_draft_tokens: 0}\n", "num_draft_tokens"),
        ("      prompt_lookup: {ngram: 3}\n", "ngram"),
    ],
)
def test_config_refuses_speculation_settings_that_do_not_fit(tmp_path: Path, config: str, message: str) -> None:
    with pytest.raises(RegistryError) as raised:
        load_registry(_registry(tmp_path, config))
    assert message in str(raised.value)
