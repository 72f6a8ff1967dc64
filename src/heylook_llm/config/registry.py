"""The models.yaml registry: schema, loading and validation with errors that name file, model and field."""

from __future__ import annotations

import difflib
import json
import unicodedata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    ByteSize,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from heylook_llm.config.durations import keep_alive_seconds, parse_duration_seconds
from heylook_llm.config.providers import (
    MIN_CONTEXT_TOKENS,
    PROVIDER_CONFIGS,
    SAMPLING_CONFIG_FIELDS,
    UPSTREAM_PROVIDERS,
    LlamaCppConfig,
    MLXConfig,
    UpstreamConfig,
    _Strict,
)

# The provider configs live in config/providers.py; most of the code base imports them from here.
__all__ = [
    "MAX_CONTEXT_TOKENS",
    "MAX_MODEL_ID_LENGTH",
    "MIN_CONTEXT_TOKENS",
    "PROVIDER_CONFIGS",
    "SAMPLING_CONFIG_FIELDS",
    "UPSTREAM_PROVIDERS",
    "LlamaCppConfig",
    "MLXConfig",
    "ModelEntry",
    "Provider",
    "Registry",
    "RegistryError",
    "UpstreamConfig",
    "budget_bytes",
    "load_registry",
    "model_id_problem",
    "parse_registry",
]

Provider = Literal["llama_cpp", "mlx", "openai_compatible", "ollama"]
MAX_MODEL_ID_LENGTH = 256
MAX_CONTEXT_TOKENS = 4 * 1024 * 1024
"""Largest num_ctx a request may ask for (Ollama's options, /api/create's parameters): a larger window's KV cache
could not be allocated on any machine this serves. models.yaml, written by its owner, is not bounded above."""


def model_id_problem(model_id: str) -> str | None:
    """Why `model_id` cannot name a model, or None when it can.

    Ids are written into models.yaml, logs and web pages, and look like paths (`namespace/model:tag`), so an id
    has at most 256 characters, no control or invisible formatting characters (NUL, newlines, bidi overrides),
    no leading or trailing space, no backslash, and no empty, `.` or `..` path segment (`/x`, `a//b`, `../x`)."""
    if not model_id:
        return "is empty"
    if len(model_id) > MAX_MODEL_ID_LENGTH:
        return f"is {len(model_id):,} characters long; at most {MAX_MODEL_ID_LENGTH}"
    bad = next((c for c in model_id if unicodedata.category(c).startswith("C")), None)
    if bad is not None:
        return f"holds the control or formatting character U+{ord(bad):04X}"
    if model_id != model_id.strip():
        return "starts or ends with a space"
    if "\\" in model_id:
        return "holds a backslash"
    if any(segment in ("", ".", "..") for segment in model_id.split("/")):
        return "has an empty, '.' or '..' path segment (a leading, trailing or doubled '/', or '..')"
    return None


class ModelEntry(_Strict):
    id: str = Field(min_length=1)
    provider: Provider
    enabled: bool = True
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    system: str | None = None
    """A system prompt used when a chat request brings none (Ollama's SYSTEM; set by /api/create)."""
    parent_model: str | None = None
    """The entry this one was copied or created from through the API (shown by Ollama's /api/show)."""
    pin: bool = False
    """Never evicted to make room nor unloaded by its keep-alive (an explicit unload still unloads it)."""
    preload: bool = False
    """Loaded at start-up (several models may be)."""
    keep_alive: float | None = None
    """Default keep-alive of this model in seconds (`inf`: for ever) when a request does not say; None: the
    server's --keep-alive. Written as a duration ("10m", -1 for ever)."""
    config: LlamaCppConfig | MLXConfig | UpstreamConfig

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _parse_keep_alive(cls, value: Any) -> Any:
        return None if value is None else keep_alive_seconds(value)

    @property
    def upstream(self) -> UpstreamConfig | None:
        """The upstream's settings when another server runs this model (provider openai_compatible or ollama)."""
        return self.config if isinstance(self.config, UpstreamConfig) else None

    @field_validator("id")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        problem = model_id_problem(value)
        if problem is not None:
            raise ValueError(f"the id {problem}")
        return value

    def load_key(self) -> str:
        """Entries with equal keys share one loaded copy of the weights: they differ only in sampling defaults
        and system prompt (aliases and variants made by Ollama's /api/copy and /api/create)."""
        load_fields = self.config.model_dump(mode="json", exclude=set(SAMPLING_CONFIG_FIELDS))
        return json.dumps({"provider": self.provider, **load_fields}, sort_keys=True)


class Registry(_Strict):
    models: list[ModelEntry] = Field(default_factory=list)
    default_model: str | None = None
    max_loaded_models: int = Field(default=2, ge=1)
    memory_budget: int | str | None = None
    """Memory the loaded models may use together: bytes, a size ("12GiB", "8GB") or a share of the machine's
    memory ("60%"); None: a safe share of the memory available at start-up (engine/memory.py)."""
    min_residency: float = Field(default=0.0, ge=0.0)
    """Seconds a model loaded for a request stays before another model may evict it (the A/B/A swap guard);
    written as a duration ("30s")."""
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _valid_budget(cls, value: Any) -> Any:
        if value is not None:
            budget_bytes(value, total_bytes=1 << 40)
        return value

    @field_validator("min_residency", mode="before")
    @classmethod
    def _residency_seconds(cls, value: Any) -> Any:
        return parse_duration_seconds(value) if isinstance(value, str) else value

    def memory_budget_bytes(self, total_bytes: int) -> int | None:
        """`memory_budget` in bytes for a machine with `total_bytes` of memory (None: not set)."""
        return None if self.memory_budget is None else budget_bytes(self.memory_budget, total_bytes)

    def enabled(self) -> list[ModelEntry]:
        return [m for m in self.models if m.enabled]

    def get(self, model_id: str) -> ModelEntry | None:
        for m in self.models:
            if m.id == model_id and m.enabled:
                return m
        return None


