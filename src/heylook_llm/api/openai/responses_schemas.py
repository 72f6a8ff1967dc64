"""OpenAI Responses API wire types (`POST /v1/responses`). Unknown fields are accepted and checked by name in
responses_refusals.py; known ones are validated here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from heylook_llm.api.openai.schemas import _Open
from heylook_llm.types import SamplingOverrides

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class InputTextPart(_Open):
    type: Literal["input_text"]
    text: str


class InputImagePart(_Open):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class OutputTextPart(_Open):
    """An assistant message's text sent back (from an earlier response's output)."""

    type: Literal["output_text"]
    text: str


class RefusalPart(_Open):
    type: Literal["refusal"]
    refusal: str


class OtherPart(_Open):
    """A content part this server does not take (input_file, input_audio, ...): refused by name."""

    type: str


def _part_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("input_text", "input_image", "output_text", "refusal") else "other"


ContentPart = Annotated[
    Annotated[InputTextPart, Tag("input_text")]
    | Annotated[InputImagePart, Tag("input_image")]
    | Annotated[OutputTextPart, Tag("output_text")]
    | Annotated[RefusalPart, Tag("refusal")]
    | Annotated[OtherPart, Tag("other")],
    Discriminator(_part_kind),
]


class MessageItem(_Open):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(_Open):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = "{}"
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Open):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class ReasoningText(_Open):
    type: str = "reasoning_text"
    text: str


class ReasoningItem(_Open):
    """Reasoning sent back: its `content` text goes to the chat template with the next assistant turn."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class OtherItem(_Open):
    """An input item of a type this server does not take (item_reference, web_search_call, ...): refused."""

    type: str


def _item_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind is None:
        # EasyInputMessage: `type` may be left out.
        return "message"
    return kind if kind in ("message", "function_call", "function_call_output", "reasoning") else "other"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]


class FunctionTool(_Open):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OtherTool(_Open):
    """A built-in tool (web_search, file_search, code_interpreter, mcp, ...): refused by name."""

    type: str


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "function" if kind == "function" else "other"


ToolIn = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[OtherTool, Tag("other")], Discriminator(_tool_kind)
]


class ToolChoiceObject(_Open):
    """`{"type": "function", "name": ...}`; other types (allowed_tools, built-in tools, mcp) are refused."""

    type: str
    name: str | None = None


class TextFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> TextFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("type 'json_schema' needs a schema")
        return self


class TextParam(_Open):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningParam(_Open):
    effort: ReasoningEffort | None = None
    summary: str | None = None
    generate_summary: str | None = None
    mode: str | None = None
    context: str | None = None


class StreamOptionsParam(_Open):
    include_obfuscation: bool | None = None


class ResponsesRequest(_Open):
    model: str = Field(min_length=1, description="A model id from GET /v1/models")
    input: list[InputItem] = Field(description="A text (one user message) or input items")
    instructions: str | None = Field(default=None, description="A system message before the input")
    tools: list[ToolIn] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    text: TextParam | None = None
    reasoning: ReasoningParam | None = None
    stream: bool = False
    stream_options: StreamOptionsParam | None = None
    store: bool = Field(default=True, description="Keep the response for GET and previous_response_id")
    previous_response_id: str | None = Field(
        default=None, description="Continue a stored response: its input and output come before this input"
    )
    metadata: dict[str, str] | None = Field(default=None, description="Kept and returned; no other effect")
    top_k: int | None = Field(default=None, ge=0, description="Extension: keep the k most likely tokens")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Extension: min-p sampling")
    seed: int | None = Field(default=None, description="Extension: sampling seed")
    max_reasoning_tokens: int | None = Field(
        default=None, ge=0, description="Extension: reasoning budget; when spent the reasoning is closed"
    )

    @field_validator("input", mode="before")
    @classmethod
    def _text_is_one_message(cls, value: Any) -> Any:
        # A text is one user message; taking it as such keeps validation errors on the items' own paths
        # ("input.0.message.role") instead of naming both branches of a union.
        if isinstance(value, str):
            return [{"type": "message", "role": "user", "content": value}]
        if not isinstance(value, list):
            raise ValueError("send a text or a list of input items")
        return value

    def sampling(self) -> SamplingOverrides:
        return SamplingOverrides(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            seed=self.seed,
            max_tokens=self.max_output_tokens,
        )

    def items(self) -> list[InputItem]:
        """The input as items (a text became one user message)."""
        return list(self.input)
