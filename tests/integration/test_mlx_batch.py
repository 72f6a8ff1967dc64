"""demo-mlx served with continuous batching, through the official openai client: concurrent requests give what
sequential ones give, seeds hold under concurrency, a dropped stream leaves the others running, and a second
turn reports its cached tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "demo-mlx"
EOS_TOKEN_ID = "2"  # the demo tokenizer's <|im_end|>


@pytest.fixture(scope="module")
def batch_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("mlx-batch"), demo_dir / "models.yaml")
    yield server
    server.stop()


def _messages(index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"client {index} asks " + "why " * (index * 2 + 1)}]


async def _complete(client: AsyncOpenAI, index: int, **params: Any) -> tuple[str, int]:
    params.setdefault("temperature", 0)
    params.setdefault("max_tokens", 32)
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=_messages(index),  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        logit_bias={EOS_TOKEN_ID: -100},
        **params,
    )
    text, tokens = "", 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return text, tokens


def _sequential_then_concurrent(server: ServerProcess, count: int, **params: Any) -> tuple[list[str], list[str]]:
    async def run() -> tuple[list[str], list[str]]:
        client = AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120)
        async with client:
            sequential = [(await _complete(client, i, **params))[0] for i in range(count)]
            results = await asyncio.gather(*(_complete(client, i, **params) for i in range(count)))
        assert all(tokens == params.get("max_tokens", 32) for _, tokens in results)
        return sequential, [text for text, _ in results]

    return asyncio.run(run())


def test_concurrent_greedy_requests_give_the_sequential_text(batch_server: ServerProcess) -> None:
    sequential, concurrent = _sequential_then_concurrent(batch_server, 4)
    assert concurrent == sequential
    assert len(set(sequential)) == 4


def test_seeds_are_reproducible_under_concurrency(batch_server: ServerProcess) -> None:
    sequential, concurrent = _sequential_then_concurrent(batch_server, 4, temperature=1.0, top_p=0.9, seed=1234)
    assert concurrent == sequential


def test_a_dropped_stream_leaves_the_others_running(batch_server: ServerProcess) -> None:
    async def run() -> None:
        client = AsyncOpenAI(base_url=f"{batch_server.base_url}/v1", api_key="x", max_retries=0, timeout=120)
        async with client:
            expected = [(await _complete(client, i, max_tokens=200))[0] for i in (0, 2)]

            async def dropped() -> int:
                stream = await client.chat.completions.create(
                    model=MODEL,
                    messages=_messages(1),  # type: ignore[arg-type]
                    stream=True,
                    max_tokens=2000,
                    temperature=0,
                    logit_bias={EOS_TOKEN_ID: -100},
                )
                seen = 0
                async for _ in stream:
                    seen += 1
                    if seen == 5:
                        break
                await stream.close()
                return seen

            finished = await asyncio.gather(
                _complete(client, 0, max_tokens=200), dropped(), _complete(client, 2, max_tokens=200)
            )
        assert finished[1] == 5
        assert [finished[0], finished[2]] == [(expected[0], 200), (expected[1], 200)]

    asyncio.run(run())
    log = batch_server.log()
    assert "cancelled after" in log


def test_a_second_turn_reports_cached_tokens(batch_server: ServerProcess) -> None:
    client = OpenAI(base_url=f"{batch_server.base_url}/v1", api_key="x", max_retries=0, timeout=60)
    turn1: list[dict[str, str]] = [{"role": "user", "content": "a conversation that goes on"}]
    first = client.chat.completions.create(model=MODEL, messages=turn1, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    reply = first.choices[0].message.content or ""
    turn2 = [*turn1, {"role": "assistant", "content": reply}, {"role": "user", "content": "and then?"}]
    second = client.chat.completions.create(model=MODEL, messages=turn2, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert first.usage is not None and second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    assert first.usage.prompt_tokens <= details.cached_tokens < second.usage.prompt_tokens
