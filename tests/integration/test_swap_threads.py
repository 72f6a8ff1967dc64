"""GGUF<->MLX swaps reuse the workers' threads: the server's thread count stays flat (a fresh thread per load
left MLX's per-thread stream threads behind, and RSS crept with them; benchmarks/soak.py measures the RSS)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import start_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads in /proc"),
]


def test_swaps_do_not_add_threads(demo_dir: Path, tmp_path: Path) -> None:
    models = [
        {
            "id": "gguf",
            "provider": "llama_cpp",
            "config": {"model_path": str(demo_dir / "demo-gguf.gguf"), "n_ctx": 512},
        },
        {"id": "mlx", "provider": "mlx", "config": {"model_path": str(demo_dir / "demo-mlx")}},
    ]
    config = tmp_path / "models.yaml"
    config.write_text(yaml.safe_dump({"models": models, "max_loaded_models": 1}))
    server = start_server(tmp_path, config)
    try:
        tasks = Path(f"/proc/{server.proc.pid}/task")
        counts = []
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            for swap in range(16):
                model = "mlx" if swap % 2 else "gguf"
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
                assert client.post("/v1/chat/completions", json=body).status_code == 200
                if swap in (5, 15):
                    counts.append(len(list(tasks.iterdir())))
        assert counts[1] <= counts[0], counts
    finally:
        server.stop()
