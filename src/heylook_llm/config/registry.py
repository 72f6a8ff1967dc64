"""The models.yaml registry: schema, loading and validation with errors that name file, model and field."""

from __future__ import annotations

import difflib
import json
import unicodedata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from heylook_llm.config.chat_formats import CHAT_FORMATS, REASONING_FORMATS, TOOL_FORMATS
from heylook_llm.types import SamplingOverrides

Provider = Literal["llama_cpp", "mlx"]
MAX_MODEL_ID_LENGTH = 256
MIN_CONTEXT_TOKENS = 16
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _SamplingDefaults(_Strict):
    temperature: float | None = Field(default=None, ge=0.0, le=5.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    tool_format: str | None = None
    """The model's tool-call syntax (see TOOL_FORMATS); unset: detected from its chat template."""

    @field_validator("tool_format")
    @classmethod
    def _known_tool_format(cls, value: str | None) -> str | None:
        if value is not None and value not in TOOL_FORMATS:
            raise ValueError(f"unknown tool_format '{value}' (known: {', '.join(TOOL_FORMATS)})")
        return value

    reasoning_format: str | None = None
    """How the model marks its reasoning (see REASONING_FORMATS; `none`: no reasoning); unset: detected from its
    chat template."""
    max_reasoning_tokens: int | None = Field(default=None, ge=0)
    """Default reasoning budget: past it the server closes the reasoning and the model answers (docs/reasoning.md)."""

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("reasoning_format")
    @classmethod
    def _known_reasoning_format(cls, value: str | None) -> str | None:
        if value is not None and value not in REASONING_FORMATS:
            raise ValueError(f"unknown reasoning_format '{value}' (known: {', '.join(REASONING_FORMATS)})")
        return value


class LlamaCppConfig(_SamplingDefaults):
    model_path: Path
    n_ctx: int = Field(default=4096, ge=MIN_CONTEXT_TOKENS)
    n_gpu_layers: int = -1
    n_threads: int | None = Field(default=None, ge=1)
    n_threads_batch: int | None = Field(default=None, ge=1)
    flash_attn: bool | None = None
    n_batch: int = Field(default=512, ge=1)
    use_mmap: bool = True
    chat_format: str | None = None
    chat_template: str | None = None
    embedding: bool = False
    mmproj_path: Path | None = None
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    parallel: int = Field(default=4, ge=1, le=64)
    """Sequence slots: requests generated at once in one batch. KV memory is parallel x n_ctx tokens."""
    prefix_cache: bool = True
    """Reuse the longest matching prompt prefix left in a free slot's KV cache."""

    @field_validator("chat_format")
    @classmethod
    def _known_chat_format(cls, value: str | None) -> str | None:
        if value is not None and value not in CHAT_FORMATS:
            close = difflib.get_close_matches(value, CHAT_FORMATS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown chat_format '{value}' (known: {', '.join(CHAT_FORMATS)}){hint}")
        return value

    @model_validator(mode="after")
    def _one_template_source(self) -> LlamaCppConfig:
        if self.chat_format is not None and self.chat_template is not None:
            raise ValueError("set either chat_format or chat_template, not both")
        return self

    def sampling_defaults(self) -> SamplingOverrides:
        return SamplingOverrides(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            max_tokens=self.max_tokens,
            stop=self.stop,
        )

    def context_size(self) -> int | None:
        """The context window set in models.yaml (None: the model's own)."""
        return self.n_ctx

    def template_override(self) -> str | None:
        """The chat template models.yaml sets instead of the model file's (None: the file's)."""
        if self.chat_template is not None:
            return self.chat_template
        return CHAT_FORMATS[self.chat_format] if self.chat_format is not None else None

    def resolve_paths(self, base: Path) -> None:
        self.model_path = _resolve(base, self.model_path)
        if self.mmproj_path is not None:
            self.mmproj_path = _resolve(base, self.mmproj_path)


class MLXConfig(_SamplingDefaults):
    """An mlx-lm model folder; docs/mlx.md describes every field."""

    model_path: Path
    vision: bool = False
    draft_model_path: Path | None = None
    num_draft_tokens: int = Field(default=2, ge=1)
    cache_type: Literal["standard", "rotating", "quantized"] = "standard"
    max_kv_size: int | None = Field(default=None, ge=1)
    kv_bits: int | None = Field(default=None, ge=2, le=8)
    kv_group_size: int = Field(default=64, ge=1)
    quantized_kv_start: int = Field(default=0, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    repetition_context_size: int | None = Field(default=None, ge=1)
    parallel: int = Field(default=4, ge=1, le=64)
    """Requests generated at once in one batch (mlx-lm's BatchGenerator); 1 runs them one at a time."""

    @model_validator(mode="after")
    def _fields_fit_cache_type(self) -> MLXConfig:
        # A setting that generation would not use is a mistake to report, not to ignore.
        if self.cache_type == "rotating" and self.max_kv_size is None:
            raise ValueError("cache_type rotating needs max_kv_size (how many tokens the cache keeps)")
        if self.max_kv_size is not None and self.cache_type != "rotating":
            raise ValueError("max_kv_size applies only to cache_type rotating")
        if self.cache_type == "quantized" and self.kv_bits is None:
            raise ValueError("cache_type quantized needs kv_bits (bits per cached value, e.g. 4 or 8)")
        quantized_only = [f for f in ("kv_bits", "kv_group_size", "quantized_kv_start") if f in self.model_fields_set]
        if quantized_only and self.cache_type != "quantized":
            verb = "applies" if len(quantized_only) == 1 else "apply"
            raise ValueError(f"{', '.join(quantized_only)} {verb} only to cache_type quantized")
        if "num_draft_tokens" in self.model_fields_set and self.draft_model_path is None:
            raise ValueError("num_draft_tokens applies only with draft_model_path (speculative decoding)")
        # mlx-lm's batch generator has no speculative decoding, no attention-sink rotating cache and no KV
        # quantization, so those models run one sequence at a time; asking for more would be ignored.
        if "parallel" in self.model_fields_set and self.parallel > 1:
            if self.draft_model_path is not None:
                raise ValueError("parallel > 1 cannot be combined with draft_model_path (speculative decoding)")
            if self.cache_type != "standard":
                raise ValueError(
                    f"parallel > 1 needs cache_type standard (mlx-lm cannot batch a {self.cache_type} cache)"
                )
        return self

    def sampling_defaults(self) -> SamplingOverrides:
        return SamplingOverrides(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repetition_penalty,
            repeat_last_n=self.repetition_context_size,
            max_tokens=self.max_tokens,
            stop=self.stop,
        )

    def context_size(self) -> int | None:
        """MLX models use their own context window (a rotating cache bounds memory, not the window)."""
        return None

    def template_override(self) -> str | None:
        return None

    def resolve_paths(self, base: Path) -> None:
        self.model_path = _resolve(base, self.model_path)
        if self.draft_model_path is not None:
            self.draft_model_path = _resolve(base, self.draft_model_path)


PROVIDER_CONFIGS: dict[str, type[LlamaCppConfig] | type[MLXConfig]] = {
    "llama_cpp": LlamaCppConfig,
    "mlx": MLXConfig,
}


SAMPLING_CONFIG_FIELDS = (
    *_SamplingDefaults.model_fields,
    "repeat_penalty",
    "repetition_penalty",
    "repetition_context_size",
)
"""Config fields that only set per-request defaults; changing them needs no reload of the weights."""


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
    config: LlamaCppConfig | MLXConfig

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
    source: Path | None = Field(default=None, exclude=True)

    def enabled(self) -> list[ModelEntry]:
        return [m for m in self.models if m.enabled]

    def get(self, model_id: str) -> ModelEntry | None:
        for m in self.models:
            if m.id == model_id and m.enabled:
                return m
        return None


class RegistryError(Exception):
    """models.yaml is unreadable or invalid; `problems` lists each one as 'file: model 'id': field: message'."""

    def __init__(self, path: Path | None, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        where = str(path) if path else "models.yaml"
        super().__init__(f"{where} is invalid:\n  " + "\n  ".join(problems))


def _resolve(base: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


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
    known_top = ["models", "default_model", "max_loaded_models"]
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
