"""A GGUF model and an MLX model share one slot: both answer, each load unloads the other, and unloading an MLX
model gives its memory back to the system."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai import OpenAI

from heylook_llm.demo import DEMO_MLX_DIR, ModelShape, train_tokenizer, write_random_mlx_model
from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "hi"}]


def _client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


def _ask(client: OpenAI, model: str) -> str:
    result = client.chat.completions.create(model=model, messages=HI, max_tokens=6, temperature=0)  # type: ignore[arg-type]
    assert result.model == model
    assert result.usage is not None and result.usage.completion_tokens == 6
    return result.choices[0].message.content or ""


def test_gguf_and_mlx_models_alternate_in_one_slot(demo_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""
max_loaded_models: 1
models:
  - id: gguf
    provider: llama_cpp
    config: {{model_path: {demo_dir / "demo-gguf.gguf"}, n_ctx: 512}}
  - id: mlx
    provider: mlx
    config: {{model_path: {demo_dir / DEMO_MLX_DIR}}}
"""
    )
    server = start_server(tmp_path, config)
    try:
        client = _client(server)
        answers = [_ask(client, model) for model in ["gguf", "mlx", "gguf", "mlx"]]
        # Greedy: each model gives its answer again after being unloaded and loaded back.
        assert answers[0] == answers[2] and answers[1] == answers[3]
        log = server.log()
        assert log.count(": loading model 'gguf'") == 2 and log.count(": loading model 'mlx'") == 2
        assert log.count(": unloading model 'gguf'") == 2 and log.count(": unloading model 'mlx'") == 1
    finally:
        server.stop()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_unloading_an_mlx_model_returns_its_memory(demo_dir: Path, tmp_path: Path) -> None:
    big = tmp_path / "big-mlx"
    shape = ModelShape(hidden=512, layers=4, heads=8, kv_heads=4, ffn=1536)
    write_random_mlx_model(big, shape, train_tokenizer(shape.vocab), seed=5)
    size = (big / "model.safetensors").stat().st_size
    assert size > 40 * 2**20
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""
max_loaded_models: 1
models:
  - id: small-gguf
    provider: llama_cpp
    config: {{model_path: {demo_dir / "demo-gguf.gguf"}, n_ctx: 512}}
  - id: big-mlx
    provider: mlx
    config: {{model_path: {big}}}
"""
    )
    server = start_server(tmp_path, config)
    try:
        client = _client(server)
        pid = server.proc.pid
        # One cycle first: importing mlx-lm and its model code stays resident, as any import does.
        _ask(client, "big-mlx")
        _ask(client, "small-gguf")
        before = _rss_bytes(pid)
        _ask(client, "big-mlx")
        loaded = _rss_bytes(pid)
        _ask(client, "small-gguf")  # evicts big-mlx: max_loaded_models is 1
        after = _rss_bytes(pid)
        assert "unloading model 'big-mlx'" in server.log()
        assert loaded - before > 0.8 * size, (before, loaded, size)
        assert after - before < 0.15 * size, (before, loaded, after, size)
    finally:
        server.stop()
