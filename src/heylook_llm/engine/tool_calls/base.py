"""What every tool-call format provides: detection from a chat template, the Lark grammar of its calls (for the
constrained-decoding engine), and a streaming parser that separates calls from answer text.

A format module describes one model family's native call syntax; `formats.py` lists them by name.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from heylook_llm.types import ToolSpec

IsSpecial = Callable[[str], bool]
"""Whether a marker such as "<tool_call>" is one special token of the model's vocabulary."""


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str
    """The arguments as JSON text (an object)."""


@dataclass(slots=True)
class Parsed:
    """What a piece of output turned out to be: answer text and complete calls, in order of appearance."""

    content: str = ""
    calls: list[ParsedCall] = field(default_factory=list)

    def __iadd__(self, other: Parsed) -> Parsed:
        self.content += other.content
        self.calls.extend(other.calls)
        return self


class ToolCallParser(abc.ABC):
    """Streaming: feed output text as it comes; text that might be the start of a call is held back until it is
    clear. `finish` flushes what is left at the end of the output."""

    @abc.abstractmethod
    def feed(self, text: str) -> Parsed: ...

    @abc.abstractmethod
    def finish(self) -> Parsed: ...


def lark_literal(text: str, is_special: IsSpecial) -> str:
    """A marker in Lark: the special token (`<tool_call>`) when the vocabulary has it as one, else the text."""
    if is_special(text):
        return text
    return json.dumps(text)


CALL_JSON_OPTIONS: dict[str, Any] = {"whitespace_pattern": r"[\x20]?"}
"""Calls are one-line JSON, as the models' templates show them: at most one space between JSON tokens."""


def json_lark(schema: dict[str, Any]) -> str:
    """An llguidance `%json` rule body for `schema` (compact JSON inside the grammar)."""
    with_options = {**schema, "x-guidance": CALL_JSON_OPTIONS}
    return "%json " + json.dumps(with_options, separators=(",", ":"), sort_keys=True)


def arguments_schema(tool: ToolSpec) -> dict[str, Any]:
    """The tool's parameters schema as an object schema (tools without parameters take an empty object). Arguments
    the function does not declare are left out unless the schema asks for them (`additionalProperties`): a call
    with unknown arguments would fail anyway."""
    schema = dict(tool.parameters) if tool.parameters else {}
    if not schema:
        return {"type": "object", "properties": {}, "additionalProperties": False}
    schema.setdefault("type", "object")
    if "properties" in schema:
        schema.setdefault("additionalProperties", False)
    return schema


def call_object_schema(tools: Sequence[ToolSpec], arguments_key: str = "arguments") -> dict[str, Any]:
    """{"name": one of the tools, <arguments_key>: that tool's parameters} as one schema (anyOf per tool)."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, arguments_key: arguments_schema(tool)},
            "required": ["name", arguments_key],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def text_without(marker_lark: str, marker_text: str, is_special: IsSpecial) -> str:
    """A Lark terminal for free text that cannot contain the call marker (so a call can only start as a call)."""
    if is_special(marker_text):
        # Plain text bytes never spell a special token: any text is fine.
        return r"/(?s:.+)/"
    escaped = json.dumps(marker_text)[1:-1].replace("/", "\\/")
    return rf"/(?s:.+)/ & ~/(?s:.*{_regex_escape(escaped)}.*)/"


def _regex_escape(text: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\\" else c for c in text)


class ToolFormat(abc.ABC):
    """One native tool-call syntax."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abc.abstractmethod
    def detects(self, template: str) -> bool:
        """Whether a chat template writes or expects this syntax."""

    @abc.abstractmethod
    def calls_rules(self, tools: Sequence[ToolSpec], *, parallel: bool, is_special: IsSpecial) -> str:
        """Lark rules defining `calls` (one or more calls when `parallel`, else exactly one) and `TEXT` (answer
        text that cannot start a call). Rule names must not clash with `start`."""

    @abc.abstractmethod
    def parser(self) -> ToolCallParser: ...

    def start_rule(self, mode: str) -> str:
        """The grammar's start rule for a tool choice mode (`none`, `auto`, `required`)."""
        return {"none": "start: TEXT", "auto": "start: TEXT? calls?", "required": "start: calls"}[mode]

    def grammar(self, tools: Sequence[ToolSpec], mode: str, *, parallel: bool, is_special: IsSpecial) -> str:
        """The whole output's Lark grammar for this choice mode."""
        return self.start_rule(mode) + "\n" + self.calls_rules(tools, parallel=parallel, is_special=is_special)

    def system_prompt(self, tools: Sequence[ToolSpec]) -> str | None:
        """Text to describe the tools in a system message, for templates that have no place for tools; None when
        the template renders them itself."""
        return None
