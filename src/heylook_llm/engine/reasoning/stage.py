"""The engine's reasoning stage: before a request runs, the client's reasoning controls become chat-template
variables, a budget and the markers the backend follows; after, the output is split into reasoning and answer once,
for every dialect. With tools, the tool-call parser reads the answer part (reasoning is split first).
"""

from __future__ import annotations

import dataclasses

from heylook_llm.backends.base import ModelFacts
from heylook_llm.config.registry import ModelEntry
from heylook_llm.engine.output import OutputParser, PassThrough
from heylook_llm.engine.reasoning.formats import (
    FORMATS,
    HARMONY,
    ReasoningFormat,
    detect_reasoning_format,
    template_effort,
)
from heylook_llm.engine.reasoning.split import HarmonySplitter, TagSplitter
from heylook_llm.engine.tool_calls.harmony import HarmonyParser
from heylook_llm.errors import CapabilityError
from heylook_llm.types import Feature, GenerationChunk, GenerationRequest, ReasoningControl


def reasoning_format(entry: ModelEntry, facts: ModelFacts) -> ReasoningFormat | None:
    """The model's reasoning format: `reasoning_format` in models.yaml (`none`: none), else detected from its chat
    template."""
    named = entry.config.reasoning_format
    if named is not None:
        return FORMATS.get(named)
    return detect_reasoning_format(facts.chat_template)


def _asks(control: ReasoningControl | None) -> bool:
    """Whether the client asked for reasoning (on, a level or a budget); turning it off asks nothing of a model."""
    return control is not None and bool(control.enabled or control.effort or control.max_tokens is not None)


def prepare_reasoning(
    request: GenerationRequest, entry: ModelEntry, facts: ModelFacts, features: frozenset[Feature]
) -> tuple[GenerationRequest, ReasoningFormat | None]:
    """The request with its template variables, budget and markers, and the format its output is split by (None:
    text stays text). A request that asks for reasoning of a model without a reasoning format is refused."""
    control = request.reasoning
    fmt = reasoning_format(entry, facts) if request.messages is not None else None
    if fmt is None:
        if _asks(control):
            why = (
                "it has no reasoning format (set reasoning_format in models.yaml for a model whose template the "
                "server does not know)"
                if request.messages is not None
                else "reasoning controls (think, reasoning_effort, max_reasoning_tokens) need chat messages"
            )
            # Ollama's own words for this refusal, so that clients matching them keep working.
            raise CapabilityError(f"model '{entry.id}' does not support thinking: {why}", param="reasoning")
        return request, None
    if Feature.REASONING not in features:
        return request, fmt  # the backend cannot steer (a vision model): the output is still split
    control = control or ReasoningControl()
    source = facts.chat_template or ""
    variables = dict(request.template_variables)
    budget = control.max_tokens if control.max_tokens is not None else entry.config.max_reasoning_tokens
    if control.enabled is not None and "enable_thinking" in source:
        variables["enable_thinking"] = control.enabled
    elif control.enabled is False:
        budget = 0  # no template switch: the reasoning is closed as soon as it opens
    if control.effort and control.enabled is not False and "reasoning_effort" in source:
        variables["reasoning_effort"] = template_effort(control.effort)
    steered = dataclasses.replace(
        control, max_tokens=budget, start_marker=fmt.start, end_marker=fmt.end, close_text=fmt.close
    )
    return dataclasses.replace(request, reasoning=steered, template_variables=variables), fmt


class HarmonyAnswer:
    """Harmony output without tools: final-channel text is the answer; headers and markers are not."""

    def __init__(self) -> None:
        self._parser = HarmonyParser()

    def parse(self, chunk: GenerationChunk) -> GenerationChunk:
        parsed = self._parser.feed(chunk.text)
        if chunk.finish_reason is not None:
            parsed += self._parser.finish()
        chunk.text = parsed.content
        return chunk


class ReasoningOutputParser:
    """Splits each chunk's text into `reasoning` and answer text, then hands the chunk to the next parser (tool
    calls, Harmony's final channel, or none)."""

    def __init__(self, fmt: ReasoningFormat, after: OutputParser) -> None:
        self._splitter: TagSplitter | HarmonySplitter = HarmonySplitter() if fmt is HARMONY else TagSplitter(fmt)
        self._after = after
        self._started = False
        self._reasoning_tokens = 0

    def parse(self, chunk: GenerationChunk) -> GenerationChunk:
        if not self._started:
            self._started = True
            self._splitter.begin(chunk.reasoning_open)
        pieces = chunk.pieces
        if not pieces or sum(size for size, _ in pieces) != len(chunk.text):
            pieces = [(len(chunk.text), chunk.token_count)]
        reasoning, content, at = "", "", 0
        for size, tokens in pieces:
            # Piece by piece, as the backend produced them: a merged chunk counts the same as its parts.
            raw = chunk.text[at : at + size]
            at += size
            was_reasoning = self._splitter.in_reasoning
            piece_reasoning, piece_content = self._splitter.feed(raw)
            self._reasoning_tokens += reasoning_share(
                tokens, raw, piece_reasoning, piece_content, was_reasoning, self._splitter.in_reasoning
            )
            reasoning += piece_reasoning
            content += piece_content
        if chunk.finish_reason is not None:
            more_reasoning, more_content = self._splitter.finish()
            reasoning, content = reasoning + more_reasoning, content + more_content
        chunk.reasoning += reasoning
        chunk.text = content
        chunk.pieces = []
        if chunk.finish_reason is not None and chunk.stats is not None:
            # An end-of-sequence token is in a chunk's count but not in completion_tokens.
            chunk.stats.reasoning_tokens = min(self._reasoning_tokens, chunk.stats.completion_tokens)
        return self._after.parse(chunk)


def reasoning_share(
    tokens: int, raw: str, reasoning: str, content: str, was_reasoning: bool, is_reasoning: bool
) -> int:
    """How many of a piece's `tokens` went to the reasoning section (its markers included). A piece wholly inside
    it counts whole; one of several tokens that crosses a marker (a backend that emits several tokens at once) is
    divided by characters: what did not come out as answer text (`content`) was reasoning."""
    if tokens <= 0:
        return 0
    if was_reasoning and is_reasoning:
        return tokens
    if not was_reasoning and not is_reasoning and not reasoning:
        return 0  # answer text, or text held back until it is clear (a marker's beginning)
    if not raw:
        return tokens
    share = round(tokens * (len(raw) - len(content)) / len(raw))
    return max(1, min(tokens, share))


def reasoning_parser(fmt: ReasoningFormat, after: OutputParser | None) -> OutputParser:
    """The reasoning split composed with the parser for the answer (`after`: tool calls; None: plain text)."""
    if after is None:
        after = HarmonyAnswer() if fmt is HARMONY else PassThrough()
    return ReasoningOutputParser(fmt, after)
