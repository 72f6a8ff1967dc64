"""The `heylookllm` command as a user runs it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heylook_llm", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@pytest.mark.parametrize("command", [[], ["serve"], ["demo-models"]])
def test_help_on_every_command(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.returncode == 0
    assert "usage: heylookllm" in result.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "heylookllm"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "demo-models" in result.stdout


def test_bad_flag_exits_non_zero() -> None:
    result = _run("--no-such-flag")
    assert result.returncode != 0
    assert "--no-such-flag" in result.stderr


def test_broken_models_yaml_names_file_model_and_field(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  - {id: typo, provider: llama_cpp, config: {model_path: x.gguf, n_cxt: 10}}\n")
    result = _run("--config", str(config), "--port", "1")
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "model 'typo'" in result.stderr and "config.n_cxt" in result.stderr and "n_ctx" in result.stderr


def test_unknown_start_up_model_exits_non_zero(demo_dir: Path) -> None:
    result = _run("--config", str(demo_dir / "models.yaml"), "--model-id", "ghost", "--port", "1")
    assert result.returncode == 2 and "ghost" in result.stderr


def test_demo_models_are_deterministic(tmp_path: Path, demo_dir: Path) -> None:
    again = _run("demo-models", "--output", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}

    assert digests(tmp_path / "again") == digests(demo_dir)
    assert {"models.yaml", "demo-gguf.gguf", "demo-embed-gguf.gguf"} <= set(digests(demo_dir))


def test_first_run_without_models_yaml_serves_the_demo_models(tmp_path: Path) -> None:
    env = {
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HOME": str(tmp_path),
    }
    server = ServerProcess([], tmp_path / "server.log", env=env, cwd=tmp_path)
    try:
        server.wait_ready()
        ids = [m["id"] for m in httpx.get(f"{server.base_url}/v1/models").json()["data"]]
        assert "demo-gguf" in ids and "demo-embed-gguf" in ids
        log = server.log()
        assert "no models.yaml found" in log and str(tmp_path / "cache" / "heylookllm" / "demo-models") in log
        assert (tmp_path / "cache" / "heylookllm" / "demo-models" / "demo-gguf.gguf").is_file()
        reply = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": "demo-gguf", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            timeout=30,
        )
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] <= 3
    finally:
        server.stop()
