"""copy, create and delete through the official `ollama` client: models.yaml entries, never model files.

Its own server on its own models.yaml (pointing at the shared demo files), since these tests change the list.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ollama import Client, ResponseError

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Say hello to the tests"}]
GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture(scope="module")
def config(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("registry-edits")
    models = [
        {"id": "chat", "provider": "llama_cpp", "config": {"model_path": str(demo_dir / "demo-gguf.gguf")}},
        {
            "id": "embed",
            "provider": "llama_cpp",
            "config": {"model_path": str(demo_dir / "demo-embed-gguf.gguf"), "embedding": True, "n_ctx": 512},
        },
    ]
    path = folder / "models.yaml"
    path.write_text("# hand-written\n" + yaml.safe_dump({"default_model": "chat", "models": models}))
    return path


@pytest.fixture(scope="module")
def editable(config: Path) -> Iterator[ServerProcess]:
    proc = start_server(config.parent, config, "--api", "ollama")
    yield proc
    proc.stop()


@pytest.fixture()
def ollama(editable: ServerProcess) -> Client:
    return Client(host=editable.base_url, timeout=120)


def _on_disk(config: Path) -> dict[str, dict[str, object]]:
    return {m["id"]: m for m in yaml.safe_load(config.read_text())["models"]}


def _names(client: Client) -> set[str]:
    return {m.model or "" for m in client.list().models}


def test_copy_adds_an_alias_that_shares_the_loaded_weights(ollama: Client, config: Path, demo_dir: Path) -> None:
    assert ollama.copy("chat", "chat-copy:latest").status == "success"
    assert "chat-copy:latest" in _names(ollama)
    saved = _on_disk(config)["chat-copy"]
    assert saved["parent_model"] == "chat" and saved["config"] == _on_disk(config)["chat"]["config"]
    assert config.with_name("models.yaml.bak").read_text().startswith("# hand-written")
    original = ollama.chat(model="chat", messages=HELLO, options=GREEDY).message.content
    assert ollama.chat(model="chat-copy", messages=HELLO, options=GREEDY).message.content == original
    assert len(ollama.ps().models) == 1  # one copy of the weights serves both names
    show = ollama.show("chat-copy")
    assert show.details is not None and show.details.parent_model == "chat:latest"
    assert (demo_dir / "demo-gguf.gguf").is_file()


def test_copy_refuses_unknown_sources_and_taken_names(ollama: Client) -> None:
    with pytest.raises(ResponseError) as missing:
        ollama.copy("no-such-model", "x")
    assert missing.value.status_code == 404
    with pytest.raises(ResponseError) as taken:
        ollama.copy("chat", "embed")
    assert taken.value.status_code == 400 and "already exists" in taken.value.error


def test_create_makes_a_variant_with_its_own_system_prompt_and_defaults(ollama: Client, config: Path) -> None:
    progress = list(
        ollama.create(
            model="pirate",
            from_="chat",
            system="You are a pirate.",
            parameters={"temperature": 0.0, "num_predict": 6, "stop": ["arr"]},
            stream=True,
        )
    )
    assert progress[-1].status == "success"
    saved = _on_disk(config)["pirate"]
    assert saved["system"] == "You are a pirate." and saved["parent_model"] == "chat"
    assert saved["config"]["temperature"] == 0.0 and saved["config"]["max_tokens"] == 6  # type: ignore[index]
    show = ollama.show("pirate:latest")
    assert show.parameters is not None and "temperature" in show.parameters and '"arr"' in show.parameters
    # The variant's defaults and system prompt apply: the same as asking the base model with them spelled out.
    variant = ollama.chat(model="pirate", messages=HELLO)
    spelled = ollama.chat(
        model="chat",
        messages=[{"role": "system", "content": "You are a pirate."}, *HELLO],
        options={"temperature": 0, "num_predict": 6, "stop": ["arr"]},
    )
    assert variant.eval_count == spelled.eval_count and variant.message.content == spelled.message.content
    # The same prompt tokens, counted whole (as Ollama counts them) even though most were found in the prefix
    # cache the variant's request left.
    assert spelled.prompt_eval_count == variant.prompt_eval_count
    assert spelled.prompt_eval_count is not None and spelled.prompt_eval_count > 1


def test_create_refuses_what_a_registry_cannot_hold(ollama: Client) -> None:
    cases = [
        ({"from_": "chat", "quantize": "q4_K_M"}, 400),
        ({"from_": "chat", "template": "{{ .System }} {{ .Prompt }}"}, 400),
        ({"from_": "no-such-model"}, 404),
        ({"files": {"model.gguf": "sha256:00"}}, 400),
        ({"from_": "chat", "parameters": {"temperature": "warm"}}, 400),
    ]
    for extra, status in cases:
        with pytest.raises(ResponseError) as err:
            ollama.create(model="broken", **extra)  # type: ignore[arg-type]
        assert err.value.status_code == status, (extra, err.value.error)
    assert "broken:latest" not in _names(ollama)


def test_delete_removes_the_entry_and_keeps_the_files(ollama: Client, config: Path, demo_dir: Path) -> None:
    ollama.copy("embed", "embed-two")
    assert ollama.embed(model="embed-two", input="hi").embeddings
    assert ollama.delete("embed-two").status == "success"
    assert "embed-two:latest" not in _names(ollama) and "embed-two" not in _on_disk(config)
    assert (demo_dir / "demo-embed-gguf.gguf").is_file()
    assert ollama.embed(model="embed", input="hi").embeddings  # the source is untouched
    with pytest.raises(ResponseError) as err:
        ollama.delete("embed-two")
    assert err.value.status_code == 404
