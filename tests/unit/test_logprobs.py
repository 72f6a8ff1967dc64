"""Log probabilities: the math (a distribution over the whole vocabulary, top lists sorted and of the asked length),
and the backends in-process on the demo models (greedy tokens are the most likely ones; llama.cpp and MLX, one at a
time and batched, report the same numbers for the same weights)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heylook_llm.backends.base import Backend
from heylook_llm.backends.llama_cpp import LlamaCppBackend
from heylook_llm.backends.logprobs import Distribution, describe, log_softmax, token_text, top_tokens
from heylook_llm.backends.mlx import MLXBackend, MLXBatchedBackend
from heylook_llm.config.registry import parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.demo import DEMO_MLX_DIR, ModelShape
from heylook_llm.types import ChatMessage, Feature, GenerationChunk, GenerationRequest, SamplingParams, TokenLogprob

pytestmark = pytest.mark.unit

PARITY = 0.01
"""Largest difference between the backends' logprobs of the same tokens (llama.cpp keeps its KV cache in float16)."""
ASK = [ChatMessage("user", "Compare the two backends, please")]


def test_log_softmax_is_a_distribution_and_describe_sorts_the_top() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(150_000) * 6).astype(np.float32)
    logprobs = log_softmax(logits)
    assert abs(float(np.exp(logprobs).sum()) - 1.0) < 1e-6
    assert int(np.argmax(logprobs)) == int(np.argmax(logits))
    best = int(np.argmax(logits))
    entry = describe(Distribution(logits), best, 20, lambda t: str(t).encode())
    assert entry.logprob == max(t.logprob for t in entry.top) == entry.top[0].logprob
    assert len(entry.top) == 20 and [t.logprob for t in entry.top] == sorted(
        (t.logprob for t in entry.top), reverse=True
    )
    assert entry.top[0].token_id == best and entry.text == str(best) and entry.piece == str(best).encode()
    assert abs(entry.logprob - logprobs[best]) < 1e-6


@pytest.mark.parametrize("size", [3, 700, 5_000, 150_001])
@pytest.mark.parametrize("count", [1, 5, 20])
def test_top_tokens_finds_the_largest_in_order(size: int, count: int) -> None:
    """The block shortcut for large vocabularies gives what a full sort gives (ties broken by lower id)."""
    rng = np.random.default_rng(size + count)
    values = rng.standard_normal(size).astype(np.float32)
    values[rng.integers(0, size, 4)] = values.max()  # ties at the top
    expected = sorted(range(size), key=lambda i: (-float(values[i]), i))[:count]
    found = top_tokens(values, count)
    assert [float(values[i]) for i in found] == [float(values[i]) for i in expected]
    assert len(set(found)) == len(found) == min(count, size)
    assert top_tokens(values, 0) == []


def test_partial_characters_show_their_bytes() -> None:
    assert token_text("é".encode()) == "é"
    assert token_text(b"\xe2\x82") == "bytes:\\xe2\\x82"


def _entry(provider: str, path: Path, **config: Any) -> Any:
    registry = parse_registry(
        {"models": [{"id": "m", "provider": provider, "config": {"model_path": str(path), **config}}]}, None
    )
    entry = registry.get("m")
    assert entry is not None
    return entry


@pytest.fixture(scope="module")
def backends(demo_dir: Path) -> Iterator[dict[str, Backend]]:
    settings = ServerSettings()
    loaded: dict[str, Backend] = {
        "gguf": LlamaCppBackend(_entry("llama_cpp", demo_dir / "demo-gguf.gguf", n_ctx=512, n_threads=1), settings),
        "mlx": MLXBackend(_entry("mlx", demo_dir / DEMO_MLX_DIR, parallel=1), settings),
        "mlx-batched": MLXBatchedBackend(_entry("mlx", demo_dir / DEMO_MLX_DIR, parallel=2), settings),
    }
    for backend in loaded.values():
        backend.load()
        assert Feature.LOGPROBS in backend.features
    yield loaded
    for backend in loaded.values():
        backend.unload()


def _logprobs(backend: Backend, top: int, max_tokens: int = 24, **sampling: Any) -> tuple[list[TokenLogprob], Any]:
    sampling.setdefault("temperature", 0.0)
    request = GenerationRequest(
        "m", SamplingParams(max_tokens=max_tokens, **sampling), messages=ASK, logprobs=True, top_logprobs=top
    )
    chunks: list[GenerationChunk] = list(backend.generate(request))
    entries = [e for c in chunks for e in c.logprobs]
    ids = [t for c in chunks for t in c.token_ids]
    assert [e.token_id for e in entries] == ids
    assert chunks[-1].stats is not None and len(entries) == chunks[-1].stats.completion_tokens
    return entries, ids


@pytest.mark.parametrize("name", ["gguf", "mlx", "mlx-batched"])
def test_greedy_tokens_are_the_most_likely_and_tops_are_sorted(backends: dict[str, Backend], name: str) -> None:
    entries, _ = _logprobs(backends[name], top=5)
    for entry in entries:
        assert len(entry.top) == 5
        values = [t.logprob for t in entry.top]
        assert values == sorted(values, reverse=True)
        assert entry.token_id == entry.top[0].token_id and entry.logprob == values[0] <= 0.0


@pytest.mark.parametrize("name", ["gguf", "mlx"])
def test_the_whole_vocabulary_sums_to_one(backends: dict[str, Backend], name: str) -> None:
    vocab = ModelShape().vocab
    entries, _ = _logprobs(backends[name], top=vocab, max_tokens=3)
    for entry in entries:
        assert len(entry.top) == vocab
        assert abs(sum(np.exp(t.logprob) for t in entry.top) - 1.0) < 1e-6


def test_values_do_not_depend_on_sampling_settings(backends: dict[str, Backend]) -> None:
    """Raw model logprobs: a temperature or a bias changes which tokens come, not what a token's value is."""
    backend = backends["gguf"]
    greedy, ids = _logprobs(backend, top=0, max_tokens=8)
    biased, biased_ids = _logprobs(backend, top=0, max_tokens=8, logit_bias=((ids[0], -100.0),))
    assert biased_ids[0] != ids[0]
    # The banned token's value at the first position is still the model's own.
    first = _first_position(backend)
    assert abs(first[ids[0]] - greedy[0].logprob) < 1e-6 and abs(first[biased_ids[0]] - biased[0].logprob) < 1e-6


def _first_position(backend: Backend) -> dict[int, float]:
    """Every token's logprob at the first position, greedy and unbiased."""
    entries, _ = _logprobs(backend, top=512, max_tokens=1)
    return {t.token_id: t.logprob for t in entries[0].top}


def test_both_backends_agree_on_the_same_tokens(backends: dict[str, Backend]) -> None:
    gguf, gguf_ids = _logprobs(backends["gguf"], top=3, max_tokens=40)
    for name in ("mlx", "mlx-batched"):
        mlx, mlx_ids = _logprobs(backends[name], top=3, max_tokens=40)
        same = 0
        while same < min(len(gguf_ids), len(mlx_ids)) and gguf_ids[same] == mlx_ids[same]:
            same += 1
        assert same >= 8, (gguf_ids, mlx_ids)
        for a, b in zip(gguf[:same], mlx[:same], strict=True):
            assert abs(a.logprob - b.logprob) < PARITY
            assert a.text == b.text and a.piece == b.piece
