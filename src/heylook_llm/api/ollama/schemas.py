"""Ollama wire types (field names and meanings as in Ollama's API and the ollama-python client).

Unknown fields are accepted: clients send fields of newer Ollama versions. Known fields are validated, and a
bad value is a 400 that names the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from heylook_llm.api.images import ResizeFields
from heylook_llm.config.durations import keep_alive_seconds
from heylook_llm.config.registry import MAX_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS
from heylook_llm.types import MAX_TOP_LOGPROBS

THINK_WORDS = ("", "true", "false", "low", "medium", "high", "max")
"""`think` as a string: a level, or a boolean spelled out ("" is false)."""
MAX_TEMPLATE_CHARS = 256 * 1024
"""Longest template a request may carry (real chat templates are a few kilobytes; compiling costs time)."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        """Ollama is written in Go, where a JSON null leaves a field at its zero value; clients (LangChain) send
        `"raw": null`, `"stream": null`, options full of nulls. Null is treated as "not given"."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class _Closed(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)


class _Named(_Open):
    @model_validator(mode="before")
    @classmethod
    def _name_as_model(cls, data: Any) -> Any:
        """Older clients send `name` where newer ones send `model`; Ollama accepts both."""
        if isinstance(data, dict) and "model" not in data and "name" in data:
            return {**data, "model": data["name"]}
        return data


class Options(_Open):
    """Ollama's `options` (and Modelfile PARAMETERs). The fields below are honoured; resource hints (num_gpu,
    num_thread, ...) are accepted without effect, and sampling methods not implemented here (mirostat, typical_p,
    tfs_z) are refused when switched on (api/ollama/refusals.py)."""

    # NaN and infinities are refused by name here (keep_alive, elsewhere, may be infinite; options never are).
    model_config = ConfigDict(allow_inf_nan=False)

    num_predict: int | None = None
    """Most tokens to generate; -1, -2 or 0: until the context is full."""
    temperature: float | None = Field(default=None, ge=0.0)
    """0 is greedy decoding."""
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    repeat_last_n: int | None = Field(default=None, ge=-1)
    """How many recent tokens the repeat penalty looks at; -1: the whole context, 0: off."""
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    """Negative: a random seed."""
    stop: list[str] | None = None
    num_ctx: int | None = Field(default=None, ge=MIN_CONTEXT_TOKENS, le=MAX_CONTEXT_TOKENS)
    """Tokens of context per sequence: a loaded context at least as large serves; a larger one reloads a llama.cpp
    model with it (up to its trained context and within the memory budget), else a 400 naming both numbers."""

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class _KeepAliveFields(_Named):
    keep_alive: float | None = None
    """How long the model stays loaded after this request: "10m", "1h30m", seconds as a number, negative for
    ever, 0 to unload right after. Parsed to seconds (`inf` for ever); unset: the server default."""

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _parse_keep_alive(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return keep_alive_seconds(value)
        raise ValueError("must be a duration string such as '5m' or a number of seconds")


class ToolCallFunction(_Open):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(_Open):
    function: ToolCallFunction


class ToolFunction(_Open):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] | None = None


class Tool(_Open):
    type: Literal["function"] = "function"
    function: ToolFunction


class Message(_Open):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    """Base64 images (vision models)."""
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None


JsonFormat = Literal["", "json"] | dict[str, Any] | None


class _GenerateFields(_KeepAliveFields, ResizeFields):
    model: str = Field(min_length=1)
    """A model name from /api/tags; `NAME:latest` also finds `NAME`."""
    stream: bool = True
    format: JsonFormat = None
    """"json" for any JSON object, or a JSON schema the output must match."""
    options: Options | None = None
    think: bool | str | None = None
    """Thinking models: true or false, or a level ("low", "medium", "high"); docs/reasoning.md."""
    logprobs: bool | None = None
    """Log probability of each output token (docs/logprobs.md)."""
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    """With logprobs: the N most likely tokens at each position."""
    max_reasoning_tokens: int | None = Field(default=None, ge=0)
    """Extension: reasoning budget; when spent the reasoning is closed and the model answers."""

    @field_validator("think")
    @classmethod
    def _think_value(cls, value: bool | str | None) -> bool | str | None:
        if isinstance(value, str) and value not in THINK_WORDS:
            raise ValueError(f"must be true, false or one of {', '.join(w for w in THINK_WORDS if w)}")
        return value

    grammar: str | None = None
    """Extension: constrain the output to a Lark or GBNF grammar."""
    regex: str | None = None
    """Extension: constrain the output to a regular expression."""


class ChatRequest(_GenerateFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "demo-gguf", "messages": [{"role": "user", "content": "Say hello"}], "stream": False}
            ]
        }
    )
    messages: list[Message] | None = None
    """The conversation; empty or missing loads the model (with keep_alive 0: unloads it)."""
    tools: list[Tool] | None = None
    """Functions the model may call (the model's template decides how it sees them; docs/tools.md)."""
    tool_choice: str | None = None
    """Extension (Ollama has none): "auto" (the default), "none", "required", or a tool's name to force it."""


