"""models.yaml out: a new file, or imported entries merged into an existing one with its comments kept.

ruamel.yaml is used because it round-trips YAML: comments, key order and quoting of the existing file survive
an edit, which PyYAML (the server's reader) cannot do. Whatever is written is read back with PyYAML and checked
by the server's own `parse_registry` before it touches the disk, so the import never writes a file the server
would refuse. Strings PyYAML would read as something else (`yes`, `off`, `12:30`) are quoted.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError as RuamelYAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.util import load_yaml_guess_indent

from heylook_llm.config.registry import Registry, RegistryError, parse_registry
from heylook_llm.importer.profiles import PlannedEntry

log = logging.getLogger(__name__)

HEADER = (
    "Written by `heylookllm import` (profile {profile}); docs/import.md explains every value.\n"
    "Edit freely: `heylookllm import --merge` keeps comments and the entries it did not import."
)


class WriteError(Exception):
    """The existing file cannot be merged into, or the output cannot be written."""


@dataclass(slots=True)
class Document:
    """A models.yaml being built: the ruamel tree and how to lay it out."""

    tree: CommentedMap
    path: Path
    original_text: str | None = None
    indent: tuple[int, int, int] = (2, 4, 2)
    """ruamel's (mapping, sequence, offset): `  - id: x` with 2-space mappings, unless the file used another."""
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    def render(self) -> str:
        dumper = YAML()
        mapping, sequence, offset = self.indent
        dumper.indent(mapping=mapping, sequence=sequence, offset=offset)
        dumper.width = 4096  # long paths and descriptions stay on one line
        dumper.preserve_quotes = True
        out = io.StringIO()
        dumper.dump(self.tree, out)
        return out.getvalue()

    def changes_file(self, text: str) -> bool:
        """Whether writing `text` (this document rendered) would change the file."""
        return self.original_text is None or text != self.original_text


def _yaml_safe(value: Any) -> Any:
    """Quote strings PyYAML (YAML 1.1, as the server reads) would not read back as the same string."""
    if isinstance(value, str):
        try:
            same = yaml.safe_load(value) == value
        except yaml.YAMLError:
            same = False
        return value if same else DoubleQuotedScalarString(value)
    if isinstance(value, dict):
        mapping = CommentedMap()
        for key, item in value.items():
            mapping[key] = _yaml_safe(item)
        return mapping
    if isinstance(value, list):
        return CommentedSeq([_yaml_safe(item) for item in value])
    return value


def entry_tree(planned: PlannedEntry) -> CommentedMap:
    entry = CommentedMap()
    entry["id"] = _yaml_safe(planned.id)
    entry["provider"] = planned.provider
    entry["description"] = _yaml_safe(planned.description)
    tags = _yaml_safe(planned.tags)
    tags.fa.set_flow_style()
    entry["tags"] = tags
    for key, value in planned.entry_fields.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = _yaml_safe(value)
    entry["config"] = _yaml_safe(planned.config)
    return entry


def new_document(path: Path, planned: list[PlannedEntry], profile: str, max_loaded_models: int = 2) -> Document:
    tree = CommentedMap()
    enabled = [p for p in planned if p.entry_fields.get("enabled", True) is not False]
    chat = [p for p in enabled if not p.found.embedding]
    if chat or enabled:
        tree["default_model"] = _yaml_safe((chat or enabled)[0].id)
    tree["max_loaded_models"] = max_loaded_models
    models = CommentedSeq([entry_tree(p) for p in planned])
    tree["models"] = models
    tree.yaml_set_start_comment(HEADER.format(profile=profile))
    return Document(tree=tree, path=path, added=[p.id for p in planned])