_BYTE_SIZE = TypeAdapter(ByteSize)


def budget_bytes(value: Any, total_bytes: int) -> int:
    """A memory budget in bytes: a whole number of bytes, a size ("12GiB", "500MB") or a percentage of
    `total_bytes` ("60%"). ValueError names what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("memory_budget must be bytes, a size such as '12GiB' or a percentage such as '60%'")
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"'{value}' is not a percentage") from None
        if not 0 < share <= 100:
            raise ValueError(f"'{value}': a percentage of memory must be more than 0 and at most 100")
        return int(total_bytes * share / 100)
    try:
        size = int(_BYTE_SIZE.validate_python(value))
    except ValidationError:
        raise ValueError(f"'{value}' is not a size (examples: 12GiB, 500MB, 60%)") from None
    if size <= 0:
        raise ValueError("memory_budget must be more than 0 bytes")
    return size


class RegistryError(Exception):
    """models.yaml is unreadable or invalid; `problems` lists each one as 'file: model 'id': field: message'."""

    def __init__(self, path: Path | None, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        where = str(path) if path else "models.yaml"
        super().__init__(f"{where} is invalid:\n  " + "\n  ".join(problems))


def _field_problem(prefix: str, err: Any, known: list[str]) -> str:
    loc = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(known))}"
        return f"{prefix}field '{loc}': unknown key{hint}"
    return f"{prefix}field '{loc}': {err['msg']}"


def _validate_model(raw: Any, index: int, problems: list[str]) -> ModelEntry | None:
    if not isinstance(raw, dict):
        problems.append(f"models[{index}]: expected a mapping, got {type(raw).__name__}")
        return None
    model_id = raw.get("id")
    if isinstance(model_id, bool | int | float):
        # YAML 1.1 reads unquoted on/off/yes/no/true/false as booleans and digits as numbers.
        problems.append(
            f"models[{index}]: field 'id': {model_id!r} is not a string; quote it in the YAML (id: \"{model_id}\")"
        )
        return None
    prefix = f"model '{model_id}': " if model_id else f"models[{index}] (no id): "
    entry_keys = list(ModelEntry.model_fields)
    provider = raw.get("provider")
    config_cls = PROVIDER_CONFIGS.get(provider) if isinstance(provider, str) else None
    if config_cls is None:
        problems.append(f"{prefix}field 'provider': must be one of {', '.join(PROVIDER_CONFIGS)}, got {provider!r}")
        return None
    try:
        config = config_cls.model_validate(raw.get("config") or {})
    except ValidationError as exc:
        for err in exc.errors():
            located: dict[str, Any] = {**err, "loc": ("config", *err["loc"])}
            problems.append(_field_problem(prefix, located, list(config_cls.model_fields)))
        config = None
    try:
        entry_raw = {k: v for k, v in raw.items() if k != "config"}
        entry = ModelEntry.model_validate({**entry_raw, "config": config or {"model_path": "."}}, strict=False)
    except ValidationError as exc:
        for err in exc.errors():
            if err["loc"] and err["loc"][0] == "config":
                continue
            problems.append(_field_problem(prefix, err, entry_keys))
        return None
    if config is None:
        return None
    entry.config = config
    return entry


def parse_registry(data: Any, source: Path | None) -> Registry:
    """Validate already-parsed YAML data; relative paths resolve against the file's folder."""
    where = source or Path("models.yaml")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RegistryError(source, [f"top level: expected a mapping with 'models', got {type(data).__name__}"])
    problems: list[str] = []
    known_top = ["models", "default_model", "max_loaded_models", "memory_budget", "min_residency"]
    for key in data:
        if key not in known_top:
            close = difflib.get_close_matches(str(key), known_top, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known_top)}"
            problems.append(f"top level: field '{key}': unknown key{hint}")
    raw_models = data.get("models") or []
    if not isinstance(raw_models, list):
        problems.append("top level: field 'models': expected a list of models")
        raw_models = []
    models: list[ModelEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_models):
        entry = _validate_model(raw, index, problems)
        if entry is None:
            continue
        if entry.id in seen:
            problems.append(f"model '{entry.id}': field 'id': duplicate id (ids must be unique)")
            continue
        seen.add(entry.id)
        entry.config.resolve_paths(where.parent)
        models.append(entry)
    try:
        registry = Registry(
            models=models,
            default_model=data.get("default_model"),
            max_loaded_models=data.get("max_loaded_models", 2),
            memory_budget=data.get("memory_budget"),
            min_residency=data.get("min_residency", 0.0),
            source=source,
        )
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(f"top level: {_field_problem('', err, known_top)}")
        raise RegistryError(source, problems) from None
    if registry.default_model is not None and registry.get(registry.default_model) is None and not problems:
        problems.append(f"top level: field 'default_model': '{registry.default_model}' is not an enabled model id")
    if problems:
        raise RegistryError(source, problems)
    return registry


def load_registry(path: Path) -> Registry:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(path, [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(path, [f"not valid YAML: {exc}"]) from None
    return parse_registry(data, path.resolve())