class GenerateRequest(_GenerateFields):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "demo-gguf", "prompt": "Why is the sky blue?", "stream": False}]}
    )
    prompt: str | None = None
    """Empty or missing loads the model (with keep_alive 0: unloads it)."""
    suffix: str | None = None
    """Text after the insertion point: fill-in-the-middle, for models with FIM tokens."""
    system: str | None = None
    template: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS)
    """A Go template; only {{ .System }}, {{ .Prompt }}, {{ .Suffix }}, {{ .Response }} and {{ if }}/{{ else }}
    /{{ end }} on them are understood."""
    context: list[int] | None = None
    """Token ids returned by an earlier /api/generate, to continue that conversation."""
    raw: bool = False
    """Send the prompt as is, without the model's template."""
    images: list[str] | None = None


class EmbedRequest(_KeepAliveFields):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "demo-embed-gguf", "input": ["hello world", "another text"]}]}
    )
    model: str = Field(min_length=1)
    input: str | list[str] = ""
    truncate: bool = True
    """Cut inputs longer than the context window instead of refusing them."""
    dimensions: int | None = Field(default=None, ge=1)
    """Keep the first N dimensions of each vector (renormalised)."""
    options: Options | None = None


class EmbeddingsRequest(_KeepAliveFields):
    """The older single-text endpoint /api/embeddings."""

    model: str = Field(min_length=1)
    prompt: str = ""
    options: Options | None = None


class ModelRequest(_Named):
    """/api/show, /api/delete: one model by name."""

    model: str = Field(min_length=1)
    verbose: bool = False
    """/api/show: include long metadata arrays (token lists, merges)."""


class CopyRequest(_Open):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class PullRequest(_Named):
    """/api/pull and /api/push."""

    model: str = Field(min_length=1)
    insecure: bool = False
    stream: bool = True


class CreateRequest(_Named):
    model: str = Field(min_length=1)
    """Name of the new model."""
    from_: str | None = Field(default=None, alias="from")
    """The existing model it is made from (same weights)."""
    system: str | None = None
    template: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS)
    """A Jinja chat template (Go templates are not run here)."""
    parameters: dict[str, Any] | None = None
    """Sampling defaults, as in `options`."""
    messages: list[Message] | None = None
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    quantize: str | None = None
    license: str | list[str] | None = None
    stream: bool = True


# --- responses (documented shapes; the routes write them with orjson) ------------------------------------


class ModelDetails(_Closed):
    parent_model: str = ""
    format: str
    """"gguf" or "safetensors" (MLX)."""
    family: str
    families: list[str]
    parameter_size: str
    """Such as "8.0B" or "164.2K"."""
    quantization_level: str
    """Such as "Q4_K_M", "F16", or "Q4" for 4-bit MLX weights."""


class ListedModel(_Closed):
    name: str
    model: str
    modified_at: str
    size: int
    """Bytes on disk."""
    digest: str
    """sha256 of the file, or of an MLX folder's files."""
    details: ModelDetails
    remote_model: str | None = None
    """Models served by an upstream server (Ollama's field for remote models): the upstream's model name."""
    remote_host: str | None = None
    """Models served by an upstream server: the first replica's base URL."""


class ListResponse(_Closed):
    models: list[ListedModel]


class RunningModel(_Closed):
    name: str
    model: str
    size: int
    size_vram: int
    """Bytes in GPU memory (0 on the CPU)."""
    digest: str
    details: ModelDetails
    expires_at: str
    """When the keep-alive runs out; far in the future for a model kept for ever."""
    context_length: int
    remote_model: str | None = None
    """Models served by an upstream server: the upstream's model name."""
    remote_host: str | None = None
    """Models served by an upstream server: the first replica's base URL."""
    replicas: list[dict[str, Any]] | None = None
    """Extension, models served by an upstream server: each replica's base URL, health and requests in flight."""


class ProcessResponse(_Closed):
    models: list[RunningModel]


class ShowResponse(_Closed):
    modelfile: str
    parameters: str
    template: str
    """The model's Jinja chat template."""
    system: str | None = None
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    """Among "completion", "embedding", "vision", "insert" (fill-in-the-middle)."""
    modified_at: str
    remote_model: str | None = None
    """Models served by an upstream server: the upstream's model name."""
    remote_host: str | None = None
    """Models served by an upstream server: the first replica's base URL."""


class VersionResponse(_Closed):
    version: str


class GenerationPiece(_Closed):
    """One NDJSON line of /api/chat (`message`) or /api/generate (`response`); the last has `done: true` and the
    measurements (nanoseconds)."""

    model: str
    created_at: str
    message: dict[str, Any] | None = None
    response: str | None = None
    done: bool
    done_reason: Literal["stop", "length", "load", "unload"] | None = None
    context: list[int] | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class EmbedResponse(_Closed):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class StatusResponse(_Closed):
    status: str


def error_schema(example: str) -> dict[str, Any]:
    """Ollama's error shape, for the OpenAPI docs."""
    return {
        "description": "Error in Ollama's shape",
        "content": {"application/json": {"example": {"error": example}}},
    }
