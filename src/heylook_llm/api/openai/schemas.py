"""OpenAI wire types. Unknown fields are accepted (clients send many), known ones are validated."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from heylook_llm.api.images import ResizeFields
from heylook_llm.config.registry import MAX_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS
from heylook_llm.engine.batch import ProcessingMode
from heylook_llm.types import MAX_TOP_LOGPROBS, GrammarSpec, ResponseFormat, SamplingOverrides

MAX_CHOICES = 16
"""Largest `n` a chat request may ask for (each choice is a sequence in the model's queue)."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        """OpenAI's spec makes most optional fields nullable (`"stream": null`, `"n": null`); null means "not
        given", so the field keeps its default."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageUrl(_Open):
    url: str
    detail: str | None = None


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageUrl


class OtherPart(_Open):
    """A content part of a type this server does not take (input_audio, file, ...): refused by name."""

    type: str


def _part_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("text", "image_url") else "other"


ContentPart = Annotated[
    Annotated[TextPart, Tag("text")] | Annotated[ImagePart, Tag("image_url")] | Annotated[OtherPart, Tag("other")],
    Discriminator(_part_kind),
]


class FunctionCallIn(_Open):
    name: str
    arguments: str = Field(default="{}", description="The arguments as a JSON text, as the model wrote them")


class ToolCallIn(_Open):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    """Assistant turns: the calls the model made."""
    tool_call_id: str | None = None
    """Role "tool": the call this result answers."""
    function_call: FunctionCallIn | None = None
    """Legacy assistant turns: one function call."""
    reasoning_content: str | None = None
    """Assistant turns: reasoning sent back (llama-server's and DeepSeek's name); the template decides its fate."""
    reasoning: str | None = None
    """Assistant turns: reasoning sent back (vLLM's, Ollama's /v1 and LM Studio's name)."""


class FunctionDefinition(_Open):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_.-]+$")
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(_Open):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Open):
    name: str


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Open):
    name: str | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON schema the output must validate against")
    strict: bool | None = None


