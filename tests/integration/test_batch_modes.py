"""Batch processing modes on /v1/chat/completions against a real server and the demo models."""

from __future__ import annotations

from typing import Any

import pytest
from openai import OpenAI

pytestmark = pytest.mark.integration

BOUNDARY = "___CONVERSATION_BOUNDARY___"
SYSTEM = {"role": "system", "content": "You answer every question in one short line. " * 8}
QUESTIONS = [{"role": "user", "content": f"Question number {i}: what comes next?"} for i in range(4)]
TOO_LONG = {"role": "user", "content": "overflowing context " * 3000}


def _batch(client: OpenAI, model: str, messages: list[dict[str, Any]], mode: str, **extra: Any) -> dict[str, Any]:
    result = client.chat.completions.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=extra.pop("max_tokens", 6),
        temperature=0,
        extra_body={"processing_mode": mode, **extra},
    )
    body: dict[str, Any] = result.model_dump()
    assert body["object"] == "chat.completion.batch"
    return body


def _prompt_tokens(body: dict[str, Any]) -> list[int]:
    return [c["usage"]["prompt_tokens"] for c in body["completions"]]


def test_sequential_groups_are_independent_and_share_the_leading_system_prompt(client: OpenAI, chat_model: str) -> None:
    body = _batch(client, chat_model, [SYSTEM, *QUESTIONS], "sequential", include_timing=True)
    assert len(body["completions"]) == 4
    assert body["batch_info"] == {
        "processing_mode": "sequential",
        "groups_processed": 4,
        "successful": 4,
        "failed": [],
    }
    # The questions have the same length: independent groups have the same prompt size.
    assert len(set(_prompt_tokens(body))) == 1
    alone = client.chat.completions.create(
        model=chat_model,
        messages=[SYSTEM, QUESTIONS[2]],
        max_tokens=6,
        temperature=0,  # type: ignore[list-item]
    )
    assert body["completions"][2]["choices"][0]["message"]["content"] == alone.choices[0].message.content
    assert body["usage"]["completion_tokens"] == sum(c["usage"]["completion_tokens"] for c in body["completions"])
    timing = body["timing"]
    assert timing["total_time"] > 0 and timing["average_per_group"] == pytest.approx(timing["total_time"] / 4)
    assert "parallel_speedup" not in timing


def test_sequential_with_context_sees_earlier_prompts_and_answers(client: OpenAI, chat_model: str) -> None:
    independent = _prompt_tokens(_batch(client, chat_model, [SYSTEM, *QUESTIONS], "sequential"))
    body = _batch(client, chat_model, [SYSTEM, *QUESTIONS], "sequential_with_context")
    with_context = _prompt_tokens(body)
    assert with_context[0] == independent[0]
    for i in range(1, 4):
        # Each group's prompt holds every earlier question and answer: it grows by at least those tokens.
        earlier = sum(c["usage"]["completion_tokens"] for c in body["completions"][:i])
        assert with_context[i] >= independent[i] + (with_context[i - 1] - independent[0]) + earlier


def test_parallel_with_context_evaluates_the_shared_prefix_once_first(client: OpenAI) -> None:
    messages = [SYSTEM, {"role": "user", "content": BOUNDARY}, *QUESTIONS]
    body = _batch(client, "demo-gguf", messages, "parallel_with_context", include_timing=True)
    shared = body["batch_info"]["shared_prefix"]
    assert shared["evaluated"] and shared["messages"] == 1 and shared["prompt_tokens"] > 50
    assert all(p > shared["prompt_tokens"] - 5 for p in _prompt_tokens(body))
    cached = [c["usage"]["prompt_tokens_details"]["cached_tokens"] for c in body["completions"]]
    # The group that takes the slot holding the evaluated prefix reuses it instead of reading it again.
    assert max(cached) >= shared["prompt_tokens"] - 8
    assert body["timing"]["parallel_speedup"] > 0 and body["timing"]["shared_prefix_time"] > 0


