"""The fallback for chat templates with no tool support: the tools are described in a system message and a call
is a JSON envelope the model writes as its whole answer:

    {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}

With `auto`, the answer is either that envelope or plain text that does not start with `{"tool_calls"`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from heylook_llm.engine.tool_calls.base import (
    IsSpecial,
    Parsed,
    ParsedCall,
    ToolCallParser,
    ToolFormat,
    call_object_schema,
    json_lark,
)
from heylook_llm.types import ToolSpec

ENVELOPE_START = '{"tool_calls"'


class EnvelopeParser(ToolCallParser):
    """Text is held until it is clear whether the answer is an envelope; an envelope is parsed at the end."""

    def __init__(self) -> None:
        self._buffer = ""
        self._mode: str | None = None  # "text" or "calls" once known

    def feed(self, text: str) -> Parsed:
        self._buffer += text
        if self._mode is None:
            # The grammar allows a space after the brace: compare without whitespace.
            compact = "".join(self._buffer.split())
            if len(compact) < len(ENVELOPE_START) and ENVELOPE_START.startswith(compact):
                return Parsed()
            self._mode = "calls" if compact.startswith(ENVELOPE_START) else "text"
        if self._mode == "text":
            out, self._buffer = self._buffer, ""
            return Parsed(content=out)
        return Parsed()

    def finish(self) -> Parsed:
        rest, self._buffer = self._buffer, ""
        if self._mode != "calls":
            return Parsed(content=rest)
        try:
            envelope = json.loads(rest)
            calls = [
                ParsedCall(str(c["name"]), json.dumps(c.get("arguments", {}), ensure_ascii=False))
                for c in envelope["tool_calls"]
            ]
        except (json.JSONDecodeError, KeyError, TypeError):
            return Parsed(content=rest)  # cut by max_tokens: shown as text rather than lost
        return Parsed(calls=calls)


class GenericFormat(ToolFormat):
    name = "generic"
    description = 'tools described in a system message; calls as {"tool_calls": [...]} (any template)'

    def detects(self, template: str) -> bool:
        return True

    def start_rule(self, mode: str) -> str:
        # The whole answer is either text or the envelope, never both.
        return "start: TEXT | calls" if mode == "auto" else super().start_rule(mode)

    def calls_rules(self, tools: Sequence[ToolSpec], *, parallel: bool, is_special: IsSpecial) -> str:
        call = call_object_schema(tools)
        items: dict[str, object] = {"type": "array", "items": call, "minItems": 1}
        if not parallel:
            items["maxItems"] = 1
        envelope = {
            "type": "object",
            "properties": {"tool_calls": items},
            "required": ["tool_calls"],
            "additionalProperties": False,
        }
        # Free text may not begin like an envelope, so that an answer is one or the other.
        return "\n".join(
            [
                f"calls: {json_lark(envelope)}",
                r'TEXT: /(?s:.+)/ & ~/\s*\{"tool_calls"(?s:.*)/',
            ]
        )

    def parser(self) -> ToolCallParser:
        return EnvelopeParser()

    def system_prompt(self, tools: Sequence[ToolSpec]) -> str | None:
        listed = [
            {"name": t.name, "description": t.description, "parameters": t.parameters or {"type": "object"}}
            for t in tools
        ]
        return (
            "You can call these tools:\n"
            + json.dumps(listed, ensure_ascii=False, indent=2)
            + '\nTo call tools, answer with only this JSON and nothing else: {"tool_calls": [{"name": "<tool name>", '
            '"arguments": {<arguments>}}]}. Otherwise answer normally.'
        )
