"""/v1/capabilities reports what the running configuration offers, and changes with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


def _capabilities(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{server.base_url}/v1/capabilities", timeout=60)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_default_server_capabilities(server: ServerProcess) -> None:
    caps = _capabilities(server)
    assert caps["apis"] == {"openai": True, "ollama": True}
    assert caps["backends"]["llama_cpp"]["importable"] is True
    assert caps["backends"]["llama_cpp"]["packages"]["llama-cpp-python"]
    models = {m["id"]: m for m in caps["models"]}
    assert models["demo-gguf"]["features"]["constrained_output"] is True
    assert models["demo-gguf"]["features"]["chat"] is True
    assert models["demo-gguf"]["context_length"] == 2048
    assert models["demo-mlx"]["features"]["constrained_output"] is True
    assert models["demo-embed-gguf"]["features"]["embedding"] is True
    assert models["demo-embed-gguf"]["features"]["chat"] is False
    assert caps["max_loaded_models"] == 2
    assert caps["limits"]["max_queued_requests_per_model"] == 64
    assert caps["speedups"]["orjson"]["installed"] is True
    assert "parallel_with_context" in caps["batch_processing_modes"]


def test_capabilities_follow_the_configuration(demo_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""\
max_loaded_models: 1
models:
  - id: only-gguf
    provider: llama_cpp
    config:
      model_path: {demo_dir / "demo-gguf.gguf"}
      n_ctx: 512
  - id: seeing-mlx
    provider: mlx
    config:
      model_path: {demo_dir / "demo-mlx"}
      vision: true
""",
        encoding="utf-8",
    )
    server = start_server(tmp_path, config, "--api", "openai")
    try:
        caps = _capabilities(server)
        assert caps["apis"] == {"openai": True, "ollama": False}
        assert caps["max_loaded_models"] == 1
        models = {m["id"]: m for m in caps["models"]}
        assert set(models) == {"only-gguf", "seeing-mlx"}
        assert models["seeing-mlx"]["features"]["vision"] is True
        assert models["seeing-mlx"]["backend"] == "mlx:vision"
        assert models["only-gguf"]["features"]["vision"] is False
        assert models["only-gguf"]["context_length"] == 512
        assert models["only-gguf"]["loaded"] is False
        # Loading the model makes the load-time answers (fill-in-the-middle, slots) known.
        httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": "only-gguf", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
            timeout=60,
        ).raise_for_status()
        loaded = {m["id"]: m for m in _capabilities(server)["models"]}["only-gguf"]
        assert loaded["loaded"] is True and loaded["max_parallel"] == 4
        assert loaded["features"]["fill_in_middle"] is False
    finally:
        server.stop()