def test_parallel_with_context_reuses_the_prefix_in_every_group(client: OpenAI) -> None:
    system = {"role": "system", "content": "A fresh shared prefix for this test only. " * 10}
    body = _batch(client, "demo-gguf", [system, *QUESTIONS], "parallel_with_context")
    shared = body["batch_info"]["shared_prefix"]["prompt_tokens"]
    cached = [c["usage"]["prompt_tokens_details"]["cached_tokens"] for c in body["completions"]]
    assert all(c >= shared - 8 for c in cached), cached


def test_one_failing_group_does_not_fail_the_others(client: OpenAI) -> None:
    for mode in ("parallel", "sequential_with_context"):
        body = _batch(client, "demo-gguf", [QUESTIONS[0], TOO_LONG, QUESTIONS[1]], mode)
        info = body["batch_info"]
        assert info["successful"] == 2 and [f["group_index"] for f in info["failed"]] == [1]
        assert info["failed"][0]["error"]["code"] == "context_length_exceeded"
        assert body["completions"][1] is None
        assert body["completions"][0]["choices"][0]["message"]["content"]
        assert body["completions"][2]["choices"][0]["message"]["content"]
        assert body["usage"]["prompt_tokens"] == sum(c["usage"]["prompt_tokens"] for c in body["completions"] if c)


def test_joined_answers_when_not_individual(client: OpenAI) -> None:
    individual = _batch(client, "demo-gguf", QUESTIONS[:3], "parallel")
    joined = _batch(client, "demo-gguf", QUESTIONS[:3], "parallel", return_individual=False)
    assert "completions" not in joined and len(joined["choices"]) == 1
    answers = joined["choices"][0]["message"]["content"].split(f"\n\n{BOUNDARY}\n\n")
    assert answers == [c["choices"][0]["message"]["content"] for c in individual["completions"]]
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert joined["usage"][field] == individual["usage"][field]


def test_streaming_carries_the_group_index(client: OpenAI) -> None:
    expected = _batch(client, "demo-gguf", [SYSTEM, *QUESTIONS], "parallel", max_tokens=8)
    stream = client.chat.completions.create(
        model="demo-gguf",
        messages=[SYSTEM, *QUESTIONS],  # type: ignore[list-item]
        max_tokens=8,
        temperature=0,
        stream=True,
        extra_body={"processing_mode": "parallel"},
    )
    texts: dict[int, str] = {}
    finished: set[int] = set()
    chunks = list(stream)
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished.add(choice.index)
    assert finished == {0, 1, 2, 3}
    assert [texts[i] for i in range(4)] == [c["choices"][0]["message"]["content"] for c in expected["completions"]]
    final = chunks[-1].model_dump()
    assert final["choices"] == [] and final["batch_info"]["successful"] == 4
    assert final["usage"]["completion_tokens"] == expected["usage"]["completion_tokens"]


def test_streaming_reports_a_failed_group_and_goes_on(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="demo-gguf",
        messages=[QUESTIONS[0], TOO_LONG, QUESTIONS[1]],  # type: ignore[list-item]
        max_tokens=4,
        stream=True,
        extra_body={"processing_mode": "sequential"},
    )
    chunks = [c.model_dump() for c in stream]
    reasons = {ch["index"]: ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]}
    assert reasons[1] == "error" and reasons[0] in ("stop", "length") and reasons[2] in ("stop", "length")
    failed = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "error")
    assert failed["choices"][0]["error"]["code"] == "context_length_exceeded"


def test_unknown_mode_is_a_400_listing_the_valid_ones(client: OpenAI) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="demo-gguf",
            messages=QUESTIONS[:1],
            extra_body={"processing_mode": "sideways"},  # type: ignore[list-item]
        )
    message = str(caught.value)
    assert "sideways" in message
    for mode in ("conversation", "sequential", "sequential_with_context", "parallel", "parallel_with_context"):
        assert mode in message
