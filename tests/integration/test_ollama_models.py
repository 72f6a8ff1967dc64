"""Model listing and facts through the official `ollama` client: tags, show, ps, plus /, version, HEAD, pull."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from ollama import Client, ResponseError

from heylook_llm.demo import CHATML_TEMPLATE, ModelShape
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture()
def ollama(server: ServerProcess) -> Client:
    return Client(host=server.base_url, timeout=120)


def _demo_parameters(shape: ModelShape) -> int:
    """The demo llama's parameter count, from its shape (what the GGUF header's tensors must add up to)."""
    head = shape.hidden // shape.heads
    attention = shape.hidden * head * (2 * shape.heads + 2 * shape.kv_heads)
    per_layer = attention + 3 * shape.hidden * shape.ffn + 2 * shape.hidden
    return 2 * shape.vocab * shape.hidden + shape.layers * per_layer + shape.hidden


def test_root_and_version_identify_an_ollama_server(server: ServerProcess) -> None:
    root = httpx.get(server.base_url + "/")
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert root.headers["content-type"].startswith("text/plain")
    version = httpx.get(server.base_url + "/api/version").json()["version"]
    assert [int(part) for part in version.split(".")] >= [0, 5, 0]  # structured outputs exist since 0.5
    for path in ("/", "/api/tags", "/api/version"):
        head = httpx.head(server.base_url + path)
        assert head.status_code == 200 and head.content == b"", path


def test_list_reads_details_from_the_files(ollama: Client, demo_dir: Path) -> None:
    listed = {m.model: m for m in ollama.list().models}
    assert {"demo-gguf:latest", "demo-embed-gguf:latest", "demo-mlx:latest"} <= set(listed)
    gguf = listed["demo-gguf:latest"]
    path = demo_dir / "demo-gguf.gguf"
    assert gguf.size == path.stat().st_size
    assert gguf.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert gguf.modified_at is not None
    details = gguf.details
    assert details is not None
    assert (details.format, details.family, details.quantization_level) == ("gguf", "llama", "F32")
    assert details.families == ["llama"]
    expected = _demo_parameters(ModelShape())
    assert details.parameter_size == f"{expected / 1e3:.1f}K"
    mlx = listed["demo-mlx:latest"].details
    assert mlx is not None and (mlx.format, mlx.family, mlx.parameter_size) == (
        "safetensors",
        "llama",
        details.parameter_size,
    )


def test_show_has_template_metadata_and_real_capabilities(ollama: Client) -> None:
    chat = ollama.show("demo-gguf")
    assert chat.template == CHATML_TEMPLATE
    # Tools through the generic format (the demo's ChatML template has no tool support of its own).
    assert chat.capabilities == ["completion", "tools"]
    assert chat.modelinfo is not None
    assert chat.modelinfo["general.architecture"] == "llama"
    assert chat.modelinfo["llama.context_length"] == ModelShape().context
    assert chat.modelinfo["general.parameter_count"] == _demo_parameters(ModelShape())
    assert chat.modelinfo["tokenizer.ggml.tokens"] is None  # long arrays only with verbose
    assert chat.parameters is not None and "num_ctx" in chat.parameters
    assert chat.modelfile is not None and "FROM " in chat.modelfile
    assert chat.details is not None and chat.details.format == "gguf"
    assert ollama.show("demo-embed-gguf").capabilities == ["embedding"]
    mlx = ollama.show("demo-mlx:latest")
    assert mlx.capabilities == ["completion", "tools"] and mlx.modelinfo is not None
    assert mlx.modelinfo["llama.block_count"] == ModelShape().layers


def test_show_verbose_includes_the_token_list(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/api/show", json={"name": "demo-gguf", "verbose": True}, timeout=60)
    assert response.status_code == 200
    tokens = response.json()["model_info"]["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and len(tokens) == ModelShape().vocab


def test_ps_lists_loaded_models_with_expiry(ollama: Client) -> None:
    ollama.generate(model="demo-gguf", prompt="hi", options={"num_predict": 2})
    running = {m.model: m for m in ollama.ps().models}
    model = running["demo-gguf:latest"]
    assert model.name == "demo-gguf:latest"
    assert model.size is not None and model.size > 0 and model.size_vram in (0, model.size)
    listed = {m.model: m for m in ollama.list().models}
    assert model.digest == listed["demo-gguf:latest"].digest
    assert model.details == listed["demo-gguf:latest"].details
    assert model.context_length == 2048
    # The server default keep-alive is 5 minutes, counted from the end of the last request.
    assert model.expires_at is not None
    remaining = (model.expires_at - datetime.now(UTC)).total_seconds()
    assert 200 < remaining <= 300


def test_unknown_model_show_is_404(ollama: Client) -> None:
    with pytest.raises(ResponseError) as err:
        ollama.show("nothing-here")
    assert err.value.status_code == 404


def test_pull_answers_success_for_served_models_and_how_to_add_others(ollama: Client) -> None:
    assert ollama.pull("demo-gguf").status == "success"
    assert [p.status for p in ollama.pull("demo-gguf:latest", stream=True)] == ["success"]
    with pytest.raises(ResponseError) as err:
        ollama.pull("llama3.2")
    assert err.value.status_code == 404 and "heylookllm import" in err.value.error


def test_push_and_blob_upload_are_not_implemented(ollama: Client, server: ServerProcess, tmp_path: Path) -> None:
    # 400 as for any feature this server does not implement: a 5xx would say the server broke.
    with pytest.raises(ResponseError) as err:
        ollama.push("demo-gguf")
    assert err.value.status_code == 400
    blob = tmp_path / "weights.bin"
    blob.write_bytes(b"x")
    with pytest.raises(ResponseError) as upload:
        ollama.create_blob(blob)
    assert upload.value.status_code == 400 and "heylookllm import" in upload.value.error
    assert httpx.head(f"{server.base_url}/api/blobs/sha256:00").status_code == 404
