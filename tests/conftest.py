"""Shared fixtures: demo models generated once per session, real server processes on free ports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo models written by the real CLI command, once per test session."""
    out = tmp_path_factory.mktemp("demo-models")
    result = subprocess.run(
        [sys.executable, "-m", "heylook_llm", "demo-models", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out / "models.yaml")
    return out


def start_server(tmp_path: Path, config: Path, *extra: str, env: dict[str, str] | None = None) -> ServerProcess:
    server = ServerProcess(["--config", str(config), *extra], tmp_path / "server.log", env=env)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on the demo models with both APIs, shared by the tests that do not restart it."""
    proc = start_server(tmp_path_factory.mktemp("server"), demo_dir / "models.yaml")
    yield proc
    proc.stop()
