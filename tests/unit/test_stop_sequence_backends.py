"""The one-at-a-time MLX backend (parallel: 1) in-process on the real demo model puts the matched stop string on its
final chunk (the server's demo-mlx is the batched backend; tests/integration/test_anthropic_stop_sequence.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from heylook_llm.backends.mlx import MLXBackend
from heylook_llm.config.registry import parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.demo import DEMO_MLX_DIR
from heylook_llm.types import ChatMessage, FinishReason, GenerationChunk, GenerationRequest, SamplingParams

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def one_at_a_time(demo_dir: Path) -> Iterator[MLXBackend]:
    config = {"model_path": str(demo_dir / DEMO_MLX_DIR), "parallel": 1}
    entry = parse_registry({"models": [{"id": "m", "provider": "mlx", "config": config}]}, None).get("m")
    assert entry is not None
    backend = MLXBackend(entry, ServerSettings())
    backend.load()
    yield backend
    backend.unload()


def _run(backend: MLXBackend, stop: tuple[str, ...] = ()) -> tuple[str, GenerationChunk]:
    sampling = SamplingParams(temperature=0.0, max_tokens=24, stop=stop)
    request = GenerationRequest("m", sampling, messages=[ChatMessage("user", "Tell me a story.")])
    chunks = list(backend.generate(request))
    return "".join(c.text for c in chunks), chunks[-1]


def test_the_final_chunk_names_the_stop_string_that_matched(one_at_a_time: MLXBackend) -> None:
    reference, plain = _run(one_at_a_time)
    assert plain.finish_reason is FinishReason.LENGTH and plain.stop_sequence is None
    stop = reference[10:13]
    assert stop.strip(), reference
    text, last = _run(one_at_a_time, ("\u2603absent", stop))
    assert text == reference[: reference.index(stop)]
    assert last.finish_reason is FinishReason.STOP and last.stop_sequence == stop
