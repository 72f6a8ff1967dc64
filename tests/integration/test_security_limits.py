"""Limits on real server processes with the real demo models: body size, prompt length before tokenizing,
counts, keep_alive and num_ctx ranges, model names, and template bombs; each a 4xx naming the limit, and the
server keeps serving afterwards.

The server runs on its own models.yaml (pointing at the shared demo files): some tests try to change it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def limited(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("limited-server")
    source = yaml.safe_load((demo_dir / "models.yaml").read_text())
    for model in source["models"]:  # absolute paths, since this models.yaml lives elsewhere
        for key in ("model_path", "mmproj_path", "draft_model_path"):
            if key in model["config"]:
                model["config"][key] = str((demo_dir / model["config"][key]).resolve())
    config = folder / "models.yaml"
    config.write_text(yaml.safe_dump(source))
    proc = start_server(folder, config, "--max-body-mb", "1", "--max-messages", "50")
    yield proc
    proc.stop()


def _post(server: ServerProcess, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", timeout=120, **kwargs)  # type: ignore[arg-type]


def _alive(server: ServerProcess) -> None:
    reply = _post(server, "/api/chat", json={"model": "demo-gguf", "messages": HELLO, "stream": False})
    assert reply.status_code == 200 and reply.json()["done"]


def _models_on_disk(server: ServerProcess) -> bytes:
    return (server.log_path.parent / "models.yaml").read_bytes()


# --- body size ----------------------------------------------------------------------------------------------------
def test_bodies_over_the_limit_are_413_in_each_dialects_shape(limited: ServerProcess) -> None:
    big = {"model": "demo-gguf", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    openai_reply = _post(limited, "/v1/chat/completions", json=big)
    assert openai_reply.status_code == 413 and openai_reply.json()["error"]["code"] == "request_too_large"
    assert "--max-body-mb" in openai_reply.json()["error"]["message"]
    ollama_reply = _post(limited, "/api/chat", json=big)
    assert ollama_reply.status_code == 413 and "--max-body-mb" in ollama_reply.json()["error"]
    chunks = (b"x" * 65536 for _ in range(40))  # no Content-Length: counted as it arrives
    chunked = _post(limited, "/api/generate", content=chunks, headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    upload = _post(
        limited,
        "/v1/chat/completions/multipart",
        data={"model": "demo-vision-gguf", "messages": '[{"role": "user", "content": "hi"}]'},
        files={"images": ("big.png", b"\x89PNG" + b"0" * 2_000_000, "image/png")},
    )
    assert upload.status_code == 413
    _alive(limited)


# --- prompt length before tokenizing --------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["demo-gguf", "demo-mlx"])
def test_a_prompt_far_longer_than_the_context_is_refused_unread(limited: ServerProcess, model: str) -> None:
    # demo models have 2,048 tokens of context: at most 32 KB of text; this is 900 KB (under the body limit).
    long = "word " * 180_000
    started = time.perf_counter()
    chat = _post(
        limited, "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": long}]}
    )
    raw = _post(limited, "/api/generate", json={"model": model, "prompt": long, "raw": True, "stream": False})
    completion = _post(limited, "/v1/completions", json={"model": model, "prompt": long})
    assert time.perf_counter() - started < 30
    error = chat.json()["error"]
    assert chat.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "2048 tokens" in error["message"] and "--prompt-bytes-per-token" in error["message"]
    assert raw.status_code == 400 and "bytes" in raw.json()["error"]
    assert completion.status_code == 400 and completion.json()["error"]["code"] == "context_length_exceeded"
    _alive(limited)


def test_embeddings_truncate_long_text_without_tokenizing_all_of_it(limited: ServerProcess) -> None:
    long = "word " * 150_000  # 750 KB for a 512-token embedding model
    truncated = _post(limited, "/api/embed", json={"model": "demo-embed-gguf", "input": long})
    assert truncated.status_code == 200 and truncated.json()["prompt_eval_count"] <= 512
    refused = _post(limited, "/api/embed", json={"model": "demo-embed-gguf", "input": long, "truncate": False})
    assert refused.status_code == 400


# --- counts, ranges, names -----------------------------------------------------------------------------------------
def test_counts_and_ranges_are_4xx_naming_the_field(limited: ServerProcess) -> None:
    many = _post(limited, "/api/chat", json={"model": "demo-gguf", "messages": HELLO * 51})
    assert many.status_code == 413 and "--max-messages" in many.json()["error"]
    stops = _post(limited, "/v1/chat/completions", json={"model": "demo-gguf", "messages": HELLO, "stop": ["a"] * 65})
    assert stops.status_code == 413 and stops.json()["error"]["param"] == "stop"
    forever = _post(limited, "/api/generate", json={"model": "demo-gguf", "keep_alive": "99999999999h"})
    assert forever.status_code == 400 and "keep_alive" in forever.json()["error"]
    huge = _post(limited, "/api/generate", json={"model": "demo-gguf", "keep_alive": 1e300})
    assert huge.status_code == 400
    ctx = _post(limited, "/api/generate", json={"model": "demo-gguf", "prompt": "x", "options": {"num_ctx": 2**40}})
    assert ctx.status_code == 400 and "num_ctx" in ctx.json()["error"]
    dims = _post(limited, "/api/embed", json={"model": "demo-embed-gguf", "input": "x", "dimensions": -1})
    assert dims.status_code == 400 and "dimensions" in dims.json()["error"]


def test_a_long_keep_alive_still_shows_in_ps(limited: ServerProcess) -> None:
    loaded = _post(limited, "/api/generate", json={"model": "demo-gguf", "keep_alive": "876000h", "stream": False})
    assert loaded.status_code == 200 and loaded.json()["done_reason"] == "load"
    running = httpx.get(f"{limited.base_url}/api/ps", timeout=30)
    assert running.status_code == 200
    (row,) = [m for m in running.json()["models"] if m["name"] == "demo-gguf:latest"]
    assert row["expires_at"] > "2120"


@pytest.mark.parametrize("name", ["evil\x00name", "../../etc/passwd", "/abs", "n" * 5000])
def test_bad_names_never_reach_models_yaml(limited: ServerProcess, name: str) -> None:
    before = _models_on_disk(limited)
    create = _post(limited, "/api/create", json={"model": name, "from": "demo-gguf", "stream": False})
    copy = _post(limited, "/api/copy", json={"source": "demo-gguf", "destination": name})
    assert create.status_code == 400 and "invalid model name" in create.json()["error"]
    assert copy.status_code == 400 and "invalid model name" in copy.json()["error"]
    assert _models_on_disk(limited) == before


# --- templates ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(10**9) %}x{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{{ 'x' * 900 }}{% endfor %}",  # 90 MB of output
        "{{ 'a' * 10**10 }}",
    ],
)
def test_chat_template_bombs_are_400_and_the_model_keeps_serving(limited: ServerProcess, template: str) -> None:
    created = _post(limited, "/api/create", json={"model": "bomb", "from": "demo-gguf", "template": template})
    assert created.status_code == 200, created.text
    started = time.perf_counter()
    reply = _post(limited, "/api/chat", json={"model": "bomb", "messages": HELLO, "stream": False})
    assert reply.status_code == 400, reply.text
    assert "chat template" in reply.json()["error"] or "the prompt is more than" in reply.json()["error"]
    assert time.perf_counter() - started < 30
    _alive(limited)


def test_templates_that_do_not_compile_are_refused_at_create(limited: ServerProcess) -> None:
    before = _models_on_disk(limited)
    nested = "{% if true %}" * 10_000 + "x" + "{% endif %}" * 10_000
    reply = _post(limited, "/api/create", json={"model": "deep", "from": "demo-gguf", "template": nested})
    assert reply.status_code == 400 and "template" in reply.json()["error"]
    too_long = _post(limited, "/api/create", json={"model": "long", "from": "demo-gguf", "template": "x" * 300_000})
    assert too_long.status_code == 400
    assert _models_on_disk(limited) == before


def test_go_template_bombs_are_400(limited: ServerProcess) -> None:
    nested = "{{ if .Prompt }}" * 10_000 + "x" + "{{ end }}" * 10_000
    deep = _post(limited, "/api/generate", json={"model": "demo-gguf", "prompt": "p", "template": nested})
    assert deep.status_code == 400 and "nest deeper" in deep.json()["error"]
    repeated = "{{ .Prompt }}" * 50_000
    body = {"model": "demo-gguf", "prompt": "p" * 100, "template": repeated, "stream": False}
    wide = _post(limited, "/api/generate", json=body)
    assert wide.status_code == 400 and "template" in wide.json()["error"]
    unclosed = _post(limited, "/api/generate", json={"model": "demo-gguf", "prompt": "p", "template": "{{" * 100_000})
    assert unclosed.status_code == 400
    _alive(limited)
