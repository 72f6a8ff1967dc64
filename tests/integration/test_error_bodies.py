"""Error bodies name no absolute path and no Python exception class, in both dialects; load errors say why."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def errors_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_path_factory.mktemp("error-bodies")
    (folder / "weights").mkdir()
    shutil.copy(demo_dir / "demo-gguf.gguf", folder / "weights" / "good.gguf")
    outside = tmp_path_factory.mktemp("elsewhere") / "far-away.gguf"
    models = [
        {"id": "good", "provider": "llama_cpp", "config": {"model_path": "weights/good.gguf", "n_ctx": 512}},
        {"id": "missing", "provider": "llama_cpp", "config": {"model_path": "weights/missing.gguf"}},
        {"id": "outside", "provider": "llama_cpp", "config": {"model_path": str(outside)}},
        {
            "id": "no-projector",
            "provider": "llama_cpp",
            "config": {"model_path": "weights/good.gguf", "mmproj_path": "weights/no-such-mmproj.gguf"},
        },
        {"id": "missing-mlx", "provider": "mlx", "config": {"model_path": "weights/no-such-folder"}},
    ]
    config = folder / "models.yaml"
    config.write_text(yaml.safe_dump({"models": models}))
    server = start_server(tmp_path_factory.mktemp("error-bodies-server"), config)
    yield server, folder
    server.stop()


def _clean(text: str, *folders: Path) -> None:
    for folder in folders:
        assert str(folder) not in text and str(folder.resolve()) not in text, text
    for word in ("Error:", "Exception", "Traceback", "RuntimeError", "ValueError", "OSError"):
        assert word not in text, text


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("missing", "model_path weights/missing.gguf does not exist or is not a file"),
        ("outside", "model_path far-away.gguf does not exist or is not a file"),
        ("no-projector", "mmproj_path weights/no-such-mmproj.gguf does not exist"),
        ("missing-mlx", "weights/no-such-folder"),
    ],
)
def test_load_errors_in_both_dialects(errors_server: tuple[ServerProcess, Path], model: str, reason: str) -> None:
    server, folder = errors_server
    messages = [{"role": "user", "content": "hi"}]
    openai = httpx.post(
        f"{server.base_url}/v1/chat/completions", json={"model": model, "messages": messages}, timeout=120
    )
    assert openai.status_code in (500, 503)
    assert reason in openai.json()["error"]["message"]
    _clean(openai.text, folder, folder.parent)
    ollama = httpx.post(
        f"{server.base_url}/api/chat", json={"model": model, "messages": messages, "stream": False}, timeout=120
    )
    assert ollama.status_code == openai.status_code
    assert reason in ollama.json()["error"]
    _clean(ollama.text, folder, folder.parent)


def test_show_of_a_missing_file(errors_server: tuple[ServerProcess, Path]) -> None:
    server, folder = errors_server
    reply = httpx.post(f"{server.base_url}/api/show", json={"model": "missing"}, timeout=30)
    assert reply.status_code == 500
    assert "weights/missing.gguf does not exist" in reply.json()["error"]
    _clean(reply.text, folder)


def test_validation_and_routing_errors_are_plain(errors_server: tuple[ServerProcess, Path]) -> None:
    server, folder = errors_server
    cases = [
        httpx.post(f"{server.base_url}/v1/chat/completions", content=b"{not json", timeout=10),
        httpx.post(f"{server.base_url}/v1/chat/completions", json={"model": "good", "messages": 3}, timeout=10),
        httpx.get(f"{server.base_url}/v1/no-such-route", timeout=10),
        httpx.post(f"{server.base_url}/api/chat", json={"model": "nope", "messages": []}, timeout=10),
    ]
    for reply in cases:
        assert 400 <= reply.status_code < 500, reply.text
        assert reply.headers["content-type"].startswith("application/json")
        _clean(reply.text, folder)
