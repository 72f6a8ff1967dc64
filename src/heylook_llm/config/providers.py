"""The per-provider `config` blocks of models.yaml: llama.cpp, MLX and upstream servers, their fields and checks."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from heylook_llm.config.chat_formats import CHAT_FORMATS, REASONING_FORMATS, TOOL_FORMATS
from heylook_llm.types import SamplingOverrides

KvCacheType = Literal["f16", "q8_0", "q4_0"]
UPSTREAM_PROVIDERS = ("openai_compatible", "ollama")
"""Providers whose models run on another server (engine/upstream): outside the LRU and the memory budget."""
MIN_CONTEXT_TOKENS = 16


def _resolve(base: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


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


class PromptLookup(_Strict):
    """Speculative decoding with drafts taken from the context itself (prompt-lookup, n-gram) for GGUF models."""

    ngram_max: int = Field(default=3, ge=1, le=16)
    """Longest n-gram of the context's end searched for earlier in the context; longer matches are tried first."""
    ngram_min: int = Field(default=2, ge=1, le=16)
    """Shortest n-gram tried; 1 drafts after any repeated token (more guesses, fewer of them right)."""
    num_draft_tokens: int = Field(default=8, ge=1, le=64)
    """Tokens proposed per step: the continuation of the match."""

    @model_validator(mode="after")
    def _ordered(self) -> PromptLookup:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min ({self.ngram_min}) is larger than ngram_max ({self.ngram_max})")
        return self


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
    rerank: bool = False
    """A reranker GGUF (rank pooling, a classification head): serves /v1/rerank only (docs/rerank.md)."""
    mmproj_path: Path | None = None
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    parallel: int = Field(default=4, ge=1, le=64)
    """Sequence slots: requests generated at once in one batch. KV memory is parallel x n_ctx tokens."""
    prefix_cache: bool = True
    """Reuse the longest matching prompt prefix left in a free slot's KV cache."""
    cache_type_k: KvCacheType = "f16"
    """Type of the cached keys (llama-server's --cache-type-k); q8_0 and q4_0 take about 1/2 and 1/4 the memory."""
    cache_type_v: KvCacheType = "f16"
    """Type of the cached values; a quantized type needs flash attention (switched on unless set off)."""
    kv_unified: bool = False
    """All slots share one pool of n_ctx tokens (llama-server's --kv-unified) instead of n_ctx each."""
    draft_model_path: Path | None = None
    """A smaller GGUF with the same vocabulary drafting tokens for greedy requests (speculative decoding)."""
    num_draft_tokens: int = Field(default=4, ge=1, le=64)
    """Tokens the draft model proposes per step. Only with draft_model_path."""
    prompt_lookup: PromptLookup | None = None
    """Drafts taken from the prompt and output so far (speculative decoding without a draft model)."""

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
        if self.cache_type_v != "f16" and self.flash_attn is False:
            # llama.cpp refuses a quantized V cache without flash attention (the context would not be created).
            raise ValueError(f"cache_type_v {self.cache_type_v} needs flash attention; remove flash_attn: false")
        kv_settings = [f for f in ("cache_type_k", "cache_type_v", "kv_unified") if f in self.model_fields_set]
        if kv_settings and (self.embedding or self.rerank):
            # Embedding and rerank models run outside the generation engine, which is what these settings shape.
            raise ValueError(f"{', '.join(kv_settings)}: only for generating models (not embedding or rerank)")
        # Speculative decoding (docs/speculative.md): one drafting kind, for generating models.
        if "num_draft_tokens" in self.model_fields_set and self.draft_model_path is None:
            raise ValueError("num_draft_tokens applies only with draft_model_path (speculative decoding)")
        if self.draft_model_path is not None and self.prompt_lookup is not None:
            raise ValueError("set either draft_model_path or prompt_lookup, not both")
        if self.embedding and (self.draft_model_path is not None or self.prompt_lookup is not None):
            raise ValueError("speculative decoding (draft_model_path, prompt_lookup) needs a generating model")
        if self.rerank and (self.embedding or self.mmproj_path is not None):
            raise ValueError("a rerank model cannot also be an embedding model or take an mmproj_path")
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
        if self.draft_model_path is not None:
            self.draft_model_path = _resolve(base, self.draft_model_path)


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


