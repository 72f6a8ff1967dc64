"""`models list` and `models validate`: what a models.yaml serves, and every problem in it.

Validation is the server's own (load the YAML, `parse_registry`), plus what loading a model would find later:
that each model file exists and is of the kind its provider reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from heylook_llm.config.registry import (
    LlamaCppConfig,
    MLXConfig,
    ModelEntry,
    Registry,
    RegistryError,
    UpstreamConfig,
    parse_registry,
)
from heylook_llm.engine.features import capability_names, expected_features, shown_features
from heylook_llm.importer.detect import SHARD_NAME, starts_with_gguf_magic


@dataclass(frozen=True, slots=True)
class ModelRow:
    id: str
    provider: str
    size_bytes: int | None
    """On disk (all shards, all folder files); None when the files are missing."""
    capabilities: tuple[str, ...]
    enabled: bool


def files_size(entry: ModelEntry) -> int | None:
    if isinstance(entry.config, UpstreamConfig):
        return None  # its weights are on the upstream server
    path = entry.config.model_path
    if path.is_file():
        match = SHARD_NAME.match(path.name)
        if match is None:
            return path.stat().st_size
        count = int(match["count"])
        parts = [path.with_name(f"{match['prefix']}-{n:05d}-of-{count:05d}.gguf") for n in range(1, count + 1)]
        return sum(p.stat().st_size for p in parts if p.is_file())
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def capabilities(entry: ModelEntry) -> tuple[str, ...]:
    features = shown_features(expected_features(entry), entry, entry.config.template_override())
    return tuple(capability_names(features))


def model_rows(registry: Registry) -> list[ModelRow]:
    return [
        ModelRow(entry.id, entry.provider, files_size(entry), capabilities(entry), entry.enabled)
        for entry in registry.models
    ]


def _file_problems(entry: ModelEntry) -> list[str]:
    prefix = f"model '{entry.id}': field"
    config = entry.config
    problems: list[str] = []
    if isinstance(config, LlamaCppConfig):
        path = config.model_path
        if not path.exists():
            problems.append(f"{prefix} 'config.model_path': {path} does not exist")
        elif not path.is_file():
            problems.append(f"{prefix} 'config.model_path': {path} is not a file (llama_cpp needs a GGUF file)")
        elif not starts_with_gguf_magic(path):
            problems.append(f"{prefix} 'config.model_path': {path} is not a GGUF file")
        if config.mmproj_path is not None and not config.mmproj_path.is_file():
            problems.append(f"{prefix} 'config.mmproj_path': {config.mmproj_path} does not exist")
        if config.draft_model_path is not None and not config.draft_model_path.is_file():
            problems.append(f"{prefix} 'config.draft_model_path': {config.draft_model_path} does not exist")
        return problems
    assert isinstance(config, MLXConfig)
    for field_name, folder in (("model_path", config.model_path), ("draft_model_path", config.draft_model_path)):
        if folder is None:
            continue
        if not folder.is_dir():
            problems.append(f"{prefix} 'config.{field_name}': {folder} is not a folder (mlx needs a model folder)")
        elif not (folder / "config.json").is_file():
            problems.append(f"{prefix} 'config.{field_name}': {folder} has no config.json")
        elif not any(folder.glob("*.safetensors")):
            problems.append(f"{prefix} 'config.{field_name}': {folder} has no .safetensors weights")
    return problems


def _entries_one_by_one(data: dict[str, Any], path: Path) -> list[ModelEntry]:
    """The entries that are valid on their own, so that their files are checked even when others are not."""
    valid: list[ModelEntry] = []
    raw_models = data.get("models")
    for raw in raw_models if isinstance(raw_models, list) else []:
        try:
            valid.extend(parse_registry({"models": [raw]}, path).models)
        except RegistryError:
            continue
    return valid


def validate_file(path: Path) -> tuple[Registry | None, list[str]]:
    """(the registry when the server would load it, every problem found: schema first, then files)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [f"cannot read the file: {exc.strerror or exc}"]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return None, [f"not valid YAML: {exc}"]
    resolved = path.resolve()
    registry: Registry | None = None
    problems: list[str] = []
    try:
        registry = parse_registry(data, resolved)
        entries = registry.models
    except RegistryError as exc:
        problems.extend(exc.problems)
        entries = _entries_one_by_one(data, resolved) if isinstance(data, dict) else []
    for entry in entries:
        if entry.enabled:  # a disabled entry's files may be absent on purpose (an unplugged disk, a later download)
            problems.extend(_file_problems(entry))
    return (registry if not problems else None), problems