def resolved_model_path(raw: Any, base: Path) -> Path | None:
    if not isinstance(raw, str) or not raw:
        return None
    path = Path(raw).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def read_existing(path: Path) -> Document:
    """The file to merge into; WriteError when it is not YAML with a `models` list."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WriteError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        _, sequence, offset = load_yaml_guess_indent(text)
        loader = YAML()
        loader.preserve_quotes = True
        tree = loader.load(text)
    except RuamelYAMLError as exc:
        raise WriteError(f"{path} is not valid YAML, so it cannot be merged into: {exc}") from None
    if tree is None:  # empty, or only comments: keep those as the new tree's heading
        tree = CommentedMap()
        heading = [line.lstrip()[1:].removeprefix(" ") for line in text.splitlines() if line.lstrip().startswith("#")]
        if heading:
            tree.yaml_set_start_comment("\n".join(heading))
    if not isinstance(tree, CommentedMap):
        raise WriteError(f"{path}: expected a mapping with 'models' at the top level")
    if tree.get("models") is None:
        tree["models"] = CommentedSeq()
    if not isinstance(tree["models"], CommentedSeq):
        raise WriteError(f"{path}: 'models' is not a list")
    # The guess gives the sequence indent and the dash's offset; mappings inside items sit after the dash.
    indent = (sequence - offset if offset else sequence or 2, sequence or 2, offset or 0) if sequence else (2, 4, 2)
    return Document(tree=tree, path=path, original_text=text, indent=indent)


def existing_ids_by_path(document: Document) -> tuple[dict[Path, str], list[str]]:
    """(resolved model path -> id, all ids) of the entries already in the file. Aliases and variants made through
    the API (`parent_model` set) share their parent's weights: they are never matched, so never replaced."""
    by_path: dict[Path, str] = {}
    ids: list[str] = []
    for entry in document.tree["models"]:
        if not isinstance(entry, dict):
            continue
        model_id = entry.get("id")
        if isinstance(model_id, str):
            ids.append(model_id)
        config = entry.get("config")
        if entry.get("parent_model") is not None or not isinstance(config, dict) or not isinstance(model_id, str):
            continue
        resolved = resolved_model_path(config.get("model_path"), document.path.resolve().parent)
        if resolved is not None:
            by_path.setdefault(resolved, model_id)
    return by_path, ids


def _update_mapping(target: CommentedMap, new: CommentedMap) -> None:
    """Make `target` hold `new`'s keys and values; untouched keys keep their comments, order and quoting."""
    for key in [k for k in target if k not in new]:
        del target[key]
    for key, value in new.items():
        if key not in target or target[key] != value:
            target[key] = value


def merge(document: Document, planned: list[PlannedEntry]) -> None:
    """Entries whose model path matches one in the file replace it in place (id, enabled, system and any other
    field the import does not write are kept; the config is replaced); the others are appended."""
    models: CommentedSeq = document.tree["models"]
    positions = {
        entry.get("id"): index
        for index, entry in enumerate(models)
        if isinstance(entry, dict) and entry.get("parent_model") is None
    }
    for item in planned:
        new = entry_tree(item)
        index = positions.get(item.id)
        if index is None:
            models.append(new)
            document.added.append(item.id)
            continue
        target = models[index]
        for key in ("provider", "description", "tags", *item.entry_fields):
            if key not in new:
                target.pop(key, None)  # an override of null removes the field
            elif target.get(key) != new[key]:
                target[key] = new[key]
        if isinstance(target.get("config"), CommentedMap):
            _update_mapping(target["config"], new["config"])
        else:
            target["config"] = new["config"]
        document.replaced.append(item.id)


def check_round_trip(text: str, path: Path) -> Registry:
    """Read `text` as the server will (PyYAML, then parse_registry); RegistryError lists every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(path, [f"not valid YAML: {exc}"]) from None
    return parse_registry(data, path.resolve())


def _backup_path(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.{stamp}.bak")
    number = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{stamp}-{number}.bak")
        number += 1
    return candidate


def write(document: Document, text: str) -> Path | None:
    """Write atomically; an existing file is kept as a timestamped backup first. Returns the backup's path."""
    path = document.path
    backup: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            backup = _backup_path(path)
            backup.write_bytes(path.read_bytes())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    log.info("wrote %s%s", path, f" (previous version in {backup})" if backup else "")
    return backup
