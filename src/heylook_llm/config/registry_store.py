"""Edits of models.yaml made through the API (Ollama's copy, create and delete).

Each edit reads the file as it is now, changes the list of entries, validates the result with the same parser
as start-up, keeps the previous file as `models.yaml.bak` and replaces the file atomically. Model files are
never touched. YAML comments do not survive a rewrite (the backup keeps them).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import yaml

from heylook_llm.config.registry import Registry, RegistryError, parse_registry
from heylook_llm.errors import InvalidRequest, ModelNotFound
from heylook_llm.types import SamplingOverrides

log = logging.getLogger(__name__)

_HEADER = (
    "# Edited by heylookllm through its API (copy, create or delete); the previous version is in {backup}.\n"
    "# Comments are not kept across such edits.\n"
)


class RegistryStore:
    """The models.yaml a registry was loaded from, edited one change at a time (callers serialize calls)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup_path = path.with_name(path.name + ".bak")

    def copy_entry(self, source_id: str, new_id: str) -> Registry:
        """An alias: the source's entry under another id (the router shares the loaded weights)."""
        data, models = self._read()
        source = _find(models, source_id)
        _refuse_existing(models, new_id)
        alias = copy.deepcopy(source)
        alias["id"] = new_id
        alias["parent_model"] = source_id
        alias["description"] = f"Copy of {source_id}" + (
            f": {source['description']}" if source.get("description") else ""
        )
        models.append(_ordered(alias))
        return self._write(data, f"copied '{source_id}' to '{new_id}'")

    def add_variant(
        self,
        base_id: str,
        new_id: str,
        *,
        system: str | None = None,
        sampling: SamplingOverrides | None = None,
        chat_template: str | None = None,
        context_length: int | None = None,
    ) -> Registry:
        """A variant of `base_id`: the same weights with another system prompt, sampling defaults or template.

        Replacing an existing variant of the same name is allowed (Ollama's create overwrites); replacing an
        unrelated model is not.
        """
        data, models = self._read()
        base = copy.deepcopy(_find(models, base_id))
        existing = next((m for m in models if isinstance(m, dict) and m.get("id") == new_id), None)
        if existing is not None and new_id != base_id and existing.get("parent_model") != base_id:
            raise InvalidRequest(
                f"a model named '{new_id}' already exists and is not a variant of '{base_id}'; delete it first",
                param="model",
            )
        variant = base
        variant["id"] = new_id
        variant["description"] = f"Variant of {base_id}"
        # Re-creating a model from itself (new defaults for the same name) keeps its own parent.
        parent = base.get("parent_model") if new_id == base_id else base_id
        if parent is None:
            variant.pop("parent_model", None)
        else:
            variant["parent_model"] = parent
        config: dict[str, Any] = variant.setdefault("config", {})
        if system is not None:
            variant["system"] = system
        if sampling is not None:
            config.update(_sampling_config(str(variant.get("provider")), sampling))
        if chat_template is not None:
            if variant.get("provider") != "llama_cpp":
                raise InvalidRequest("a template can only be set on llama.cpp models", param="template")
            config.pop("chat_format", None)
            config["chat_template"] = chat_template
        if context_length is not None:
            if variant.get("provider") != "llama_cpp":
                raise InvalidRequest("num_ctx can only be set on llama.cpp models", param="parameters.num_ctx")
            config["n_ctx"] = context_length
        if existing is not None:
            models[models.index(existing)] = _ordered(variant)
        else:
            models.append(_ordered(variant))
        return self._write(data, f"created '{new_id}' from '{base_id}'")

    def remove_entry(self, model_id: str) -> Registry:
        data, models = self._read()
        entry = _find(models, model_id)
        models.remove(entry)
        if data.get("default_model") == model_id:
            log.warning("'%s' was the default model; models.yaml now has no default_model", model_id)
            data.pop("default_model")
        return self._write(data, f"removed '{model_id}'")

    def _read(self) -> tuple[dict[str, Any], list[Any]]:
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidRequest(f"cannot read {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidRequest(f"{self.path} does not hold a mapping with 'models'")
        models = data.setdefault("models", [])
        if not isinstance(models, list):
            raise InvalidRequest(f"{self.path}: 'models' is not a list")
        return data, models

    def _write(self, data: dict[str, Any], change: str) -> Registry:
        try:
            registry = parse_registry(data, self.path.resolve())
        except RegistryError as exc:
            raise InvalidRequest(f"the change would make models.yaml invalid: {'; '.join(exc.problems)}") from exc
        previous = self.path.read_bytes()
        self.backup_path.write_bytes(previous)
        text = _HEADER.format(backup=self.backup_path.name) + yaml.safe_dump(
            data, sort_keys=False, allow_unicode=True, width=120
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)
        log.info("models.yaml: %s (%s)", change, self.path)
        return registry


_KEY_ORDER = ("id", "provider", "enabled", "description", "parent_model", "system", "tags", "config")


def _ordered(entry: dict[str, Any]) -> dict[str, Any]:
    """Keys in the order people write them, so that the rewritten file stays easy to read."""
    known = {key: entry[key] for key in _KEY_ORDER if key in entry}
    return {**known, **{k: v for k, v in entry.items() if k not in known}}


def _find(models: list[Any], model_id: str) -> dict[str, Any]:
    for raw in models:
        if isinstance(raw, dict) and raw.get("id") == model_id and raw.get("enabled", True):
            return raw
    ids = [str(m.get("id")) for m in models if isinstance(m, dict) and m.get("enabled", True)]
    raise ModelNotFound(model_id, ids)


def _refuse_existing(models: list[Any], model_id: str) -> None:
    if any(isinstance(m, dict) and m.get("id") == model_id for m in models):
        raise InvalidRequest(f"a model named '{model_id}' already exists; delete it first", param="destination")


def _sampling_config(provider: str, sampling: SamplingOverrides) -> dict[str, Any]:
    """models.yaml config fields for sampling defaults; values models.yaml cannot hold are refused by name."""
    values: dict[str, Any] = {}
    for name in ("temperature", "top_p", "top_k", "min_p", "max_tokens", "stop"):
        value = getattr(sampling, name)
        if value is not None:
            values[name] = value
    if sampling.repeat_penalty is not None:
        values["repeat_penalty" if provider == "llama_cpp" else "repetition_penalty"] = sampling.repeat_penalty
    if sampling.repeat_last_n is not None:
        if provider != "mlx":
            raise InvalidRequest("repeat_last_n cannot be stored for a llama.cpp model", param="parameters")
        values["repetition_context_size"] = sampling.repeat_last_n
    refused = [
        name
        for name in ("presence_penalty", "frequency_penalty", "seed", "logit_bias")
        if getattr(sampling, name) is not None
    ]
    if refused:
        raise InvalidRequest(f"models.yaml cannot hold {', '.join(refused)} as defaults", param="parameters")
    return values
