"""The stream interval over real HTTP: a fast model's tokens reach the openai and ollama clients merged into
fewer chunks, with the same text and token counts as one non-streamed answer; `--stream-interval-ms 0` streams
the same text in more chunks."""

from __future__ import annotations

from pathlib import Path

import pytest
from ollama import Client
from openai import OpenAI

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

TOKENS = 400
MESSAGES = [{"role": "user", "content": "Tell the tests a long story"}]


def _stream(client: OpenAI) -> tuple[list[str], int]:
    pieces: list[str] = []
    completion_tokens = -1
    for chunk in client.chat.completions.create(
        model="demo-gguf",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            completion_tokens = chunk.usage.completion_tokens
    return pieces, completion_tokens


def _whole(client: OpenAI) -> str:
    reply = client.chat.completions.create(
        model="demo-gguf",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=TOKENS,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def test_openai_stream_of_a_fast_model_comes_in_merged_chunks(client: OpenAI) -> None:
    pieces, completion_tokens = _stream(client)
    assert completion_tokens == TOKENS
    assert "".join(pieces) == _whole(client)
    # The demo model makes thousands of tokens a second: at most one chunk per 5 ms leaves far fewer chunks.
    assert len(pieces) < TOKENS / 2, len(pieces)


def test_ollama_stream_of_a_fast_model_comes_in_merged_lines(server: ServerProcess) -> None:
    ollama = Client(host=server.base_url, timeout=120)
    options = {"num_predict": TOKENS, "temperature": 0}
    lines = list(ollama.chat(model="demo-gguf", messages=MESSAGES, options=options, stream=True))
    assert lines[-1].done and lines[-1].eval_count == TOKENS
    text = "".join(line.message.content or "" for line in lines)
    assert text == ollama.chat(model="demo-gguf", messages=MESSAGES, options=options).message.content
    assert len(lines) < TOKENS / 2, len(lines)


def test_interval_zero_streams_the_same_text_in_more_chunks(demo_dir: Path, tmp_path: Path, client: OpenAI) -> None:
    merged, _ = _stream(client)
    unmerged_server = start_server(tmp_path, demo_dir / "models.yaml", "--stream-interval-ms", "0")
    try:
        unmerged = OpenAI(base_url=f"{unmerged_server.base_url}/v1", api_key="not-needed", max_retries=0, timeout=60)
        pieces, completion_tokens = _stream(unmerged)
    finally:
        unmerged_server.stop()
    assert completion_tokens == TOKENS
    assert "".join(pieces) == "".join(merged)
    assert len(pieces) > len(merged), (len(pieces), len(merged))