class ResponseFormatIn(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormatIn:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a json_schema object with a schema")
        return self

    def neutral(self) -> ResponseFormat | None:
        if self.type == "json_object":
            return "json"
        if self.type == "json_schema" and self.json_schema is not None:
            return self.json_schema.schema_
        return None


class StreamOptions(_Open):
    include_usage: bool = False


class SamplingFields(_Open):
    """Sampling fields shared by chat and completions; extensions beyond OpenAI's are llama.cpp's names."""

    model: str = Field(min_length=1, description="A model id from GET /v1/models")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, description="Extension: keep the k most likely tokens")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Extension: min-p sampling")
    repeat_penalty: float | None = Field(default=None, gt=0.0, description="Extension: repetition penalty")
    repetition_penalty: float | None = Field(default=None, gt=0.0, description="Alias of repeat_penalty")
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    grammar: str | None = Field(
        default=None,
        description="Extension: constrain the output to a Lark or GBNF grammar (as llama-server's grammar)",
    )
    regex: str | None = Field(default=None, description="Extension: constrain the output to a regular expression")
    num_ctx: int | None = Field(
        default=None,
        ge=MIN_CONTEXT_TOKENS,
        le=MAX_CONTEXT_TOKENS,
        description="Extension (Ollama's num_ctx): tokens of context the request needs; a llama.cpp model loaded "
        "with less reloads with it (up to its trained context and within the memory budget), else a 400",
    )
    n: int = Field(default=1, ge=1, le=1, description="Only 1 is supported")

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.lstrip("-").isdigit():
                raise ValueError(f"keys must be token ids (integers as strings), got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"bias for token {key} must be between -100 and 100, got {bias}")
        return value

    def grammar_spec(self) -> GrammarSpec | None:
        """The grammar or regex constraint; both at once, or with a response_format, is refused by the route."""
        if self.grammar is not None:
            return GrammarSpec("grammar", self.grammar, "grammar")
        if self.regex is not None:
            return GrammarSpec("regex", self.regex, "regex")
        return None

    def sampling(self, max_tokens: int | None = None) -> SamplingOverrides:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return SamplingOverrides(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty if self.repeat_penalty is not None else self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            max_tokens=max_tokens if max_tokens is not None else self.max_tokens,
            stop=stop,
            logit_bias={int(k): v for k, v in self.logit_bias.items()} if self.logit_bias else None,
        )


class ChatCompletionRequest(SamplingFields, ResizeFields):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "demo-gguf",
                    "messages": [{"role": "user", "content": "Say hello"}],
                    "max_tokens": 32,
                    "temperature": 0.7,
                    "stream": False,
                }
            ]
        },
    )
    messages: list[ChatMessageIn] = Field(min_length=1)
    tools: list[ToolIn] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    functions: list[FunctionDefinition] | None = Field(default=None, description="Legacy form of tools")
    function_call: Literal["none", "auto"] | NamedFunction | None = Field(
        default=None, description="Legacy form of tool_choice"
    )
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormatIn | None = Field(
        default=None, description="json_object or json_schema constrain the output with a grammar"
    )
    n: int = Field(
        default=1, ge=1, le=MAX_CHOICES, description="Choices to generate; with a seed, choice i uses seed + i"
    )
    processing_mode: str = Field(
        default=ProcessingMode.CONVERSATION.value,
        description="Extension: conversation (one chat) or a batch mode: " + ", ".join(list(ProcessingMode)[1:]),
    )
    return_individual: bool = Field(
        default=True, description="Extension, batch modes: one chat.completion per group (else joined choices)"
    )
    include_timing: bool = Field(default=False, description="Extension, batch modes: add measured timing")
    logprobs: bool = Field(default=False, description="Log probability of each output token (docs/logprobs.md)")
    top_logprobs: int | None = Field(
        default=None, ge=0, le=MAX_TOP_LOGPROBS, description="With logprobs: the N most likely tokens at each position"
    )
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = Field(
        default=None,
        description="Reasoning models: none turns reasoning off; levels go to templates that take them "
        "(docs/reasoning.md)",
    )
    max_reasoning_tokens: int | None = Field(
        default=None, ge=0, description="Extension: reasoning budget; when spent the reasoning is closed"
    )

    @field_validator("processing_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in ProcessingMode.__members__.values():
            raise ValueError(f"unknown processing_mode {value!r}; valid modes: {', '.join(ProcessingMode)}")
        return value

    def resolved_sampling(self) -> SamplingOverrides:
        return self.sampling(self.max_completion_tokens)


class CompletionRequest(SamplingFields):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"model": "demo-gguf", "prompt": "Once upon a time", "max_tokens": 32}]},
    )
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="A prompt, or a list of prompts (n choices each); token-id prompts are refused"
    )
    n: int = Field(
        default=1, ge=1, le=MAX_CHOICES, description="Choices per prompt; with a seed, choice i uses seed + i"
    )
    echo: bool = Field(default=False, description="Put the prompt before each choice's text")
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="Log probability of each output token, with this many most likely alternatives (OpenAI: up to 5)",
    )
    suffix: str | None = Field(
        default=None, description="Text after the insertion point: fill-in-the-middle, for models with FIM tokens"
    )

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value: str | list[str] | list[int] | list[list[int]]) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("the list of prompts is empty")
        return value

    def texts(self) -> list[str]:
        """The prompts as texts (after refusals.check_completion has refused token-id prompts)."""
        value = self.prompt
        return [value] if isinstance(value, str) else [item for item in value if isinstance(item, str)]


class EmbeddingRequest(_Open):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"model": "demo-embed-gguf", "input": ["hello world", "another text"]}]},
    )
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, a list of texts, or token ids of the embedding model's own vocabulary (one list, or "
        "a list of lists)"
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        default=None, ge=1, description="Keep the first N dimensions of each vector, rescaled to unit length"
    )

    def inputs(self) -> list[str | list[int]]:
        """Texts, or token-id lists; an empty list stays empty (refused by the route)."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and isinstance(value[0], int):
            return [[item for item in value if isinstance(item, int)]]
        return [item for item in value if isinstance(item, str | list)]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None
    completion_tokens_details: dict[str, int] | None = None


class ModelMemory(BaseModel):
    """Extension: the model's memory, estimated from its files and settings, measured once loaded."""

    loaded: bool
    estimated_bytes: int
    """Weights + KV cache + projector + margin, before load."""
    weights_bytes: int
    kv_cache_bytes: int
    kv_cache_tokens: int
    """Tokens of KV cache counted: n_ctx x parallel, or n_ctx with kv_unified."""
    projector_bytes: int
    measured_bytes: int | None = None
    """Resident growth of the server while the model loaded (null until it is loaded)."""
    accelerator_bytes: int = 0


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "heylookllm"
    provider: str | None = None
    description: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    memory: ModelMemory | None = None
    """Extension: memory figures (null for models another server runs)."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def error_schema() -> dict[str, Any]:
    """The error envelope, for the OpenAPI docs."""
    return {
        "description": "Error in OpenAI's envelope",
        "content": {
            "application/json": {
                "example": {
                    "error": {
                        "message": "model 'nope' not found; available models: demo-gguf",
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": "model_not_found",
                    }
                }
            }
        },
    }
