"""Which fields of Anthropic's Messages API this server refuses, and which it accepts without effect.

Every request field of the Messages API is either implemented (declared in schemas.py), listed here as having
no effect on a local server, or refused with a 400 naming it. docs/anthropic.md is the same list for people;
keep them together.
"""

from __future__ import annotations

from typing import Any

from heylook_llm.api.anthropic.schemas import (
    CountTokensRequest,
    ImageBlock,
    MessagesRequest,
    OtherBlock,
    OtherSource,
    TextBlock,
    ToolResultBlock,
)
from heylook_llm.api.fields import Refused, check_fields, field_values, is_not
from heylook_llm.errors import InvalidRequest, UnsupportedParameter


def _not_null(value: Any) -> bool:
    return value is not None


REQUEST_REFUSED = (
    Refused("mcp_servers", "MCP servers are not called by this server; run the tools in your client", _not_null),
    Refused("container", "there are no code-execution containers here", _not_null),
    Refused("context_management", "context editing is not available; trim the messages yourself", _not_null),
    Refused("output_config", "output formats and effort levels are not available here", _not_null),
    Refused("output_format", "structured outputs are not available through this API here", _not_null),
)
"""Messages fields that ask for something not implemented (the value decides; defaults and null pass)."""

REQUEST_NO_EFFECT = (
    "metadata",
    "service_tier",
    "cache_control",
    "inference_geo",
    "speed",
    "diagnostics",
)
"""Fields that change nothing on a local server: accepted, no effect (docs/anthropic.md says why, row by row)."""

TOOL_KNOWN = ("type", "name", "description", "input_schema", "strict", "cache_control", "input_examples")
TOOL_REFUSED = (
    Refused("defer_loading", "tool search is not available; send the tools the model may call", is_not(False)),
    Refused("allowed_callers", "programmatic tool calling is not available", is_not(["direct"])),
)
BLOCK_REFUSED = (Refused("citations", "citations are not available", is_not([])),)


def _refuse(param: str, instead: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"'{param}' is not supported by this server: {instead}", param=param)


def check_request(body: CountTokensRequest) -> list[str]:
    """Refuse unimplemented fields of a Messages (or count_tokens) request; return the unknown field names."""
    known = [*type(body).model_fields, *REQUEST_NO_EFFECT]
    if not isinstance(body, MessagesRequest):
        # count_tokens takes the prompt's fields; sampling fields sent there shape nothing and pass.
        known += [*MessagesRequest.model_fields]
    unknown = check_fields(field_values(body), REQUEST_REFUSED, known)
    if body.thinking is not None and body.thinking.type == "enabled" and body.thinking.budget_tokens is None:
        raise InvalidRequest("thinking.budget_tokens: required with type 'enabled'", param="thinking.budget_tokens")
    for index, tool in enumerate(body.tools or []):
        if tool.type not in (None, "custom"):
            raise _refuse(
                f"tools[{index}].type",
                f"'{tool.type}' is a server tool, which this server does not run; define it as a client tool "
                "with an input_schema and run it yourself",
            )
        if tool.input_schema is None:
            raise InvalidRequest(f"tools[{index}].input_schema: required", param=f"tools[{index}].input_schema")
        check_fields(field_values(tool), TOOL_REFUSED, TOOL_KNOWN, prefix=f"tools[{index}].")
    for index, message in enumerate(body.messages):
        _check_blocks(index, message.content)
    return unknown


def _check_blocks(index: int, content: str | list[Any]) -> None:
    if isinstance(content, str):
        return
    for number, block in enumerate(content):
        where = f"messages[{index}].content[{number}]"
        _check_block(where, block)
        if isinstance(block, ToolResultBlock) and not isinstance(block.content, str):
            for part_number, part in enumerate(block.content):
                _check_block(f"{where}.content[{part_number}]", part)


def _check_block(where: str, block: Any) -> None:
    if isinstance(block, OtherBlock):
        raise _refuse(
            f"{where}.type",
            f"'{block.type}' blocks are not available; send text, image, tool_use, tool_result and thinking blocks",
        )
    if isinstance(block, ImageBlock) and isinstance(block.source, OtherSource):
        raise _refuse(f"{where}.source.type", f"'{block.source.type}' image sources; send base64 or url")
    if isinstance(block, TextBlock):
        check_fields(field_values(block), BLOCK_REFUSED, ("type", "text", "cache_control"), prefix=f"{where}.")
