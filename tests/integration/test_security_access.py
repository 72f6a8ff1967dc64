"""Access control on real server processes: API keys with the official clients, cross-site and DNS-rebinding
requests refused, models.yaml unchanged by them, and the warning for a network bind without a key.

Each server runs on its own models.yaml (pointing at the shared demo files): these tests try to change it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from ollama import Client, ResponseError

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

KEY = "integration-key-1"
FILE_KEY = "key-from-a-file"
ENV_KEY = "key-from-the-environment"
HELLO = [{"role": "user", "content": "Say hello"}]
ATTACK = b'{"model":"x","from":"chat","system":"PWNED"}'


def _models_yaml(folder: Path, demo_dir: Path) -> Path:
    models = [{"id": "chat", "provider": "llama_cpp", "config": {"model_path": str(demo_dir / "demo-gguf.gguf")}}]
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


@pytest.fixture(scope="module")
def open_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No key: the defaults alone must stop web pages."""
    folder = tmp_path_factory.mktemp("open-server")
    proc = start_server(folder, _models_yaml(folder, demo_dir))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def keyed_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("keyed-server")
    key_file = folder / "keys.txt"
    key_file.write_text(f"# keys for the tests\n{FILE_KEY}\n")
    config = _models_yaml(folder, demo_dir)
    env = {"HEYLOOK_API_KEYS": ENV_KEY}
    proc = start_server(folder, config, "--api-key", KEY, "--api-key-file", str(key_file), env=env)
    yield proc
    proc.stop()


def _config_of(server: ServerProcess) -> Path:
    return server.log_path.parent / "models.yaml"


# --- the attack from the issue --------------------------------------------------------------------------------------
def test_a_cross_site_post_cannot_rewrite_models_yaml(open_server: ServerProcess) -> None:
    config = _config_of(open_server)
    before = config.read_bytes()
    url = f"{open_server.base_url}/api/create"
    cross_site = httpx.post(
        url, content=ATTACK, headers={"Origin": "http://evil.example", "Content-Type": "text/plain"}
    )
    assert cross_site.status_code == 403 and "evil.example" in cross_site.json()["error"]
    # Without an Origin (an old browser, or a page that hides it), a form-encoded body is still refused.
    form = httpx.post(url, content=ATTACK, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    rebound = httpx.post(url, content=ATTACK, headers={"Host": "evil.example", "Content-Type": "application/json"})
    assert rebound.status_code == 403
    assert config.read_bytes() == before


def test_dns_rebinding_host_names_are_refused_everywhere_but_health(open_server: ServerProcess) -> None:
    evil = {"Host": "evil.example"}
    openai_shape = httpx.get(f"{open_server.base_url}/v1/models", headers=evil)
    ollama_shape = httpx.get(f"{open_server.base_url}/api/tags", headers=evil)
    assert openai_shape.status_code == 403 and openai_shape.json()["error"]["code"] == "host_not_allowed"
    assert ollama_shape.status_code == 403 and set(ollama_shape.json()) == {"error"}
    assert httpx.get(f"{open_server.base_url}/health", headers=evil).status_code == 200
    assert httpx.get(f"{open_server.base_url}/v1/models", headers={"Host": "localhost"}).status_code == 200


def test_pages_on_loopback_origins_get_cors_and_preflights(open_server: ServerProcess) -> None:
    origin = {"Origin": "http://localhost:5173"}
    preflight = httpx.options(
        f"{open_server.base_url}/v1/chat/completions",
        headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
    )
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == origin["Origin"]
    listing = httpx.get(f"{open_server.base_url}/v1/models", headers=origin)
    assert listing.status_code == 200 and listing.headers["access-control-allow-origin"] == origin["Origin"]


# --- keys ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [KEY, FILE_KEY, ENV_KEY])
def test_the_openai_client_works_with_each_key(keyed_server: ServerProcess, key: str) -> None:
    client = openai.OpenAI(base_url=f"{keyed_server.base_url}/v1", api_key=key, max_retries=0, timeout=60)
    reply = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=4)  # type: ignore[arg-type]
    assert reply.choices[0].message.content is not None and reply.usage is not None


def test_the_openai_client_without_the_key_gets_401(keyed_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{keyed_server.base_url}/v1", api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as err:
        client.models.list()
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"


def test_the_ollama_client_works_with_the_key_in_a_header(keyed_server: ServerProcess) -> None:
    client = Client(host=keyed_server.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    reply = client.chat(model="chat", messages=HELLO, options={"num_predict": 4})
    assert reply.done and reply.eval_count
    assert [m.model for m in client.list().models] == ["chat:latest"]
    with pytest.raises(ResponseError) as err:
        Client(host=keyed_server.base_url, timeout=60).list()
    assert err.value.status_code == 401 and "API key" in err.value.error


def test_anthropic_style_header_and_unprotected_paths(keyed_server: ServerProcess) -> None:
    assert httpx.get(f"{keyed_server.base_url}/v1/models", headers={"x-api-key": KEY}).status_code == 200
    assert httpx.get(f"{keyed_server.base_url}/health").status_code == 200
    assert httpx.get(f"{keyed_server.base_url}/ui").status_code == 200
    assert httpx.get(f"{keyed_server.base_url}/openapi.json").status_code == 401
    assert KEY not in keyed_server.log() and FILE_KEY not in keyed_server.log()


def test_with_the_key_state_changes_work_and_stay_json_only(keyed_server: ServerProcess) -> None:
    config = _config_of(keyed_server)
    url = f"{keyed_server.base_url}/api/create"
    auth = {"Authorization": f"Bearer {KEY}"}
    form = httpx.post(url, content=ATTACK, headers={**auth, "Content-Type": "text/plain"})
    assert form.status_code == 415 and "x" not in {m["id"] for m in yaml.safe_load(config.read_text())["models"]}
    created = httpx.post(url, json={"model": "pirate", "from": "chat", "system": "Arr", "stream": False}, headers=auth)
    assert created.status_code == 200 and created.json() == {"status": "success"}
    assert "pirate" in {m["id"] for m in yaml.safe_load(config.read_text())["models"]}


# --- binding to the network -----------------------------------------------------------------------------------------
def test_a_network_bind_without_a_key_logs_a_warning(demo_dir: Path, tmp_path: Path) -> None:
    config = _models_yaml(tmp_path, demo_dir)
    server = start_server(tmp_path, config, "--host", "0.0.0.0")
    try:
        assert httpx.get(f"{server.base_url}/v1/models", headers={"Host": "gpu-box.lan:1234"}).status_code == 200
        assert "without an API key" in server.log()
    finally:
        server.stop()
    keyed_log = tmp_path / "keyed"
    keyed_log.mkdir()
    server = start_server(keyed_log, config, "--host", "0.0.0.0", "--api-key", KEY, "--allowed-hosts", "gpu-box")
    try:
        auth = {"Authorization": f"Bearer {KEY}"}
        named = httpx.get(f"{server.base_url}/v1/models", headers={**auth, "Host": "gpu-box:8080"})
        other = httpx.get(f"{server.base_url}/v1/models", headers={**auth, "Host": "evil.example"})
        assert named.status_code == 200 and other.status_code == 403
        assert "without an API key" not in server.log()
    finally:
        server.stop()
