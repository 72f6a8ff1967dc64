"""Broken model files next to good ones: listing keeps working, broken ones are left out of /api/tags (as
docs/ollama.md says) and say what is wrong with them, with paths relative to the models folder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import start_server
from tests.support.bad_models import write_garbage, write_huge_count_gguf, write_nested_gguf, write_truncated_copy
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

BROKEN = ("nested", "truncated", "garbage", "huge-count", "bad-mlx")


@pytest.fixture(scope="module")
def models_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_path_factory.mktemp("model-files")
    shutil.copy(demo_dir / "demo-gguf.gguf", folder / "good.gguf")
    shutil.copytree(demo_dir / "demo-mlx", folder / "good-mlx")
    write_nested_gguf(folder / "nested.gguf")
    write_truncated_copy(folder / "good.gguf", folder / "truncated.gguf")
    write_garbage(folder / "garbage.gguf")
    write_huge_count_gguf(folder / "huge.gguf")
    shutil.copytree(demo_dir / "demo-mlx", folder / "bad-mlx")
    (folder / "bad-mlx" / "config.json").write_text("[" * 100_000 + "]" * 100_000)

    def gguf(model_id: str, file: str) -> dict[str, object]:
        return {"id": model_id, "provider": "llama_cpp", "config": {"model_path": file, "n_ctx": 512}}

    models = [
        gguf("good", "good.gguf"),
        {"id": "good-mlx", "provider": "mlx", "config": {"model_path": "good-mlx"}},
        gguf("nested", "nested.gguf"),
        gguf("truncated", "truncated.gguf"),
        gguf("garbage", "garbage.gguf"),
        gguf("huge-count", "huge.gguf"),
        {"id": "bad-mlx", "provider": "mlx", "config": {"model_path": "bad-mlx"}},
    ]
    config = folder / "models.yaml"
    config.write_text(yaml.safe_dump({"models": models, "max_loaded_models": 1}))
    server = start_server(tmp_path_factory.mktemp("model-files-server"), config)
    yield server, folder
    server.stop()


def _no_local_path(body: str, folder: Path) -> None:
    assert str(folder) not in body and str(folder.resolve()) not in body, body
    assert "Error:" not in body and "Exception" not in body, body


def test_tags_lists_the_good_models_and_leaves_the_broken_ones_out(models_server: tuple[ServerProcess, Path]) -> None:
    server, _ = models_server
    reply = httpx.get(f"{server.base_url}/api/tags", timeout=30)
    assert reply.status_code == 200
    assert sorted(m["name"] for m in reply.json()["models"]) == ["good-mlx:latest", "good:latest"]
    assert "/api/tags leaves out" in server.log()
    # Every model is still named in /v1/models (it says nothing about files).
    ids = {m["id"] for m in httpx.get(f"{server.base_url}/v1/models", timeout=10).json()["data"]}
    assert set(BROKEN) <= ids


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("nested", "nested.gguf is not a readable GGUF file: arrays nest more than 4 deep"),
        ("truncated", "truncated.gguf is truncated: its tensors need"),
        ("garbage", "garbage.gguf is not a readable GGUF file: no GGUF magic number"),
        ("huge-count", "huge.gguf is not a readable GGUF file: the file says it holds"),
        ("bad-mlx", "bad-mlx cannot be read"),
    ],
)
def test_show_says_what_is_wrong_with_a_broken_file(
    models_server: tuple[ServerProcess, Path], model: str, reason: str
) -> None:
    server, folder = models_server
    reply = httpx.post(f"{server.base_url}/api/show", json={"model": model}, timeout=30)
    assert reply.status_code == 500
    assert reason in reply.json()["error"]
    _no_local_path(reply.text, folder)
    assert httpx.post(f"{server.base_url}/api/show", json={"model": "good"}, timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("nested", "llama.cpp could not load nested.gguf: key 'general.nested' has invalid GGUF type 9"),
        ("truncated", "llama.cpp could not load truncated.gguf: tensor 'blk."),
        ("garbage", "llama.cpp could not load garbage.gguf:"),
    ],
)
def test_a_load_error_gives_llama_cpps_reason(
    models_server: tuple[ServerProcess, Path], model: str, reason: str
) -> None:
    server, folder = models_server
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert error["code"] == "model_load_failed"
    assert reason in error["message"], error["message"]
    _no_local_path(reply.text, folder)
    # The good model still answers afterwards.
    body["model"] = "good"
    assert httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60).status_code == 200


def test_a_broken_mlx_folder_says_why_without_paths(models_server: tuple[ServerProcess, Path]) -> None:
    server, folder = models_server
    body = {"model": "bad-mlx", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 500
    assert reply.json()["error"]["message"].startswith("model 'bad-mlx' failed to load: ")
    _no_local_path(reply.text, folder)
