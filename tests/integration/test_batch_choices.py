"""OpenAI `n` (several choices for one prompt) and the measured speed of parallel batches."""

from __future__ import annotations

import time
from typing import Any

import pytest
from openai import OpenAI

pytestmark = pytest.mark.integration

PROMPT = [{"role": "user", "content": "Tell me three different things"}]
EOS_TOKEN_ID = "2"  # the demo tokenizer's <|im_end|>: banned where a test needs exactly max_tokens tokens
TIMED_TOKENS = 400
"""Long enough that decoding, which batching shares, outweighs the fixed per-request cost on the tiny model."""


def _choices(client: OpenAI, model: str, n: int, seed: int, max_tokens: int = 10) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=PROMPT,
        n=n,
        seed=seed,
        temperature=1.0,
        max_tokens=max_tokens,  # type: ignore[arg-type]
    )


def test_n_choices_are_indexed_seeded_and_reproducible(client: OpenAI, chat_model: str) -> None:
    first = _choices(client, chat_model, 3, seed=11)
    again = _choices(client, chat_model, 3, seed=11)
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices]
    # Choice i samples with seed + i: not three copies of one answer.
    assert len(set(texts)) > 1
    single = client.chat.completions.create(
        model=chat_model,
        messages=PROMPT,
        seed=11,
        temperature=1.0,
        max_tokens=10,  # type: ignore[arg-type]
    )
    assert single.choices[0].message.content == texts[0]
    assert first.usage is not None and single.usage is not None
    # Usage counts every choice: each is its own sequence, prompt included (cached tokens show what was reused).
    assert first.usage.completion_tokens == 3 * 10
    assert first.usage.prompt_tokens == 3 * single.usage.prompt_tokens


def test_n_streaming_interleaves_choices_by_index(client: OpenAI) -> None:
    expected = _choices(client, "demo-gguf", 3, seed=5, max_tokens=24)
    stream = client.chat.completions.create(
        model="demo-gguf",
        messages=PROMPT,  # type: ignore[arg-type]
        n=3,
        seed=5,
        temperature=1.0,
        max_tokens=24,
        logit_bias={EOS_TOKEN_ID: -100},
        stream=True,
        stream_options={"include_usage": True},
    )
    order: list[int] = []
    texts = ["", "", ""]
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.content:
                order.append(choice.index)
                texts[choice.index] += choice.delta.content
    assert texts == [c.message.content for c in expected.choices]
    # The choices run in one batch: their pieces arrive mixed, not one choice after another.
    assert order != sorted(order)
    assert usage is not None and expected.usage is not None
    assert usage.completion_tokens == expected.usage.completion_tokens


def test_n_above_the_limit_is_refused(client: OpenAI) -> None:
    import openai

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="demo-gguf", messages=PROMPT, n=1000)  # type: ignore[arg-type]


def _timed_batch(client: OpenAI, mode: str, groups: int) -> float:
    messages = [{"role": "user", "content": f"Write a long story about topic {i}"} for i in range(groups)]
    started = time.perf_counter()
    result = client.chat.completions.create(
        model="demo-gguf",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=TIMED_TOKENS,
        temperature=0,
        logit_bias={EOS_TOKEN_ID: -100},
        extra_body={"processing_mode": mode},
    )
    elapsed = time.perf_counter() - started
    body = result.model_dump()
    assert body["batch_info"]["successful"] == groups
    assert body["usage"]["completion_tokens"] == TIMED_TOKENS * groups
    return elapsed


def test_parallel_is_measurably_faster_than_sequential(client: OpenAI) -> None:
    _timed_batch(client, "parallel", 4)  # warm the model and its slots
    # Alternating runs, best of three each: a busy moment on a shared machine hits both modes alike.
    sequential, parallel = [], []
    for _ in range(3):
        sequential.append(_timed_batch(client, "sequential", 4))
        parallel.append(_timed_batch(client, "parallel", 4))
    assert min(parallel) < 0.9 * min(sequential), f"parallel {parallel} vs sequential {sequential}"
