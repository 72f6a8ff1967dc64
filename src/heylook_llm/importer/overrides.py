"""`--override KEY=VALUE`: one setting for every imported model, typed and checked against the registry schema.

VALUE is read as YAML, as it would be in models.yaml (`0.5` a number, `true` a boolean, `[a, b]` a list, `null`
removes the key so the server's default applies), then checked by the same pydantic fields the server loads
with. A key may be a config field of either provider (it then applies to that provider's models only) or one of
the entry fields below. Combinations (cache_type with its settings) are checked when each model's whole config
is validated.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from heylook_llm.config.registry import PROVIDER_CONFIGS, ModelEntry

ENTRY_KEYS = ("enabled", "description", "tags", "system")
"""Entry fields (beside `config`) an override may set."""
PER_MODEL_KEYS = frozenset(
    {"id", "provider", "config", "parent_model", "model_path", "mmproj_path", "draft_model_path"}
)
"""Fields that differ per model: found by the import, never set for all models at once."""


class OverrideError(ValueError):
    """One or more overrides are malformed, unknown or of the wrong type; `problems` says which and why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Override:
    key: str
    value: Any
    """The typed value; None removes the key."""
    raw: str
    """As given on the command line, for messages."""
    providers: frozenset[str]
    """The providers whose config has this key; empty for an entry field."""

    @property
    def is_entry_field(self) -> bool:
        return not self.providers

    def applies_to(self, provider: str) -> bool:
        return self.is_entry_field or provider in self.providers


def _local_configs() -> dict[str, Any]:
    """The configs of providers an import writes: local files (upstream providers have no model_path)."""
    return {p: cls for p, cls in PROVIDER_CONFIGS.items() if "model_path" in cls.model_fields}


def config_keys() -> list[str]:
    keys: set[str] = set()
    for cls in _local_configs().values():
        keys.update(cls.model_fields)
    return sorted(keys - PER_MODEL_KEYS)


def known_keys() -> list[str]:
    return sorted([*config_keys(), *ENTRY_KEYS])


def _nearest(key: str) -> str:
    close = difflib.get_close_matches(key, known_keys(), n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"known keys: {', '.join(known_keys())}"


def _messages(exc: ValidationError, key: str) -> list[str]:
    """The errors about `key` itself; errors about combinations (no location) wait for the whole config."""
    return [str(err["msg"]) for err in exc.errors() if err["loc"] and err["loc"][0] == key]


def _typed_config_value(key: str, value: Any) -> tuple[Any, frozenset[str], list[str]]:
    providers: list[str] = []
    problems: list[str] = []
    typed = value
    for provider, cls in _local_configs().items():
        field = cls.model_fields.get(key)
        if field is None:
            continue
        providers.append(provider)
        try:
            checked = cls.model_validate({"model_path": "x", key: value})
            typed = checked.model_dump(mode="json")[key]
        except ValidationError as exc:
            messages = _messages(exc, key)
            if messages:
                problems.extend(f"{provider}: {m}" if len(providers) > 1 else m for m in messages)
                continue
            # The value is fine, only its combination with defaults is not: type it by the field alone.
            adapter: TypeAdapter[Any] = TypeAdapter(field.annotation or Any)
            typed = adapter.dump_python(adapter.validate_python(value), mode="json")
    return typed, frozenset(providers), problems


def _typed_entry_value(key: str, value: Any) -> tuple[Any, list[str]]:
    probe = {"id": "x", "provider": "llama_cpp", "config": {"model_path": "x"}, key: value}
    try:
        checked = ModelEntry.model_validate(probe)
    except ValidationError as exc:
        return value, _messages(exc, key)
    return checked.model_dump(mode="json")[key], []


def _typed(key: str, value: Any) -> tuple[Any, frozenset[str], list[str]]:
    if key in ENTRY_KEYS:
        typed, problems = _typed_entry_value(key, value)
        return typed, frozenset(), problems
    return _typed_config_value(key, value)


def parse_override(text: str) -> Override:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise OverrideError([f"--override '{text}': expected KEY=VALUE (for example temperature=0.5)"])
    if key in PER_MODEL_KEYS:
        raise OverrideError([f"--override {key}: set per model by the import; edit models.yaml to change it"])
    if key not in known_keys():
        raise OverrideError([f"--override {key}: unknown key; {_nearest(key)}"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise OverrideError([f"--override {key}={raw}: the value is not valid YAML ({exc})"]) from None
    if value is None:
        providers = frozenset(p for p, cls in _local_configs().items() if key in cls.model_fields)
        return Override(key, None, raw, providers)
    typed, providers, problems = _typed(key, value)
    if problems and not isinstance(value, str):
        # YAML reads `yes` or `12:30` as a boolean or a number; for a text field the text itself is meant.
        as_text = _typed(key, raw.strip())
        if not as_text[2]:
            typed, providers, problems = as_text
    if problems:
        raise OverrideError([f"--override {key}={raw}: {p}" for p in problems])
    return Override(key, typed, raw, providers)


def parse_overrides(texts: list[str]) -> list[Override]:
    """Every override, or an OverrideError listing every bad one; a key given twice keeps the last value."""
    parsed: dict[str, Override] = {}
    problems: list[str] = []
    for text in texts:
        try:
            override = parse_override(text)
        except OverrideError as exc:
            problems.extend(exc.problems)
            continue
        parsed.pop(override.key, None)
        parsed[override.key] = override
    if problems:
        raise OverrideError(problems)
    return list(parsed.values())
