"""The models.yaml edits behind Ollama's copy, create and delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from heylook_llm.config.registry_store import RegistryStore
from heylook_llm.errors import InvalidRequest, ModelNotFound
from heylook_llm.types import SamplingOverrides

pytestmark = pytest.mark.unit

ORIGINAL = """\
# my models
default_model: chat
models:
  - id: chat
    provider: llama_cpp
    config: {model_path: weights/chat.gguf, n_ctx: 1024}
  - id: vision
    provider: mlx
    config: {model_path: weights/vision}
"""


@pytest.fixture()
def store(tmp_path: Path) -> RegistryStore:
    path = tmp_path / "models.yaml"
    path.write_text(ORIGINAL)
    return RegistryStore(path)


def _saved(store: RegistryStore) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in yaml.safe_load(store.path.read_text())["models"]}


def test_copy_keeps_relative_paths_and_backs_up_the_file(store: RegistryStore) -> None:
    registry = store.copy_entry("chat", "chat2")
    assert _saved(store)["chat2"]["config"] == {"model_path": "weights/chat.gguf", "n_ctx": 1024}
    assert _saved(store)["chat2"]["parent_model"] == "chat"
    copy = registry.get("chat2")
    assert copy is not None and copy.config.model_path == store.path.parent / "weights" / "chat.gguf"
    assert copy.load_key() == registry.models[0].load_key()
    assert store.backup_path.read_text() == ORIGINAL


def test_copy_refuses_taken_names_and_unknown_sources(store: RegistryStore) -> None:
    with pytest.raises(InvalidRequest):
        store.copy_entry("chat", "vision")
    with pytest.raises(ModelNotFound):
        store.copy_entry("nope", "x")
    assert store.path.read_text() == ORIGINAL


def test_variant_maps_sampling_onto_each_providers_fields(store: RegistryStore) -> None:
    sampling = SamplingOverrides(temperature=0.2, repeat_penalty=1.2, repeat_last_n=32, stop=["END"])
    store.add_variant("vision", "vision-calm", system="Be calm.", sampling=sampling)
    saved = _saved(store)["vision-calm"]
    assert saved["system"] == "Be calm." and saved["parent_model"] == "vision"
    assert saved["config"] == {
        "model_path": "weights/vision",
        "temperature": 0.2,
        "repetition_penalty": 1.2,
        "repetition_context_size": 32,
        "stop": ["END"],
    }
    registry = store.add_variant("chat", "chat-hot", sampling=SamplingOverrides(repeat_penalty=1.3, max_tokens=9))
    assert _saved(store)["chat-hot"]["config"]["repeat_penalty"] == 1.3
    variant = registry.get("chat-hot")
    assert variant is not None and variant.load_key() == registry.models[0].load_key()


def test_variant_with_another_context_size_is_a_separate_load(store: RegistryStore) -> None:
    registry = store.add_variant("chat", "chat-long", context_length=4096)
    assert _saved(store)["chat-long"]["config"]["n_ctx"] == 4096
    long, base = registry.get("chat-long"), registry.get("chat")
    assert long is not None and base is not None and long.load_key() != base.load_key()


def test_values_models_yaml_cannot_hold_are_refused_by_name(store: RegistryStore) -> None:
    with pytest.raises(InvalidRequest, match="presence_penalty, seed"):
        store.add_variant("chat", "x", sampling=SamplingOverrides(presence_penalty=0.5, seed=3))
    with pytest.raises(InvalidRequest, match="repeat_last_n"):
        store.add_variant("chat", "x", sampling=SamplingOverrides(repeat_last_n=8))
    with pytest.raises(InvalidRequest, match="template"):
        store.add_variant("vision", "x", chat_template="{{ messages }}")
    assert store.path.read_text() == ORIGINAL


def test_recreating_a_variant_replaces_it_but_never_an_unrelated_model(store: RegistryStore) -> None:
    store.add_variant("chat", "helper", system="one")
    store.add_variant("chat", "helper", system="two")
    assert [m for m in _saved(store) if m == "helper"] == ["helper"]
    assert _saved(store)["helper"]["system"] == "two"
    with pytest.raises(InvalidRequest, match="already exists"):
        store.add_variant("chat", "vision", system="no")


def test_invalid_results_are_refused_before_anything_is_written(store: RegistryStore) -> None:
    with pytest.raises(InvalidRequest, match=r"models\.yaml invalid"):
        store.add_variant("chat", "bad", sampling=SamplingOverrides(temperature=9.0))
    assert store.path.read_text() == ORIGINAL and not store.backup_path.exists()


def test_deleting_the_default_model_drops_the_default(store: RegistryStore) -> None:
    registry = store.remove_entry("chat")
    assert registry.default_model is None and [m.id for m in registry.models] == ["vision"]
    assert "default_model" not in yaml.safe_load(store.path.read_text())
    with pytest.raises(ModelNotFound):
        store.remove_entry("chat")
