"""Where MLX cannot be imported, GGUF models still serve and an MLX model's requests get a clear 503."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server

pytestmark = pytest.mark.integration


def test_without_mlx_gguf_serves_and_mlx_requests_are_503(demo_dir: Path, tmp_path: Path) -> None:
    # A package named mlx that fails to import, first on the path: what a machine without MLX looks like.
    shadow = tmp_path / "no-mlx"
    (shadow / "mlx").mkdir(parents=True)
    (shadow / "mlx" / "__init__.py").write_text('raise ImportError("MLX is not installed on this machine")\n')
    path = os.pathsep.join([str(shadow), *filter(None, [os.environ.get("PYTHONPATH")])])
    server = start_server(tmp_path, demo_dir / "models.yaml", env={"PYTHONPATH": path})
    try:
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            ok = http.post("/v1/chat/completions", json={"model": "demo-gguf", **chat})
            assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
            refused = http.post("/v1/chat/completions", json={"model": "demo-mlx", **chat})
            assert refused.status_code == 503
            message = refused.json()["error"]["message"]
            assert "demo-mlx" in message and "cannot be imported" in message
            assert "MLX is not installed on this machine" in message
            listed = http.get("/v1/models").json()["data"]
            assert "demo-mlx" in [m["id"] for m in listed]
            again = http.post("/v1/chat/completions", json={"model": "demo-gguf", **chat})
            assert again.status_code == 200
    finally:
        server.stop()
