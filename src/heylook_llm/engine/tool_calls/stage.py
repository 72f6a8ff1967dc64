"""The engine's tool-calling stage: before a request runs, its tools and tool choice become a grammar in the
model's native call syntax (so `required` and a named function always yield a valid call, and `auto` calls have
valid arguments); after, the model's text is split into answer text and tool calls, once, for every dialect."""

from __future__ import annotations

import dataclasses
import uuid

from heylook_llm.backends.base import ModelFacts
from heylook_llm.config.registry import ModelEntry
from heylook_llm.engine.tool_calls.base import SpecialTokens, ToolCallParser, ToolFormat
from heylook_llm.engine.tool_calls.formats import FORMATS, detect_format
from heylook_llm.errors import InvalidRequest
from heylook_llm.types import (
    ChatMessage,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GrammarSpec,
    ToolCallDelta,
)


def tool_format(entry: ModelEntry, facts: ModelFacts) -> ToolFormat:
    """The model's call syntax: `tool_format` in models.yaml, else detected from its chat template."""
    named = entry.config.tool_format
    return FORMATS[named] if named is not None else detect_format(facts.chat_template)


def prepare_tools(
    request: GenerationRequest, entry: ModelEntry, facts: ModelFacts
) -> tuple[GenerationRequest, ToolCallParser | None]:
    """The request with its tool grammar (and, for templates without tool support, the tools described in a
    system message), and the parser for its output; unchanged and None when it has no tools."""
    if not request.tools or request.messages is None:
        return request, None
    if request.response_format is not None or request.grammar is not None:
        param = "response_format" if request.response_format is not None else request.grammar.param  # type: ignore[union-attr]
        raise InvalidRequest("send tools or an output constraint, not both", param=param)
    fmt = tool_format(entry, facts)
    choice = request.tool_choice
    mode = "auto" if choice is None else choice.mode
    tools = request.tools
    if mode == "function":
        tools = [t for t in tools if t.name == (choice.name if choice else None)]
        if not tools:
            known = ", ".join(t.name for t in request.tools)
            raise InvalidRequest(
                f"tool_choice names a function that is not in tools (tools: {known})", param="tool_choice"
            )
    parallel = request.parallel_tool_calls and mode != "function"
    grammar_mode = "required" if mode == "function" else mode

    grammar = fmt.grammar(tools, grammar_mode, parallel=parallel, is_special=SpecialTokens(facts.special_tokens))
    prompt = fmt.system_prompt(request.tools)
    messages = request.messages if prompt is None else _with_system(request.messages, prompt)
    prepared = dataclasses.replace(request, grammar=GrammarSpec("grammar", grammar, "tools"), messages=messages)
    return prepared, (None if mode == "none" else fmt.parser())


def _with_system(messages: list[ChatMessage], text: str) -> list[ChatMessage]:
    if messages and messages[0].role == "system":
        first = dataclasses.replace(messages[0], content=f"{messages[0].content}\n\n{text}")
        return [first, *messages[1:]]
    return [ChatMessage("system", text), *messages]


class ToolOutputParser:
    """The output parser of a request with tools: answer text passes, calls become tool-call deltas (one delta per
    call, with its id, name and whole arguments), and a generation that called tools ends with `tool_calls`."""

    def __init__(self, parser: ToolCallParser) -> None:
        self._parser = parser
        self._calls = 0

    def parse(self, chunk: GenerationChunk) -> GenerationChunk:
        parsed = self._parser.feed(chunk.text)
        if chunk.finish_reason is not None:
            parsed += self._parser.finish()
        chunk.text = parsed.content
        for call in parsed.calls:
            call_id = f"call_{uuid.uuid4().hex[:24]}"
            chunk.tool_calls.append(ToolCallDelta(self._calls, call_id, call.name, call.arguments))
            self._calls += 1
        if chunk.finish_reason is FinishReason.STOP and self._calls:
            chunk.finish_reason = FinishReason.TOOL_CALLS
        return chunk
