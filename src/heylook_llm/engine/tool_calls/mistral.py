"""Mistral calls, after the `[TOOL_CALLS]` control token, in two generations of syntax:

    [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]    7B v0.3, Nemo, Small 3.1: one array
    [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}                           Small 3.2, Magistral, Devstral: per call

The parser reads both (and a `[CALL_ID]id` before `[ARGS]`); each format's grammar writes the syntax of the templates
it detects. llguidance names a special token in a grammar only when it is spelled `<...>` (or by id), so these
bracketed markers go into grammars as text even where the vocabulary has them as special tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from heylook_llm.engine.tool_calls.base import (
    IsSpecial,
    Parsed,
    ParsedCall,
    ToolCallParser,
    ToolFormat,
    arguments_schema,
    call_object_schema,
    json_lark,
    lark_literal,
    text_without,
)
from heylook_llm.types import ToolSpec

MARKER = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
_DECODER = json.JSONDecoder()
_HEAD = re.compile(r"([\w.\-]+)(?:\[CALL_ID\][\w\-]*)?\[ARGS\]\s*")
_HEAD_SO_FAR = re.compile(r"[\w.\-]*(?:\[CALL_ID\][\w\-]*)?")


def _arguments(value: object) -> str | None:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None


def _array_calls(value: object) -> list[ParsedCall] | None:
    if not isinstance(value, list) or not value:
        return None
    calls = []
    for item in value:
        arguments = _arguments(item.get("arguments", {})) if isinstance(item, dict) else None
        if arguments is None or not isinstance(item.get("name"), str):
            return None
        calls.append(ParsedCall(item["name"], arguments))
    return calls


def _options(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return list(schema.get("anyOf", [schema]))


def _json(text: str) -> tuple[object, str | None]:
    """A JSON value at the start of `text` and the text after it; rest None while it is unfinished (or never JSON:
    `finish` then shows it as text)."""
    try:
        value, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return None, None
    return value, text[end:]


class MistralParser(ToolCallParser):
    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False  # just after a [TOOL_CALLS]

    def feed(self, text: str) -> Parsed:
        self._buffer += text
        out = Parsed()
        while True:
            if not self._inside:
                start = self._buffer.find(MARKER)
                if start < 0:
                    keep = next((n for n in range(len(MARKER) - 1, 0, -1) if self._buffer.endswith(MARKER[:n])), 0)
                    out.content += self._buffer[: len(self._buffer) - keep]
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    return out
                out.content += self._buffer[:start]
                self._buffer = self._buffer[start + len(MARKER) :]
                self._inside = True
            step = self._read_calls(out)
            if step == "wait":
                return out
            if step == "text":  # not calls after all: the marker and what follows stay visible
                out.content += MARKER
            self._inside = False

    def _read_calls(self, out: Parsed) -> str:
        """One marker's calls into `out`: "done", "wait" (more text needed) or "text" (this is no call)."""
        body = self._buffer.lstrip()
        if body.startswith("["):
            value, rest = _json(body)
            calls = _array_calls(value)
        else:
            head = _HEAD.match(body)
            if head is None:
                so_far = _HEAD_SO_FAR.match(body)
                tail = body[so_far.end() :] if so_far else body
                partial = ARGS.startswith(tail) or (CALL_ID.startswith(tail) and CALL_ID not in body)
                return "wait" if partial else "text"
            value, rest = _json(body[head.end() :])
            arguments = _arguments(value)
            calls = None if arguments is None else [ParsedCall(head.group(1), arguments)]
        if rest is None:
            return "wait"
        if calls is None:
            return "text"
        out.calls.extend(calls)
        self._buffer = rest
        return "done"

    def finish(self) -> Parsed:
        rest, self._buffer = self._buffer, ""
        if self._inside:
            self._inside = False
            return Parsed(content=MARKER + rest)  # a call cut by max_tokens: shown rather than lost
        return Parsed(content=rest)


class MistralFormat(ToolFormat):
    name = "mistral"
    description = '[TOOL_CALLS][{"name": ..., "arguments": {...}}] (Mistral 7B v0.3, Nemo, Small 3.1)'

    def detects(self, template: str) -> bool:
        return MARKER in template

    def calls_rules(self, tools: Sequence[ToolSpec], *, parallel: bool, is_special: IsSpecial) -> str:
        # The templates echo a 9-character call id after the arguments; the model may write one too.
        call_id = {"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}
        options = [{**o, "properties": {**o["properties"], "id": call_id}} for o in _options(call_object_schema(tools))]
        items: dict[str, Any] = {"type": "array", "items": {"anyOf": options} if len(options) > 1 else options[0]}
        items.update(minItems=1, **({} if parallel else {"maxItems": 1}))
        marker = lark_literal(MARKER, is_special)
        return "\n".join(
            [
                # Sentencepiece vocabularies (v0.3) write a space before the array; tekken ones (Nemo on) do not.
                f'calls: {marker} " "? call_array',
                f"call_array: {json_lark(items)}",
                f"TEXT: {text_without(marker, MARKER, is_special)}",
            ]
        )

    def parser(self) -> ToolCallParser:
        return MistralParser()


class MistralArgsFormat(MistralFormat):
    name = "mistral_args"
    description = "[TOOL_CALLS]name[ARGS]{...} per call (Mistral Small 3.2, Magistral, Devstral, Ministral 3)"

    def detects(self, template: str) -> bool:
        return ARGS in template

    def calls_rules(self, tools: Sequence[ToolSpec], *, parallel: bool, is_special: IsSpecial) -> str:
        marker, args, call_id = (lark_literal(m, is_special) for m in (MARKER, ARGS, CALL_ID))
        named = " | ".join(f"{json.dumps(tool.name)} call_id? {args} args_{i}" for i, tool in enumerate(tools))
        return "\n".join(
            [
                f"calls: call{'+' if parallel else ''}",
                f"call: {marker} ({named})",
                f"call_id: {call_id} /[a-zA-Z0-9]{{9}}/",
                *(f"args_{i}: {json_lark(arguments_schema(tool))}" for i, tool in enumerate(tools)),
                f"TEXT: {text_without(marker, MARKER, is_special)}",
            ]
        )
