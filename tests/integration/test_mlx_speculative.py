"""Speculative decoding through mlx-lm: greedy output is the same with and without the draft model, and the
server log shows that the draft model's tokens were accepted."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from heylook_llm.demo import DEMO_MLX_DIR, DEMO_MLX_DRAFT_DIR
from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

DRAFTED = re.compile(r"request (\S+) on 'speculative': (\d+) of (\d+) generated tokens came from the draft model")
PROMPTS = ["Tell me about the router", "hello", "Write a long story about a quick brown fox and a lazy dog"]


@pytest.fixture(scope="module")
def spec_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("speculative")
    config = folder / "models.yaml"
    config.write_text(
        f"""
max_loaded_models: 2
models:
  - id: plain
    provider: mlx
    config: {{model_path: {demo_dir / DEMO_MLX_DIR}}}
  - id: speculative
    provider: mlx
    config:
      model_path: {demo_dir / DEMO_MLX_DIR}
      draft_model_path: {demo_dir / DEMO_MLX_DRAFT_DIR}
      num_draft_tokens: 3
"""
    )
    server = start_server(folder, config)
    yield server
    server.stop()


@pytest.fixture()
def client(spec_server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{spec_server.base_url}/v1", api_key="x", max_retries=0, timeout=60)


def _chat(client: OpenAI, model: str, prompt: str, max_tokens: int, **extra: object) -> tuple[str, str, int]:
    result = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        **extra,  # type: ignore[arg-type]
    )
    assert result.usage is not None
    return result.id, result.choices[0].message.content or "", result.usage.completion_tokens


@pytest.mark.parametrize("max_tokens", [1, 7, 64, 150])
def test_greedy_output_is_identical_and_the_draft_model_is_used(
    client: OpenAI, spec_server: ServerProcess, max_tokens: int
) -> None:
    for prompt in PROMPTS:
        _, plain, plain_count = _chat(client, "plain", prompt, max_tokens)
        request_id, drafted, drafted_count = _chat(client, "speculative", prompt, max_tokens)
        assert drafted == plain
        assert drafted_count == plain_count == max_tokens
    found = [m for m in DRAFTED.finditer(spec_server.log()) if m.group(3) == str(max_tokens)]
    assert found, spec_server.log()
    # Each logged request produced exactly max_tokens tokens, and over the prompts the draft model's were accepted.
    assert sum(int(m.group(2)) for m in found) > 0
    assert all(int(m.group(2)) <= int(m.group(3)) for m in found)
    assert any(m.group(1) == request_id for m in found)


def test_completions_streaming_and_stop_strings_with_a_draft_model(client: OpenAI) -> None:
    plain = client.completions.create(model="plain", prompt="The fox", max_tokens=40, temperature=0)
    drafted = client.completions.create(model="speculative", prompt="The fox", max_tokens=40, temperature=0)
    full = plain.choices[0].text
    assert drafted.choices[0].text == full
    stream = client.chat.completions.create(
        model="speculative", messages=[{"role": "user", "content": "hello"}], max_tokens=30, temperature=0, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == _chat(client, "plain", "hello", 30)[1]
    stop = full[12:16]
    cut = client.completions.create(model="speculative", prompt="The fox", max_tokens=40, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_seeded_sampling_with_a_draft_model_is_reproducible(client: OpenAI) -> None:
    def sample(seed: int) -> str:
        result = client.chat.completions.create(
            model="speculative",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=32,
            temperature=0.9,
            seed=seed,
        )
        return result.choices[0].message.content or ""

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)
