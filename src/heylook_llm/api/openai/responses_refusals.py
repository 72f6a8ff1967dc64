"""Which fields of OpenAI's Responses API this server refuses, and which it accepts without effect.

Every request field of `POST /v1/responses` is either implemented (declared in responses_schemas.py), listed here
as having no effect on a local server, or refused with a 400 naming it. docs/compatibility.md and
docs/responses.md are the same list for people; keep them together.
"""

from __future__ import annotations

from typing import Any

from heylook_llm.api.fields import Refused, check_fields, field_values, is_not
from heylook_llm.api.openai.responses_schemas import (
    FunctionCallOutputItem,
    InputImagePart,
    MessageItem,
    OtherItem,
    OtherPart,
    OtherTool,
    ResponsesRequest,
    ToolChoiceObject,
)
from heylook_llm.errors import InvalidRequest, UnsupportedParameter


def _not_null(value: Any) -> bool:
    return value is not None


REQUEST_REFUSED = (
    Refused("background", "background responses are not available; send stream: true to read while it runs"),
    Refused(
        "conversation", "conversation objects are not available; chain responses with previous_response_id", _not_null
    ),
    Refused("include", "no extra output data is available (no encrypted reasoning, logprobs or tool sources)"),
    Refused("prompt", "prompt templates are not available; send the input and instructions", _not_null),
    Refused("truncation", "only 'disabled': a too long input is refused, never cut", is_not("disabled")),
    Refused("service_tier", "only 'auto' or 'default': there is one tier here", is_not("auto", "default")),
    Refused(
        "max_tool_calls",
        "this server runs no built-in tools; with parallel_tool_calls false the model makes one call",
        _not_null,
    ),
    Refused("top_logprobs", "log probabilities are not available through this API here; use /v1/chat/completions"),
    Refused("moderation", "this server has no moderation", _not_null),
    Refused("context_management", "context compaction is not available; trim the input yourself", _not_null),
    Refused("background_options", "background responses are not available", _not_null),
    Refused("access_programs", "programmatic tool calling is not available", _not_null),
    Refused("image", "image generation is not available", _not_null),
    Refused("personality", "personalities are not available; say what you want in instructions", _not_null),
)
"""Responses fields that ask for something not implemented (the value decides; defaults and null pass)."""

REQUEST_NO_EFFECT = (
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
)
"""Fields that change nothing on a local server: accepted, no effect (`metadata` is kept and returned)."""

TEXT_REFUSED = (Refused("verbosity", "only 'medium' (the default)", is_not("medium")),)
REASONING_REFUSED = (
    Refused(
        "summary", "reasoning summaries are not written here; the reasoning item carries the whole text", _not_null
    ),
    Refused("generate_summary", "reasoning summaries are not written here", _not_null),
    Refused("mode", "reasoning modes are not available; use reasoning.effort", _not_null),
    Refused("context", "only the default: reasoning sent back goes to the chat template as it decides", _not_null),
)
TOOL_KNOWN = ("type", "name", "description", "parameters", "strict")
TOOL_REFUSED = (
    Refused("defer_loading", "tool search is not available; send the tools the model may call"),
    Refused("output_schema", "tool output schemas are not available", _not_null),
    Refused("allowed_callers", "programmatic tool calling is not available", _not_null),
)
STREAM_OPTIONS_KNOWN = ("include_obfuscation",)
"""Obfuscation pads deltas against length side channels on shared networks; none is added here (no effect)."""
ITEM_TYPES = "message, function_call, function_call_output and reasoning"


def _refuse(param: str, instead: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"'{param}' is not supported by this server: {instead}", param=param)


def check_request(body: ResponsesRequest) -> list[str]:
    """Refuse unimplemented fields of a Responses request; return the unknown field names (vendor extensions)."""
    unknown = check_fields(field_values(body), REQUEST_REFUSED, [*ResponsesRequest.model_fields, *REQUEST_NO_EFFECT])
    if body.text is not None:
        unknown += check_fields(field_values(body.text), TEXT_REFUSED, ("format",), prefix="text.")
    if body.reasoning is not None:
        unknown += check_fields(field_values(body.reasoning), REASONING_REFUSED, ("effort",), prefix="reasoning.")
    if body.stream_options is not None:
        unknown += check_fields(field_values(body.stream_options), (), STREAM_OPTIONS_KNOWN, prefix="stream_options.")
    for index, tool in enumerate(body.tools or []):
        if isinstance(tool, OtherTool):
            raise _refuse(
                f"tools[{index}].type",
                f"'{tool.type}' is a built-in tool, which this server does not run; define a function tool and run "
                "it yourself",
            )
        unknown += check_fields(field_values(tool), TOOL_REFUSED, TOOL_KNOWN, prefix=f"tools[{index}].")
    if isinstance(body.tool_choice, ToolChoiceObject) and body.tool_choice.type != "function":
        raise _refuse("tool_choice.type", f"'{body.tool_choice.type}'; send none, auto, required or a function")
    for index, item in enumerate(body.input):
        _check_item(f"input[{index}]", item)
    return unknown


def _check_item(where: str, item: Any) -> None:
    if isinstance(item, OtherItem):
        raise _refuse(f"{where}.type", f"'{item.type}' items are not available; send {ITEM_TYPES} items")
    if isinstance(item, MessageItem | FunctionCallOutputItem):
        content = item.content if isinstance(item, MessageItem) else item.output
        field = "content" if isinstance(item, MessageItem) else "output"
        if isinstance(content, str):
            return
        for number, part in enumerate(content):
            if isinstance(part, OtherPart):
                raise _refuse(
                    f"{where}.{field}[{number}].type",
                    f"'{part.type}' parts are not available; send input_text and input_image parts",
                )
            if isinstance(part, InputImagePart):
                if part.file_id is not None:
                    raise _refuse(f"{where}.{field}[{number}].file_id", "there is no files API; send image_url")
                if not part.image_url:
                    raise InvalidRequest(
                        f"{where}.{field}[{number}].image_url: required (a data URL or an http(s) URL)",
                        param=f"{where}.{field}[{number}].image_url",
                    )