class UpstreamReplica(_Strict):
    """Another server of the same model: its own base_url, optionally its own model name and key."""

    base_url: str
    model: str | None = Field(default=None, min_length=1)
    api_key: str | None = None
    api_key_env: str | None = Field(default=None, min_length=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http_base_url(value)

    @model_validator(mode="after")
    def _one_key_source(self) -> UpstreamReplica:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("set either api_key or api_key_env, not both")
        return self


UPSTREAM_FEATURES = ("chat", "completion", "embedding", "images", "response_format", "tools", "logprobs", "reasoning")
"""Feature names an upstream entry may declare in `features` (the values of types.Feature it can pass through)."""


class UpstreamConfig(_SamplingDefaults):
    """A model served by another server (vLLM, SGLang, llama-server, Ollama, another heylookllm); docs/scale-out.md."""

    base_url: str
    """OpenAI-compatible: the upstream's OpenAI base URL (`http://host:8000/v1`); Ollama: `http://host:11434`."""
    model: str = Field(min_length=1)
    """The model's name on the upstream."""
    api_key: str | None = None
    api_key_env: str | None = Field(default=None, min_length=1)
    """The environment variable holding the key (read when the server starts)."""
    replicas: list[UpstreamReplica] = Field(default_factory=list)
    """More upstreams serving the same model; requests go to the least busy healthy one."""
    features: list[str] | None = None
    """What the upstream passes through (see UPSTREAM_FEATURES); unset: the provider's defaults."""
    connect_timeout_seconds: float = Field(default=5.0, gt=0.0)
    read_timeout_seconds: float = Field(default=600.0, gt=0.0)
    """Longest wait for the upstream's next bytes (a long prompt on a busy cluster takes a while)."""
    health_check_seconds: float = Field(default=10.0, gt=0.0)
    """How often each replica is checked; a failed one is checked again after a growing backoff."""
    max_in_flight: int | None = Field(default=None, ge=1)
    """Requests sent to one replica at once; more wait (None: no limit here, the upstream queues)."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http_base_url(value)

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in UPSTREAM_FEATURES:
                raise ValueError(f"unknown feature '{name}' (known: {', '.join(UPSTREAM_FEATURES)})")
        return value

    @model_validator(mode="after")
    def _upstream_fields(self) -> UpstreamConfig:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("set either api_key or api_key_env, not both")
        # The upstream renders its own template and parses its own output: these would be ignored.
        local_only = [f for f in ("tool_format", "max_reasoning_tokens") if f in self.model_fields_set]
        if local_only:
            raise ValueError(
                f"{', '.join(local_only)} cannot be set for an upstream model (the upstream parses its own output)"
            )
        return self

    def sampling_defaults(self) -> SamplingOverrides:
        return SamplingOverrides(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            max_tokens=self.max_tokens,
            stop=self.stop,
        )

    def context_size(self) -> int | None:
        return None

    def template_override(self) -> str | None:
        return None

    def resolve_paths(self, base: Path) -> None:
        return None


def _http_base_url(value: str) -> str:
    """An http(s) URL with a host, without a trailing slash (paths are appended to it)."""
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or rest.startswith("/"):
        raise ValueError(f"'{value}' is not an http:// or https:// URL with a host")
    if any(c.isspace() for c in value) or "?" in value or "#" in value:
        raise ValueError(f"'{value}' holds spaces, a query or a fragment; give the base URL only")
    return value.rstrip("/")


PROVIDER_CONFIGS: dict[str, type[LlamaCppConfig] | type[MLXConfig] | type[UpstreamConfig]] = {
    "llama_cpp": LlamaCppConfig,
    "mlx": MLXConfig,
    "openai_compatible": UpstreamConfig,
    "ollama": UpstreamConfig,
}


SAMPLING_CONFIG_FIELDS = (
    *_SamplingDefaults.model_fields,
    "repeat_penalty",
    "repetition_penalty",
    "repetition_context_size",
)
"""Config fields that only set per-request defaults; changing them needs no reload of the weights."""
