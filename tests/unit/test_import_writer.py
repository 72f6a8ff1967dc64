"""models.yaml out: new files, merges that keep comments, backups, the server's own validation (writer.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from heylook_llm.config.registry import LlamaCppConfig, MLXConfig, load_registry
from heylook_llm.importer.detect import FoundModel, detect_folder, detect_gguf
from heylook_llm.importer.naming import assign_ids
from heylook_llm.importer.overrides import parse_overrides
from heylook_llm.importer.profiles import PROFILES, PlannedEntry, plan_entry
from heylook_llm.importer.writer import (
    check_round_trip,
    existing_ids_by_path,
    merge,
    new_document,
    read_existing,
    write,
)

pytestmark = pytest.mark.unit


@pytest.fixture()
def models(demo_dir: Path, tmp_path: Path) -> list[FoundModel]:
    folder = tmp_path / "files"
    folder.mkdir()
    shutil.copy(demo_dir / "demo-gguf.gguf", folder / "chat.gguf")
    shutil.copy(demo_dir / "demo-embed-gguf.gguf", folder / "embed.gguf")
    shutil.copytree(demo_dir / "demo-mlx", folder / "demo-mlx")
    found = [detect_gguf(folder / "chat.gguf"), detect_gguf(folder / "embed.gguf"), detect_folder(folder / "demo-mlx")]
    assert all(isinstance(f, FoundModel) for f in found)
    return found  # type: ignore[return-value]


def _plan(models: list[FoundModel], existing_ids: dict[Path, str] | None = None, **kw: str) -> list[PlannedEntry]:
    kept = [(existing_ids or {}).get(m.resolved) for m in models]
    ids = assign_ids(models, list((existing_ids or {}).values()), kept)
    overrides = parse_overrides([f"{k}={v}" for k, v in kw.items()])
    return [plan_entry(m, i, PROFILES["balanced"], overrides) for m, i in zip(models, ids, strict=True)]


def test_a_new_file_round_trips_through_the_server_loader(models: list[FoundModel], tmp_path: Path) -> None:
    out = tmp_path / "out" / "models.yaml"
    document = new_document(out, _plan(models), "balanced")
    text = document.render()
    assert text.startswith("# Written by `heylookllm import` (profile balanced)")
    assert write(document, text) is None  # nothing to back up
    registry = load_registry(out)
    assert [m.id for m in registry.models] == ["chat", "embed", "demo-mlx"]
    assert registry.default_model == "chat"  # the first chat model, not the embedding one
    chat, embed, mlx = registry.models
    assert isinstance(chat.config, LlamaCppConfig) and chat.config.model_path == models[0].path
    assert isinstance(embed.config, LlamaCppConfig) and embed.config.embedding
    assert isinstance(mlx.config, MLXConfig) and mlx.config.repetition_penalty == 1.05
    assert chat.tags == ["llama", "F32", "chat"] and "imported from" in chat.description


def test_strings_yaml_1_1_would_misread_are_quoted(models: list[FoundModel], tmp_path: Path) -> None:
    planned = _plan(models[:1], system="yes", description="12:30")
    planned[0].id = "no"
    text = new_document(tmp_path / "m.yaml", planned, "balanced").render()
    data = yaml.safe_load(text)
    assert data["models"][0]["id"] == "no" and data["models"][0]["system"] == "yes"
    assert data["models"][0]["description"] == "12:30"
    check_round_trip(text, tmp_path / "m.yaml")


EXISTING = """\
# My models. This comment stays.
default_model: mine   # the one I use most
max_loaded_models: 1
models:
  # hand-written, not from a scan
  - id: mine
    provider: llama_cpp
    config:
      model_path: elsewhere.gguf  # relative to this file
      n_ctx: 512
  - id: my-chat
    provider: llama_cpp
    enabled: false
    system: Talk like a pirate.
    config:
      model_path: files/link-to-chat.gguf   # a symlink to chat.gguf
      n_ctx: 99
      n_threads: 2
  - id: my-chat-alias
    provider: llama_cpp
    parent_model: my-chat
    config:
      model_path: files/link-to-chat.gguf
      n_ctx: 99
