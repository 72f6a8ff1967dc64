"""Anthropic Messages wire types. Unknown fields are accepted (refusals.py refuses the ones of Anthropic's API
that are not implemented); known ones are validated, and a validation error is a 400 in Anthropic's shape."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from heylook_llm.types import SamplingOverrides


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class TextBlock(_Open):
    type: Literal["text"]
    text: str


class Base64Source(_Open):
    type: Literal["base64"]
    media_type: str = Field(description="image/jpeg, image/png, image/gif or image/webp")
    data: str


class UrlSource(_Open):
    type: Literal["url"]
    url: str


class OtherSource(_Open):
    """An image source this server does not take (`file`: the Files API): refused by name."""

    type: str


def _source_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("base64", "url") else "other"


ImageSource = Annotated[
    Annotated[Base64Source, Tag("base64")] | Annotated[UrlSource, Tag("url")] | Annotated[OtherSource, Tag("other")],
    Discriminator(_source_kind),
]


class ImageBlock(_Open):
    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(_Open):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ThinkingBlock(_Open):
    type: Literal["thinking"]
    thinking: str
    signature: str = ""


class OtherBlock(_Open):
    """A block of a type this server does not take (document, redacted_thinking, server tool blocks, ...)."""

    type: str


def _block_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("text", "image", "tool_use", "tool_result", "thinking") else "other"


def _result_part_kind(value: Any) -> str:
    kind = _block_kind(value)
    return kind if kind in ("text", "image") else "other"


ResultPart = Annotated[
    Annotated[TextBlock, Tag("text")] | Annotated[ImageBlock, Tag("image")] | Annotated[OtherBlock, Tag("other")],
    Discriminator(_result_part_kind),
]


class ToolResultBlock(_Open):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ResultPart] = ""
    is_error: bool = False


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[OtherBlock, Tag("other")],
    Discriminator(_block_kind),
]


class MessageIn(_Open):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolIn(_Open):
    """A client tool. Server tools (web_search, bash, text_editor, ... : a `type` other than "custom") are
    refused by refusals.py before conversion."""

    type: str | None = None
    name: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str = ""
    input_schema: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceIn(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class ThinkingIn(_Open):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=1)


class CountTokensRequest(_Open):
    """POST /v1/messages/count_tokens: the fields of a Messages request that shape the prompt."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"model": "demo-gguf", "messages": [{"role": "user", "content": "Hello"}]}]},
    )
    model: str = Field(min_length=1, description="A model id from GET /v1/models")
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    thinking: ThinkingIn | None = None


class MessagesRequest(CountTokensRequest):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"model": "demo-gguf", "max_tokens": 32, "messages": [{"role": "user", "content": "Say hello"}]}
            ]
        },
    )
    max_tokens: int = Field(ge=1, description="Required, as in Anthropic's API")
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False

    def sampling(self) -> SamplingOverrides:
        return SamplingOverrides(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_tokens=self.max_tokens,
            stop=self.stop_sequences,
        )


def error_schema() -> dict[str, Any]:
    """Anthropic's error body, for the OpenAPI docs."""
    return {
        "description": "Error in Anthropic's shape",
        "content": {
            "application/json": {
                "example": {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": "model 'nope' not found; available models: ..."},
                }
            }
        },
    }
