from __future__ import annotations

from pathlib import Path

import pytest

from heylook_llm.config.registry import LlamaCppConfig, RegistryError, load_registry

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


VALID = """
default_model: chat
max_loaded_models: 3
models:
  - id: chat
    provider: llama_cpp
    description: a chat model
    tags: [chat]
    config:
      model_path: weights/chat.gguf
      n_ctx: 1024
      temperature: 0.3
      stop: "###"
  - id: retired
    provider: llama_cpp
    enabled: false
    config:
      model_path: /abs/off.gguf
  - id: mlx-one
    provider: mlx
    config:
      model_path: ./mlx-folder
      cache_type: rotating
      max_kv_size: 256
"""


def test_valid_file_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    registry = load_registry(_write(tmp_path, VALID))
    assert registry.default_model == "chat"
    assert registry.max_loaded_models == 3
    chat = registry.get("chat")
    assert chat is not None and isinstance(chat.config, LlamaCppConfig)
    assert chat.config.model_path == (tmp_path / "weights" / "chat.gguf").resolve()
    assert chat.config.n_ctx == 1024 and chat.config.n_batch == 512 and chat.config.use_mmap is True
    assert chat.config.stop == ["###"]
    defaults = chat.config.sampling_defaults()
    assert defaults.temperature == 0.3 and defaults.top_p is None
    assert registry.get("mlx-one") is not None
    assert registry.get("mlx-one").config.model_path == (tmp_path / "mlx-folder").resolve()  # type: ignore[union-attr]


def test_disabled_models_are_neither_listed_nor_served(tmp_path: Path) -> None:
    registry = load_registry(_write(tmp_path, VALID))
    assert [m.id for m in registry.enabled()] == ["chat", "mlx-one"]
    assert registry.get("retired") is None


def test_max_loaded_models_defaults_to_two(tmp_path: Path) -> None:
    registry = load_registry(_write(tmp_path, "models: []\n"))
    assert registry.max_loaded_models == 2 and registry.models == []


def test_typo_in_a_config_key_names_file_model_field_and_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID.replace("n_ctx: 1024", "n_cxt: 1024"))
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    text = str(err.value)
    assert str(path) in text
    assert "model 'chat'" in text
    assert "config.n_cxt" in text
    assert "did you mean 'n_ctx'?" in text


def test_wrong_type_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as err:
        load_registry(_write(tmp_path, VALID.replace("n_ctx: 1024", "n_ctx: lots")))
    assert "model 'chat': field 'config.n_ctx'" in str(err.value)


def test_unknown_entry_and_top_level_keys_are_errors(tmp_path: Path) -> None:
    text = VALID.replace("    description: a chat model", "    descripton: a chat model")
    text = text.replace("max_loaded_models: 3", "max_loaded_model: 3")
    with pytest.raises(RegistryError) as err:
        load_registry(_write(tmp_path, text))
    problems = err.value.problems
    assert any("model 'chat': field 'descripton'" in p and "'description'" in p for p in problems)
    assert any("'max_loaded_model'" in p and "did you mean 'max_loaded_models'" in p for p in problems)


def test_duplicate_ids_bad_provider_and_unknown_default(tmp_path: Path) -> None:
    text = """
default_model: ghost
models:
  - {id: a, provider: llama_cpp, config: {model_path: a.gguf}}
  - {id: a, provider: llama_cpp, config: {model_path: b.gguf}}
  - {id: c, provider: onnx, config: {model_path: c}}
"""
    with pytest.raises(RegistryError) as err:
        load_registry(_write(tmp_path, text))
    problems = "\n".join(err.value.problems)
    assert "model 'a': field 'id': duplicate id" in problems
    assert "model 'c': field 'provider'" in problems and "onnx" in problems


def test_default_model_must_be_an_enabled_model(tmp_path: Path) -> None:
    text = "default_model: ghost\nmodels:\n  - {id: a, provider: llama_cpp, config: {model_path: a.gguf}}\n"
    with pytest.raises(RegistryError, match=r"default_model.*'ghost'"):
        load_registry(_write(tmp_path, text))


def test_chat_format_is_checked_and_exclusive_with_chat_template(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="did you mean 'chatml'"):
        load_registry(_write(tmp_path, VALID.replace("n_ctx: 1024", "chat_format: chatm")))
    both = VALID.replace("n_ctx: 1024", "chat_format: chatml\n      chat_template: '{{ x }}'")
    with pytest.raises(RegistryError, match="either chat_format or chat_template"):
        load_registry(_write(tmp_path, both))


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(_write(tmp_path, "models: [\n"))
    with pytest.raises(RegistryError, match="expected a mapping"):
        load_registry(_write(tmp_path, "- just\n- a list\n"))


def test_unquoted_yaml_boolean_id_is_explained(tmp_path: Path) -> None:
    text = "models:\n  - {id: on, provider: llama_cpp, config: {model_path: a.gguf}}\n"
    with pytest.raises(RegistryError, match="quote it"):
        load_registry(_write(tmp_path, text))