"""


@pytest.fixture()
def existing(models: list[FoundModel], tmp_path: Path) -> Path:
    (tmp_path / "files" / "link-to-chat.gguf").symlink_to(tmp_path / "files" / "chat.gguf")
    (tmp_path / "elsewhere.gguf").write_bytes((tmp_path / "files" / "chat.gguf").read_bytes())
    path = tmp_path / "models.yaml"
    path.write_text(EXISTING)
    return path


def _merge_once(existing: Path, models: list[FoundModel]) -> tuple[str, Path | None, list[str], list[str]]:
    document = read_existing(existing)
    by_path, _ = existing_ids_by_path(document)
    merge(document, _plan(models, by_path))
    text = document.render()
    check_round_trip(text, existing)
    backup = write(document, text) if document.changes_file(text) else None
    return text, backup, document.added, document.replaced


def test_merge_keeps_comments_and_entries_and_replaces_the_same_file(existing: Path, models: list[FoundModel]) -> None:
    text, backup, added, replaced = _merge_once(existing, models)
    assert (added, replaced) == (["embed", "demo-mlx"], ["my-chat"])
    for comment in (
        "# My models. This comment stays.",
        "# the one I use most",
        "# hand-written, not from a scan",
        "# relative to this file",
        "# a symlink to chat.gguf",
    ):
        assert comment in text
    registry = load_registry(existing)
    assert [m.id for m in registry.models] == ["mine", "my-chat", "my-chat-alias", "embed", "demo-mlx"]
    assert (registry.default_model, registry.max_loaded_models) == ("mine", 1)
    mine, my_chat, alias = registry.models[:3]
    assert isinstance(mine.config, LlamaCppConfig) and mine.config.n_ctx == 512  # not imported: untouched
    # the entry for the same resolved file is replaced in place: same id, the user's enabled/system kept,
    # the config is the import's (n_threads gone), the path is the scanned one
    assert not my_chat.enabled and my_chat.system == "Talk like a pirate."
    assert isinstance(my_chat.config, LlamaCppConfig)
    assert (my_chat.config.n_ctx, my_chat.config.n_threads) == (2048, None)
    assert my_chat.config.model_path == models[0].path
    assert isinstance(alias.config, LlamaCppConfig) and alias.config.n_ctx == 99  # aliases are not the import's
    assert backup is not None and backup.read_text() == EXISTING
    assert backup.name.startswith("models.yaml.") and backup.suffix == ".bak"


def test_merging_twice_gives_the_same_file_and_no_new_backup(existing: Path, models: list[FoundModel]) -> None:
    first, _, _, _ = _merge_once(existing, models)
    second, backup, added, replaced = _merge_once(existing, models)
    assert second == first == existing.read_text()
    assert backup is None and added == [] and replaced == ["my-chat", "embed", "demo-mlx"]
    assert len(list(existing.parent.glob("models.yaml.*.bak"))) == 1


def test_merge_into_a_file_with_a_clashing_id_gets_a_new_id(models: list[FoundModel], tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - {id: chat, provider: mlx, config: {model_path: files/demo-mlx}}\n")
    document = read_existing(path)
    by_path, taken = existing_ids_by_path(document)
    kept = [by_path.get(m.resolved) for m in models[:1]]
    ids = assign_ids(models[:1], taken, kept)
    assert ids == ["chat-2"]  # chat.gguf is not the folder 'chat' points at


def test_merge_refuses_a_file_that_is_not_a_registry(tmp_path: Path) -> None:
    from heylook_llm.importer.writer import WriteError

    path = tmp_path / "models.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(WriteError, match="expected a mapping"):
        read_existing(path)
    path.write_text("models: {a: 1}\n")
    with pytest.raises(WriteError, match="'models' is not a list"):
        read_existing(path)
    path.write_text("models: [\n")
    with pytest.raises(WriteError, match="not valid YAML"):
        read_existing(path)
