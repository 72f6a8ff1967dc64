"""Anthropic's `stop_reason: "stop_sequence"` and `stop_sequence` through the official `anthropic` SDK against a real
server, streamed and not, on llama.cpp, MLX (continuous batching) and mlx-vlm (a vision model asked in text)."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

TEXT_MODELS = ["demo-gguf", "demo-mlx", "demo-vision-mlx"]
GREEDY = {"temperature": 0}
ASK: list[Any] = [{"role": "user", "content": "Tell me a story."}]
MAX_TOKENS = 16
ABSENT = "\u2603never-in-the-output\u2603"


@pytest.fixture()
def client(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=120)


def _text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _stop_in(text: str) -> str:
    """A stop string the greedy output contains: three characters from its middle, not only spaces."""
    for start in range(len(text) // 2, len(text) - 2):
        candidate = text[start : start + 3]
        if candidate.strip():
            return candidate
    raise AssertionError(f"output too short to pick a stop string from: {text!r}")


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_a_matched_stop_string_is_reported_streamed_and_not(client: anthropic.Anthropic, model: str) -> None:
    plain = client.messages.create(model=model, max_tokens=MAX_TOKENS, messages=ASK, extra_body=GREEDY)
    # Random weights run to the token limit; that is "max_tokens", with no stop string.
    assert plain.stop_reason == "max_tokens" and plain.stop_sequence is None
    assert plain.usage.output_tokens == MAX_TOKENS
    full = _text(plain)
    stop = _stop_in(full)
    expected = full[: full.index(stop)]

    stops = [ABSENT, stop]
    cut = client.messages.create(
        model=model, max_tokens=MAX_TOKENS, messages=ASK, stop_sequences=stops, extra_body=GREEDY
    )
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert _text(cut) == expected
    assert cut.usage.output_tokens < MAX_TOKENS

    with client.messages.stream(
        model=model, max_tokens=MAX_TOKENS, messages=ASK, stop_sequences=stops, extra_body=GREEDY
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "message_delta"]
        final = stream.get_final_message()
    assert [(d.stop_reason, d.stop_sequence) for d in deltas] == [("stop_sequence", stop)]
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop
    assert _text(final) == expected


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_a_stop_string_that_never_matches_leaves_max_tokens(client: anthropic.Anthropic, model: str) -> None:
    body: dict[str, Any] = {"model": model, "max_tokens": MAX_TOKENS, "messages": ASK, "extra_body": GREEDY}
    message = client.messages.create(**body, stop_sequences=[ABSENT])
    assert message.stop_reason == "max_tokens" and message.stop_sequence is None
    with client.messages.stream(**body, stop_sequences=[ABSENT]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.stop_sequence is None
