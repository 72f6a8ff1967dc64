"""demo-mlx next to demo-gguf on the shared server: the same prompt tokens, and reused prefixes reported."""

from __future__ import annotations

import pytest
from openai import OpenAI

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

PROMPTS = ["Compare the two backends, please", "héllo wörld 世界 🦊", "  spaces\tand\nnewlines  "]


@pytest.fixture()
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_both_backends_see_the_same_prompt_tokens(client: OpenAI, prompt: str) -> None:
    counts = {}
    for model in ("demo-gguf", "demo-mlx"):
        chat = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=1, temperature=0
        )
        text = client.completions.create(model=model, prompt=prompt + "<|im_end|>", max_tokens=1, temperature=0)
        assert chat.usage is not None and text.usage is not None
        counts[model] = (chat.usage.prompt_tokens, text.usage.prompt_tokens)
    assert counts["demo-gguf"] == counts["demo-mlx"]


def test_a_repeated_prefix_is_reported_as_cached(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "Say it twice"}]
    first = client.chat.completions.create(model="demo-mlx", messages=messages, max_tokens=4, temperature=0)  # type: ignore[arg-type]
    second = client.chat.completions.create(model="demo-mlx", messages=messages, max_tokens=4, temperature=0)  # type: ignore[arg-type]
    assert first.choices[0].message.content == second.choices[0].message.content
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens - 1
