"""The OpenAI dialect driven by the official `openai` client against a real server and real tiny models."""

from __future__ import annotations

import pytest
from openai import OpenAI
from tokenizers import Tokenizer

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Say hello to the tests"}]


def _greedy(client: OpenAI, model: str, max_tokens: int = 24, **extra: object) -> str:
    result = client.chat.completions.create(
        model=model,
        messages=HELLO,
        max_tokens=max_tokens,
        temperature=0,
        **extra,  # type: ignore[arg-type]
    )
    return result.choices[0].message.content or ""


def test_list_and_get_models(client: OpenAI) -> None:
    models = client.models.list().data
    ids = [m.id for m in models]
    assert "demo-gguf" in ids and "demo-embed-gguf" in ids
    for m in models:
        assert m.object == "model" and m.owned_by and isinstance(m.created, int)
    one = client.models.retrieve("demo-gguf")
    assert one.id == "demo-gguf"


def test_chat_completion_shape_and_usage(client: OpenAI, chat_model: str) -> None:
    result = client.chat.completions.create(model=chat_model, messages=HELLO, max_tokens=8, temperature=0)
    assert result.id.startswith("chatcmpl-")
    assert result.object == "chat.completion"
    assert result.model == chat_model
    choice = result.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason == "length"
    assert result.usage is not None
    assert result.usage.completion_tokens == 8
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + 8


def test_max_tokens_gives_length_with_exactly_that_many_tokens(client: OpenAI, chat_model: str) -> None:
    for max_tokens in (1, 5, 17):
        result = client.chat.completions.create(model=chat_model, messages=HELLO, max_tokens=max_tokens, temperature=0)
        assert result.choices[0].finish_reason == "length"
        assert result.usage is not None and result.usage.completion_tokens == max_tokens
    newer = client.chat.completions.create(model=chat_model, messages=HELLO, max_completion_tokens=3, temperature=0)
    assert newer.usage is not None and newer.usage.completion_tokens == 3


def test_streaming_with_usage_matches_the_non_streaming_text(client: OpenAI, chat_model: str) -> None:
    expected = _greedy(client, chat_model, max_tokens=12)
    stream = client.chat.completions.create(
        model=chat_model,
        messages=HELLO,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == expected
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    assert len({c.id for c in chunks}) == 1


def test_stream_without_usage_option_has_no_usage_chunk(client: OpenAI, chat_model: str) -> None:
    chunks = list(
        client.chat.completions.create(model=chat_model, messages=HELLO, max_tokens=3, temperature=0, stream=True)
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_greedy_is_reproducible_and_seeded_sampling_too(client: OpenAI, chat_model: str) -> None:
    assert _greedy(client, chat_model) == _greedy(client, chat_model)

    def sampled(seed: int) -> str:
        result = client.chat.completions.create(
            model=chat_model, messages=HELLO, max_tokens=24, temperature=1.0, top_p=1.0, seed=seed
        )
        return result.choices[0].message.content or ""

    assert sampled(1234) == sampled(1234)
    assert sampled(1234) != sampled(99), "different seeds gave the same 24 sampled tokens"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_cuts_output_before_it(client: OpenAI, chat_model: str, stream: bool) -> None:
    full = _greedy(client, chat_model, max_tokens=40)
    stop = full[12:15]
    assert len(stop) == 3
    expected = full[: full.find(stop)]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=chat_model, messages=HELLO, max_tokens=40, temperature=0, stop=[stop], stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reason = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert reason == ["stop"]
    else:
        result = client.chat.completions.create(
            model=chat_model, messages=HELLO, max_tokens=40, temperature=0, stop=stop
        )
        text = result.choices[0].message.content or ""
        assert result.choices[0].finish_reason == "stop"
    assert text == expected
    assert stop not in text


def test_logit_bias_forces_and_bans_tokens(client: OpenAI, chat_model: str, demo_tokenizer: Tokenizer) -> None:
    forced = demo_tokenizer.token_to_id("Ġmodel")
    assert forced is not None
    assert _greedy(client, chat_model, max_tokens=6, logit_bias={str(forced): 100}) == " model" * 6
    free = _greedy(client, chat_model, max_tokens=6)
    first = demo_tokenizer.encode(free).ids[0]
    banned = _greedy(client, chat_model, max_tokens=6, logit_bias={str(first): -100})
    assert not banned.startswith(demo_tokenizer.decode([first]))


def test_completions_with_a_prompt_and_a_list_of_prompts(client: OpenAI, chat_model: str) -> None:
    one = client.completions.create(model=chat_model, prompt="Once upon a time", max_tokens=6, temperature=0)
    assert one.object == "text_completion"
    assert len(one.choices) == 1 and one.choices[0].finish_reason == "length"
    assert one.usage is not None and one.usage.completion_tokens == 6
    many = client.completions.create(
        model=chat_model, prompt=["Once upon a time", "The fox"], max_tokens=4, temperature=0
    )
    assert [c.index for c in many.choices] == [0, 1]
    assert many.choices[0].text == one.choices[0].text[: len(many.choices[0].text)]
    assert many.usage is not None and many.usage.completion_tokens == 8
    streamed = client.completions.create(
        model=chat_model,
        prompt="Once upon a time",
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == one.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
