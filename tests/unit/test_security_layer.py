"""The security layer (api/security) in-process: Host and Origin checks, CORS, API keys, JSON-only state changes
and the body limit, each answered in the shape of the dialect the path belongs to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from heylook_llm.api.app import create_app
from heylook_llm.api.security.policy import AccessPolicy, is_loopback_address, is_state_changing, split_host
from heylook_llm.config.registry import parse_registry
from heylook_llm.config.settings import AccessSettings, ApiMode, RequestLimits, ServerSettings
from tests.support.fake_backend import FakeWorld
from tests.support.inprocess import LOCAL_BASE_URL

pytestmark = pytest.mark.unit

KEY = "s3cret-key"
BEARER = {"Authorization": f"Bearer {KEY}"}
HELLO = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False, "max_tokens": 2}


def _client(
    access: AccessSettings | None = None,
    limits: RequestLimits | None = None,
    host: str = "127.0.0.1",
    api: ApiMode = ApiMode.BOTH,
) -> TestClient:
    registry = parse_registry(
        {"models": [{"id": "m", "provider": "llama_cpp", "config": {"model_path": "m.gguf"}}]}, None
    )
    settings = ServerSettings(host=host, api=api, access=access or AccessSettings(), limits=limits or RequestLimits())
    app = create_app(settings, registry, backend_factory=FakeWorld(load_seconds=0.0).factory)
    return TestClient(app, base_url=LOCAL_BASE_URL + ":8080")


@pytest.fixture()
def keyed() -> Iterator[TestClient]:
    with _client(AccessSettings(api_keys=(KEY,))) as client:
        yield client


# --- Host -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost", "LOCALHOST:1", "[::1]:8080", "[::1]"])
def test_loopback_host_names_pass_on_a_loopback_bind(host: str) -> None:
    with _client() as client:
        assert client.get("/v1/models", headers={"Host": host}).status_code == 200


def test_other_host_names_are_refused_in_the_dialects_shape() -> None:
    with _client() as client:
        openai = client.get("/v1/models", headers={"Host": "evil.example"})
        ollama = client.get("/api/tags", headers={"Host": "evil.example:8080"})
        health = client.get("/health", headers={"Host": "evil.example"})
    assert openai.status_code == 403 and openai.json()["error"]["code"] == "host_not_allowed"
    assert (
        "evil.example" in openai.json()["error"]["message"] and "--allowed-hosts" in openai.json()["error"]["message"]
    )
    assert ollama.status_code == 403 and set(ollama.json()) == {"error"}
    assert health.status_code == 200


def test_allowed_hosts_add_names_and_patterns() -> None:
    access = AccessSettings(allowed_hosts=("llm.example.com", "*.lan:8080"))
    with _client(access) as client:
        for host, status in [
            ("llm.example.com:443", 200),
            ("box.lan:8080", 200),
            ("box.lan:9000", 403),
            ("localhost", 200),
            ("evil.example", 403),
        ]:
            assert client.get("/v1/models", headers={"Host": host}).status_code == status, host


def test_any_host_passes_on_a_network_bind_unless_hosts_are_named() -> None:
    with _client(host="0.0.0.0") as client:
        assert client.get("/v1/models", headers={"Host": "192.168.1.20:8080"}).status_code == 200
    with _client(AccessSettings(allowed_hosts=("gpu-box",)), host="0.0.0.0") as client:
        assert client.get("/v1/models", headers={"Host": "gpu-box:8080"}).status_code == 200
        assert client.get("/v1/models", headers={"Host": "evil.example"}).status_code == 403


# --- Origin and CORS ----------------------------------------------------------------------------------------------
def test_requests_from_other_web_pages_are_refused_on_every_route() -> None:
    evil = {"Origin": "http://evil.example"}
    with _client() as client:
        listing = client.get("/v1/models", headers=evil)
        chat = client.post("/api/chat", headers={**evil, "Content-Type": "text/plain"}, json=HELLO)
        null = client.get("/api/tags", headers={"Origin": "null"})
    assert listing.status_code == 403 and listing.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in listing.headers
    assert chat.status_code == 403 and "evil.example" in chat.json()["error"]
    assert null.status_code == 403


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://localhost:3000", "127.0.0.1:8080"),
        ("https://127.0.0.1", "127.0.0.1:8080"),
        ("http://[::1]:5173", "127.0.0.1:8080"),
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),  # the page this server serves
    ],
)
def test_loopback_and_same_origin_pages_get_cors_headers(origin: str, host: str) -> None:
    with _client() as client:
        reply = client.get("/v1/models", headers={"Origin": origin, "Host": host})
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == origin and "Origin" in reply.headers["vary"]


def test_same_origin_on_a_network_bind_and_configured_origins() -> None:
    access = AccessSettings(allowed_origins=("https://app.example.com", "https://*.tools.example"))
    with _client(access, host="0.0.0.0") as client:
        own = client.get("/v1/models", headers={"Origin": "http://gpu-box:8080", "Host": "gpu-box:8080"})
        configured = client.get("/v1/models", headers={"Origin": "https://app.example.com"})
        pattern = client.get("/v1/models", headers={"Origin": "https://a.tools.example"})
        other = client.get("/v1/models", headers={"Origin": "https://app.example.com.evil.example"})
    assert own.status_code == configured.status_code == pattern.status_code == 200
    assert other.status_code == 403


def test_preflight_is_answered_for_allowed_origins_only_and_needs_no_key(keyed: TestClient) -> None:
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    allowed = keyed.options("/v1/chat/completions", headers={"Origin": "http://localhost:3000", **ask})
    private = keyed.options(
        "/api/chat",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Private-Network": "true", **ask},
    )
    refused = keyed.options("/v1/chat/completions", headers={"Origin": "https://evil.example", **ask})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert allowed.headers["access-control-allow-headers"] == "authorization, content-type"
    assert private.headers["access-control-allow-private-network"] == "true"
    assert refused.status_code == 403


# --- API keys -----------------------------------------------------------------------------------------------------
def test_without_a_key_every_route_but_health_and_the_page_is_401(keyed: TestClient) -> None:
    openai = keyed.get("/v1/models")
    assert openai.status_code == 401 and openai.headers["www-authenticate"] == "Bearer"
    assert openai.json()["error"]["code"] == "invalid_api_key" and openai.json()["error"]["type"]
    ollama = keyed.get("/api/tags")
    assert ollama.status_code == 401 and set(ollama.json()) == {"error"}
    for path in ("/", "/api/version", "/metrics", "/openapi.json", "/v1/dashboard", "/docs"):
        assert keyed.get(path).status_code == 401, path
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/ui").status_code == 200 and keyed.get("/ui/app.js").status_code == 200


def test_a_valid_key_in_either_header_passes_and_a_wrong_one_does_not(keyed: TestClient) -> None:
    assert keyed.get("/v1/models", headers=BEARER).status_code == 200
    assert keyed.get("/v1/models", headers={"Authorization": f"bearer {KEY}"}).status_code == 200
    assert keyed.get("/api/tags", headers={"x-api-key": KEY}).status_code == 200
    assert keyed.post("/v1/chat/completions", headers=BEARER, json=HELLO).status_code == 200
    wrong = keyed.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid API key"
    assert keyed.get("/v1/models", headers={"Authorization": f"Basic {KEY}"}).status_code == 401
    assert keyed.get("/v1/models", headers={"x-api-key": ""}).status_code == 401


def test_a_refusal_to_an_allowed_page_carries_cors_headers(keyed: TestClient) -> None:
    # The web page on another loopback port must be able to read the 401 to ask its user for the key.
    reply = keyed.get("/v1/models", headers={"Origin": "http://localhost:3000"})
    assert reply.status_code == 401 and reply.headers["access-control-allow-origin"] == "http://localhost:3000"


# --- state-changing routes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/create", "/api/copy", "/api/delete", "/api/pull", "/api/push"])
def test_state_changing_routes_take_only_json(path: str) -> None:
    with _client() as client:
        method = "DELETE" if path == "/api/delete" else "POST"
        form = client.request(method, path, content=b'{"model":"x","from":"m"}', headers={"Content-Type": "text/plain"})
        urlencoded = client.request(method, path, data={"model": "x"})
    assert form.status_code == 415 and set(form.json()) == {"error"} and "application/json" in form.json()["error"]
    assert urlencoded.status_code == 415


def test_generation_routes_keep_accepting_curl_form_bodies_and_loads_need_no_body() -> None:
    with _client() as client:
        chat = client.post("/api/chat", content=b'{"model":"m","messages":[],"stream":false}', headers={})
        form = client.post(
            "/api/generate",
            content=b'{"model":"m","prompt":"hi","stream":false,"options":{"num_predict":2}}',
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        load = client.post("/v1/models/m/load")
        unload = client.post("/v1/models/m/unload", headers={"Content-Type": "text/plain"}, content=b"x")
    assert chat.status_code == 200 and form.status_code == 200 and load.status_code == 200
    assert unload.status_code == 415 and unload.json()["error"]["code"] == "unsupported_media_type"


# --- body size ------------------------------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_413_before_anything_parses_it() -> None:
    with _client(limits=RequestLimits(max_body_bytes=1000)) as client:
        declared = client.post(
            "/v1/chat/completions", content=b"x" * 2000, headers={"Content-Type": "application/json"}
        )
        chunked = client.post("/api/chat", content=iter([b"{" + b" " * 600, b" " * 600 + b"}"]))
        fits = client.post("/v1/chat/completions", json=HELLO)
    assert declared.status_code == 413
    assert (
        declared.json()["error"]["code"] == "request_too_large"
        and "--max-body-mb" in declared.json()["error"]["message"]
    )
    assert "2,000 bytes" in declared.json()["error"]["message"]
    assert chunked.status_code == 413 and "--max-body-mb" in chunked.json()["error"]
    assert fits.status_code == 200


def test_the_body_limit_covers_the_multipart_upload_route() -> None:
    with _client(limits=RequestLimits(max_body_bytes=10_000)) as client:
        reply = client.post(
            "/v1/chat/completions/multipart",
            data={"model": "m", "messages": '[{"role": "user", "content": "hi"}]'},
            files={"images": ("a.png", b"\x89PNG" + b"0" * 20_000, "image/png")},
        )
    assert reply.status_code == 413


# --- the policy's pieces --------------------------------------------------------------------------------------------
def test_policy_helpers() -> None:
    assert split_host("[::1]:8080") == ("[::1]", "8080") and split_host("Example.COM") == ("example.com", None)
    assert is_loopback_address("127.0.0.2") and is_loopback_address("::1") and is_loopback_address("localhost")
    assert not is_loopback_address("0.0.0.0") and not is_loopback_address("192.168.1.2")
    assert is_state_changing("POST", "/v1/models/org/name/load") and is_state_changing("DELETE", "/api/delete")
    assert not is_state_changing("GET", "/api/create") and not is_state_changing("POST", "/api/chat")
    policy = AccessPolicy.from_settings(AccessSettings(api_keys=("a", "b"), allowed_hosts=("*",)), "127.0.0.1")
    assert policy.host_patterns is None and policy.host_allowed("anything.example")
    assert policy.key_matches("Bearer b", None) and policy.key_matches(None, "a")
    assert not policy.key_matches("Bearer c", "d") and not policy.key_matches("Bearer", None)
