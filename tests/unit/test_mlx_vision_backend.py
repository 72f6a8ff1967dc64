"""The MLX vision backend in-process on the demo vision model: penalties see the prompt and the generated tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heylook_llm.backends.mlx_vlm import MLXVisionBackend
from heylook_llm.config.registry import parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.demo import DEMO_VISION_MLX_DIR
from heylook_llm.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.unit

ASK = [ChatMessage("user", "describe the worker and the server")]


@pytest.fixture(scope="module")
def vision(demo_dir: Path) -> Iterator[MLXVisionBackend]:
    config = {"model_path": str(demo_dir / DEMO_VISION_MLX_DIR), "vision": True}
    entry = parse_registry({"models": [{"id": "v", "provider": "mlx", "config": config}]}, None).get("v")
    assert entry is not None
    backend = MLXVisionBackend(entry, ServerSettings())
    backend.load()
    yield backend
    backend.unload()


def _pieces(backend: MLXVisionBackend, **sampling: Any) -> list[str]:
    params = SamplingParams(**{"temperature": 0.0, "max_tokens": 4, **sampling})
    return [c.text for c in backend.generate(GenerationRequest("v", params, messages=ASK)) if c.text]


def _word_tokens(backend: MLXVisionBackend, ids: Any) -> list[int]:
    tokenizer = backend._processor.tokenizer
    return [int(t) for t in ids if tokenizer.decode([int(t)]).strip().isalpha()]


def test_penalties_count_the_prompt_and_the_generated_tokens(vision: MLXVisionBackend) -> None:
    prompt = np.asarray(
        vision._inputs(*vision._prompt(GenerationRequest("v", SamplingParams(), messages=ASK)))["input_ids"]
    )
    prompt_ids = [int(t) for t in prompt.reshape(-1)]
    tokenizer = vision._processor.tokenizer
    # A word of the prompt that is not its last token (mlx-vlm passes processors only the last one itself).
    in_prompt = next(t for t in _word_tokens(vision, prompt_ids[:-1]) if t != prompt_ids[-1])
    elsewhere = next(t for t in _word_tokens(vision, range(len(tokenizer))) if t not in prompt_ids)
    penalty = {"repeat_penalty": 1e6, "repeat_last_n": -1}

    forced = _pieces(vision, logit_bias=((in_prompt, 100.0),))
    assert forced[0] == tokenizer.decode([in_prompt])
    # The same token is now repeated from the prompt: the penalty takes it back to near zero.
    assert _pieces(vision, logit_bias=((in_prompt, 100.0),), **penalty)[0] != forced[0]

    repeated = _pieces(vision, logit_bias=((elsewhere, 100.0),))
    assert "".join(repeated) == tokenizer.decode([elsewhere]) * 4
    # Not in the prompt: generated once, then penalised as a generated token.
    first, second, *_ = _pieces(vision, logit_bias=((elsewhere, 100.0),), **penalty)
    assert first == tokenizer.decode([elsewhere]) and second != first
