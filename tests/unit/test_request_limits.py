"""Request limits in-process: counts (messages, prompts, stop strings), keep_alive and num_ctx ranges, model
names, and the flags that set them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from heylook_llm.api.app import create_app
from heylook_llm.cli import build_parser
from heylook_llm.cli_security import access_settings, image_settings, request_limits
from heylook_llm.config.durations import MAX_KEEP_ALIVE_SECONDS, keep_alive_seconds
from heylook_llm.config.registry import MAX_MODEL_ID_LENGTH, RegistryError, model_id_problem, parse_registry
from heylook_llm.config.settings import MIB, RequestLimits, ServerSettings
from tests.support.fake_backend import FakeWorld
from tests.support.inprocess import LOCAL_BASE_URL, fake_client

pytestmark = pytest.mark.unit

HELLO = [{"role": "user", "content": "hi"}]


def _limited(**limits: int) -> TestClient:
    registry = parse_registry(
        {"models": [{"id": "m", "provider": "llama_cpp", "config": {"model_path": "m.gguf"}}]}, None
    )
    settings = ServerSettings(limits=RequestLimits(**limits))
    return TestClient(create_app(settings, registry, FakeWorld(load_seconds=0.0).factory), base_url=LOCAL_BASE_URL)


# --- counts -----------------------------------------------------------------------------------------------------
def test_counts_over_their_limits_are_413_naming_field_and_flag() -> None:
    with _limited(max_messages=3, max_prompts=2, max_stop_strings=2) as client:
        cases = [
            ("/v1/chat/completions", {"model": "m", "messages": HELLO * 4}, "messages", "--max-messages"),
            ("/v1/chat/completions", {"model": "m", "messages": HELLO, "stop": ["a", "b", "c"]}, "stop", "--max-stop"),
            ("/v1/completions", {"model": "m", "prompt": ["a", "b", "c"]}, "prompt", "--max-prompts"),
            ("/v1/embeddings", {"model": "m", "input": ["a", "b", "c"]}, "input", "--max-prompts"),
        ]
        for path, body, param, flag in cases:
            reply = client.post(path, json=body)
            error = reply.json()["error"]
            assert reply.status_code == 413 and error["param"] == param and flag in error["message"], (path, error)
            assert error["code"] == "limit_exceeded"
        ollama = [
            ("/api/chat", {"model": "m", "messages": HELLO * 4}, "'messages'"),
            ("/api/chat", {"model": "m", "messages": HELLO, "options": {"stop": ["a", "b", "c"]}}, "'options.stop'"),
            ("/api/generate", {"model": "m", "prompt": "x", "options": {"stop": ["a", "b", "c"]}}, "'options.stop'"),
            ("/api/embed", {"model": "m", "input": ["a", "b", "c"]}, "'input'"),
        ]
        for path, body, field in ollama:
            reply = client.post(path, json=body)
            assert reply.status_code == 413 and field in reply.json()["error"], (path, reply.json())
        within = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO * 3, "stop": "a"})
        assert within.status_code == 200


# --- keep_alive -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["99999999999h", 1e300, "876001h", math.inf])
def test_keep_alive_longer_than_a_hundred_years_is_refused(value: str | float) -> None:
    with pytest.raises(ValueError, match="use a negative duration"):
        keep_alive_seconds(value)


def test_keep_alive_bounds() -> None:
    assert keep_alive_seconds("876000h") == MAX_KEEP_ALIVE_SECONDS
    assert keep_alive_seconds(-1e300) == math.inf and keep_alive_seconds("-1") == math.inf


def test_huge_keep_alive_is_a_400_and_ps_keeps_answering() -> None:
    with fake_client() as client:
        refused = client.post("/api/generate", json={"model": "m", "keep_alive": "99999999999h", "stream": False})
        assert refused.status_code == 400 and "keep_alive" in refused.json()["error"]
        loaded = client.post("/api/generate", json={"model": "m", "keep_alive": "876000h", "stream": False})
        assert loaded.status_code == 200
        # The fake model has no file for /api/ps to describe; tests/integration/test_security_limits.py reads
        # the expiry of a real one.
        assert client.get("/api/ps").status_code == 200
    assert build_parser().parse_args(["serve", "--keep-alive", "-1"]).keep_alive == math.inf
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--keep-alive", "99999999999h"])


# --- num_ctx ----------------------------------------------------------------------------------------------------
def test_num_ctx_range() -> None:
    with fake_client() as client:
        for num_ctx in (0, 8, 2**40):
            body = {"model": "m", "prompt": "x", "stream": False, "options": {"num_ctx": num_ctx}}
            reply = client.post("/api/generate", json=body)
            assert reply.status_code == 400 and "num_ctx" in reply.json()["error"], num_ctx
            create = client.post("/api/create", json={"model": "v", "from": "m", "parameters": {"num_ctx": num_ctx}})
            assert create.status_code == 400 and "num_ctx" in create.json()["error"], num_ctx


# --- model names ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["a\x00b", "../escape", "/etc/passwd", "a//b", "a/./b", "x" * 5000, "tab\there", "a\\b", " pad", "a\u202eb"]
)
def test_bad_names_are_refused_by_create_and_copy(name: str) -> None:
    assert model_id_problem(name) is not None
    with fake_client() as client:
        create = client.post("/api/create", json={"model": name, "from": "m"})
        copy = client.post("/api/copy", json={"source": "m", "destination": name})
    assert create.status_code == 400 and create.json()["error"].startswith("invalid model name"), create.json()
    assert copy.status_code == 400 and copy.json()["error"].startswith("invalid model name")


@pytest.mark.parametrize("name", ["demo-gguf", "org/model:Q4_K_M", "hf.co/org/model", "a.b..c", "é-ü", "x" * 256])
def test_ordinary_names_pass(name: str) -> None:
    assert model_id_problem(name) is None
    assert len(name) <= MAX_MODEL_ID_LENGTH


def test_models_yaml_ids_follow_the_same_rules() -> None:
    with pytest.raises(RegistryError, match=r"field 'id'.*path segment"):
        parse_registry({"models": [{"id": "../x", "provider": "llama_cpp", "config": {"model_path": "m.gguf"}}]}, None)


# --- flags ------------------------------------------------------------------------------------------------------
def test_security_flags_make_settings(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# team keys\nfile-key\n\n  other-key  \n")
    args = build_parser().parse_args(
        [
            "serve",
            "--api-key",
            "flag-key",
            "--api-key-file",
            str(key_file),
            "--allowed-origins",
            "https://a.example,https://b.example",
            "--allowed-origins",
            "app://obsidian.md",
            "--allowed-hosts",
            "gpu-box,gpu-box.lan:8080",
            "--max-body-mb",
            "8",
            "--max-messages",
            "100",
            "--max-prompts",
            "10",
            "--max-stop-strings",
            "4",
            "--max-images",
            "2",
            "--prompt-bytes-per-token",
            "8",
        ]
    )
    access = access_settings(args, {"HEYLOOK_API_KEYS": "env-a, env-b flag-key"})
    assert access.api_keys == ("flag-key", "file-key", "other-key", "env-a", "env-b")
    assert access.allowed_origins == ("https://a.example", "https://b.example", "app://obsidian.md")
    assert access.allowed_hosts == ("gpu-box", "gpu-box.lan:8080")
    limits = request_limits(args)
    assert (limits.max_body_bytes, limits.max_messages, limits.max_prompts) == (8 * MIB, 100, 10)
    assert (limits.max_stop_strings, limits.prompt_bytes_per_token) == (4, 8)
    assert image_settings(args).max_images_per_request == 2


def test_security_flag_defaults_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["serve"])
    access = access_settings(args, {})
    assert access.api_keys == () and access.allowed_origins == () and access.allowed_hosts is None
    assert request_limits(args) == RequestLimits()
    with pytest.raises(ValueError, match="--api-key-file"):
        access_settings(build_parser().parse_args(["serve", "--api-key-file", str(tmp_path / "none")]), {})
    for flag, bad in (("--max-body-mb", "0"), ("--max-messages", "0"), ("--max-prompts", "many")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", flag, bad])
        assert flag in capsys.readouterr().err
