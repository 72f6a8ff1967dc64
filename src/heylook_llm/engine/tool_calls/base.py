"""What every tool-call format provides: detection from a chat template, the Lark grammar of its calls (for the
constrained-decoding engine), and a streaming parser that separates calls from answer text.

A format module describes one model family's native call syntax; `formats.py` lists them by name.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping, Sequence
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


class SpecialTokens:
    """The vocabulary's special tokens by text: callable as an IsSpecial, and able to name a token in Lark by its id
    (llguidance names special tokens only as `<...>` or `<[id]>`, so `[TOOL_CALLS]` needs the id)."""

    def __init__(self, ids: Mapping[str, int]) -> None:
        self._ids = dict(ids)

    def __call__(self, text: str) -> bool:
        return text in self._ids

    def ref(self, text: str) -> str:
        return f"<[{self._ids[text]}]>"


def lark_literal(text: str, is_special: IsSpecial) -> str:
    """A marker in Lark: the special token when the vocabulary has it as one (so the model writes that token, as it
    was trained to), else the text."""
    if is_special(text):
        ref = getattr(is_special, "ref", None)
        if callable(ref):
            return str(ref(text))
        if text.startswith("<") and text.endswith(">"):
            return text
    return json.dumps(text, ensure_ascii=False)


CALL_JSON_OPTIONS: dict[str, Any] = {"whitespace_pattern": r"[\x20]?"}
"""Calls are one-line JSON, as the models' templates show them: at most one space between JSON tokens."""


def json_lark(schema: dict[str, Any]) -> str:
    """An llguidance `%json` rule body for `schema` (compact JSON inside the grammar)."""
    # Key order matters: llguidance keeps the schema's property order, and models write "name" first.
    with_options = {**schema, "x-guidance": CALL_JSON_OPTIONS}
    return "%json " + json.dumps(with_options, separators=(",", ":"), ensure_ascii=False)


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
    escaped = json.dumps(marker_text, ensure_ascii=False)[1:-1].replace("/", "\\/")
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
