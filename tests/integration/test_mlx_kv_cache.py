"""Rotating and quantized KV caches through the server: requests longer than max_kv_size still complete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from heylook_llm.demo import DEMO_MLX_DIR, ModelShape, train_tokenizer, write_random_mlx_model
from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

MAX_KV_SIZE = 48
LONG_PROMPT = "the quick brown fox jumps over the lazy dog " * 8  # about 70 tokens, more than MAX_KV_SIZE alone


@pytest.fixture(scope="module")
def cache_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("kv-cache")
    # MLX quantizes in groups of at least 32 values along a head; the demo model's heads are 16 wide.
    wide_heads = folder / "wide-heads"
    write_random_mlx_model(wide_heads, ModelShape(hidden=64, heads=2, kv_heads=1), train_tokenizer(512), seed=3)
    config = folder / "models.yaml"
    config.write_text(
        f"""
max_loaded_models: 3
models:
  - id: standard
    provider: mlx
    config: {{model_path: {demo_dir / DEMO_MLX_DIR}}}
  - id: rotating
    provider: mlx
    config: {{model_path: {demo_dir / DEMO_MLX_DIR}, cache_type: rotating, max_kv_size: {MAX_KV_SIZE}}}
  - id: quantized
    provider: mlx
    config: {{model_path: {wide_heads}, cache_type: quantized, kv_bits: 4, kv_group_size: 32}}
  - id: quantized-later
    provider: mlx
    config:
      model_path: {wide_heads}
      cache_type: quantized
      kv_bits: 8
      kv_group_size: 32
      quantized_kv_start: 64
"""
    )
    server = start_server(folder, config)
    yield server
    server.stop()


@pytest.fixture()
def client(cache_server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{cache_server.base_url}/v1", api_key="x", max_retries=0, timeout=120)


@pytest.mark.parametrize("model", ["rotating", "quantized", "quantized-later"])
def test_a_request_longer_than_max_kv_size_completes(client: OpenAI, model: str) -> None:
    texts = []
    for _ in range(2):
        result = client.completions.create(model=model, prompt=LONG_PROMPT, max_tokens=100, temperature=0)
        assert result.usage is not None
        assert result.usage.prompt_tokens > MAX_KV_SIZE
        assert result.usage.prompt_tokens + result.usage.completion_tokens > 2 * MAX_KV_SIZE
        assert result.choices[0].finish_reason == "length" and result.usage.completion_tokens == 100
        texts.append(result.choices[0].text)
    assert texts[0] == texts[1] and texts[0]


def test_streaming_chat_past_max_kv_size(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="rotating",
        messages=[{"role": "user", "content": LONG_PROMPT}],
        max_tokens=120,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 120
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_rotating_cache_matches_the_standard_one_until_it_wraps(client: OpenAI) -> None:
    # A short prompt and few tokens stay below max_kv_size, so nothing is dropped yet.
    same = [
        client.completions.create(model=m, prompt="hello", max_tokens=MAX_KV_SIZE - 8, temperature=0).choices[0].text
        for m in ("standard", "rotating")
    ]
    assert same[0] == same[1]
