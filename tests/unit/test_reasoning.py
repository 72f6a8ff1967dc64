"""Reasoning: recorded outputs of reasoning models split into reasoning and answer (and tool calls) whatever the
chunk boundaries; the engine stage turning a client's controls into template variables, budgets and markers; the
backends' reasoning gate (budget, forced close, constraint held back)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from heylook_llm.backends.base import ModelFacts
from heylook_llm.backends.reasoning_gate import ReasoningGate, Section, prompt_opens_reasoning
from heylook_llm.config.registry import ModelEntry, parse_registry
from heylook_llm.demo import CHATML_TEMPLATE, HERMES_TOOLS_TEMPLATE
from heylook_llm.demo.tokenizer import THINK_TEMPLATE
from heylook_llm.engine.output import OutputParser
from heylook_llm.engine.reasoning.formats import HARMONY, THINK, detect_reasoning_format, template_effort
from heylook_llm.engine.reasoning.stage import prepare_reasoning, reasoning_parser
from heylook_llm.engine.tool_calls.formats import FORMATS
from heylook_llm.engine.tool_calls.stage import ToolOutputParser
from heylook_llm.errors import CapabilityError
from heylook_llm.types import (
    ChatMessage,
    Feature,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    ReasoningControl,
    SamplingParams,
)

pytestmark = pytest.mark.unit

HARMONY_TEMPLATE = "{{ '<|start|>assistant<|channel|>analysis<|message|>' }}"
WEATHER_CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'

# (name, format, prompt opened the reasoning, output, reasoning, answer text)
RECORDED = [
    (
        "r1-opened",
        THINK,
        True,
        "Okay, the user says hi.\nI should greet back.\n</think>\n\nHello! How can I help?",
        "Okay, the user says hi.\nI should greet back.",
        "Hello! How can I help?",
    ),
    (
        "qwen3-written",
        THINK,
        False,
        "<think>\nThe user greets me. Keep it short.\n</think>\n\nHi there — nice to meet you.",
        "The user greets me. Keep it short.",
        "Hi there — nice to meet you.",
    ),
    ("empty-think", THINK, False, "<think>\n\n</think>\n\nJust the answer.", "", "Just the answer."),
    (
        "no-think",
        THINK,
        False,
        "  A plain answer that mentions </think> later.",
        "",
        "  A plain answer that mentions </think> later.",
    ),
    (
        "cut-while-thinking",
        THINK,
        True,
        "Still thinking about 3 < 4 and </thi",
        "Still thinking about 3 < 4 and </thi",
        "",
    ),
    ("opened-without-end", THINK, False, "<think>Only thoughts", "Only thoughts", ""),
    ("marker-like-text", THINK, False, "<thinking is fun>", "", "<thinking is fun>"),
    ("unicode", THINK, True, "Größe: 5 €\n</think>\nÉté ☀", "Größe: 5 €", "Été ☀"),
    (
        "harmony-final",
        HARMONY,
        False,
        "<|channel|>analysis<|message|>User asks for weather. Answer directly.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>",
        "User asks for weather. Answer directly.",
        "It is sunny.",
    ),
    (
        "harmony-closed-by-budget",
        HARMONY,
        False,
        "<|channel|>analysis<|message|>Thinking a lot<|end|><|start|>assistant<|channel|>final<|message|>Done",
        "Thinking a lot",
        "Done",
    ),
]


def _parse(parser: OutputParser, pieces: list[str], opened: bool) -> GenerationChunk:
    """Feed `pieces` as chunks (the last one ends the output) and merge what comes out."""
    total = GenerationChunk("")
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        chunk = GenerationChunk(piece, reasoning_open=opened and index == 0)
        if last:
            chunk.finish_reason = FinishReason.STOP
        total.absorb(parser.parse(chunk))
    return total


def _splits(text: str) -> list[list[str]]:
    """The text whole, cut in two at every character, and one character at a time."""
    return [[text], *([text[:i], text[i:]] for i in range(1, len(text))), list(text)]


@pytest.mark.parametrize(
    ("fmt", "opened", "output", "reasoning", "answer"), [r[1:] for r in RECORDED], ids=[r[0] for r in RECORDED]
)
def test_recorded_outputs_split_alike_at_every_character(
    fmt: object, opened: bool, output: str, reasoning: str, answer: str
) -> None:
    assert fmt is THINK or fmt is HARMONY
    for pieces in _splits(output):
        merged = _parse(reasoning_parser(fmt, None), pieces, opened)
        assert (merged.reasoning, merged.text) == (reasoning, answer), pieces


def test_reasoning_is_split_before_tool_calls_are_parsed() -> None:
    thought = "<think>\nI need the weather tool, not <tool_call> in prose.\n</think>\n\n"
    output = f"{thought}<tool_call>\n{WEATHER_CALL}\n</tool_call>"
    for pieces in _splits(output):
        parser = reasoning_parser(THINK, ToolOutputParser(FORMATS["hermes"].parser()))
        merged = _parse(parser, pieces, opened=False)
        assert merged.reasoning == "I need the weather tool, not <tool_call> in prose."
        assert [(c.name, c.arguments) for c in merged.tool_calls] == [("get_weather", '{"city": "Paris"}')]
        assert merged.text == "" and merged.finish_reason is FinishReason.TOOL_CALLS


def test_harmony_calls_after_analysis_reach_the_tool_parser() -> None:
    output = (
        "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
    )
    for pieces in _splits(output):
        parser = reasoning_parser(HARMONY, ToolOutputParser(FORMATS["harmony"].parser()))
        merged = _parse(parser, pieces, opened=False)
        assert merged.reasoning == "Need the weather."
        assert [(c.name, c.arguments) for c in merged.tool_calls] == [("get_weather", '{"city": "Paris"}')]


def test_formats_are_detected_from_templates() -> None:
    assert detect_reasoning_format(THINK_TEMPLATE) is THINK
    assert detect_reasoning_format(HARMONY_TEMPLATE) is HARMONY
    assert detect_reasoning_format(CHATML_TEMPLATE) is None and detect_reasoning_format(HERMES_TOOLS_TEMPLATE) is None
    assert detect_reasoning_format(None) is None
    assert [template_effort(e) for e in ("minimal", "low", "medium", "high", "xhigh")] == [
        "low",
        "low",
        "medium",
        "high",
        "high",
    ]


# --- the engine stage ------------------------------------------------------------------------------------


def _entry(**config: object) -> ModelEntry:
    registry = parse_registry(
        {"models": [{"id": "m", "provider": "llama_cpp", "config": {"model_path": Path("m.gguf"), **config}}]}, None
    )
    entry = registry.get("m")
    assert entry is not None
    return entry


def _request(control: ReasoningControl | None) -> GenerationRequest:
    return GenerationRequest("m", SamplingParams(), messages=[ChatMessage("user", "hi")], reasoning=control)


STEERS = frozenset({Feature.CHAT, Feature.REASONING})


def test_controls_become_template_variables_budget_and_markers() -> None:
    facts = ModelFacts(chat_template=THINK_TEMPLATE)
    off, fmt = prepare_reasoning(_request(ReasoningControl(enabled=False)), _entry(), facts, STEERS)
    assert fmt is THINK and off.template_variables == {"enable_thinking": False}
    assert off.reasoning is not None and off.reasoning.max_tokens is None
    assert (off.reasoning.start_marker, off.reasoning.end_marker, off.reasoning.close_text) == (
        "<think>",
        "</think>",
        "</think>",
    )
    high, _ = prepare_reasoning(_request(ReasoningControl(True, "xhigh", 64)), _entry(), facts, STEERS)
    assert high.template_variables == {"enable_thinking": True, "reasoning_effort": "high"}
    assert high.reasoning is not None and high.reasoning.max_tokens == 64


def test_the_models_yaml_budget_applies_unless_the_request_sets_one() -> None:
    facts = ModelFacts(chat_template=THINK_TEMPLATE)
    entry = _entry(max_reasoning_tokens=100)
    default, _ = prepare_reasoning(_request(None), entry, facts, STEERS)
    assert default.reasoning is not None and default.reasoning.max_tokens == 100
    asked, _ = prepare_reasoning(_request(ReasoningControl(max_tokens=5)), entry, facts, STEERS)
    assert asked.reasoning is not None and asked.reasoning.max_tokens == 5


def test_off_without_a_template_switch_closes_the_reasoning_at_once() -> None:
    facts = ModelFacts(chat_template="{{ '<think>' }}")
    off, _ = prepare_reasoning(_request(ReasoningControl(enabled=False)), _entry(), facts, STEERS)
    assert off.template_variables == {} and off.reasoning is not None and off.reasoning.max_tokens == 0


def test_asking_a_model_without_reasoning_format_is_refused_but_off_passes() -> None:
    facts = ModelFacts(chat_template=CHATML_TEMPLATE)
    with pytest.raises(CapabilityError):
        prepare_reasoning(_request(ReasoningControl(enabled=True)), _entry(), facts, STEERS)
    with pytest.raises(CapabilityError):
        prepare_reasoning(_request(ReasoningControl(max_tokens=3)), _entry(), facts, STEERS)
    request = _request(ReasoningControl(enabled=False))
    assert prepare_reasoning(request, _entry(), facts, STEERS) == (request, None)
    named = _entry(reasoning_format="think")
    assert prepare_reasoning(_request(None), named, facts, STEERS)[1] is THINK
    none = _entry(reasoning_format="none")
    assert prepare_reasoning(_request(None), none, ModelFacts(chat_template=THINK_TEMPLATE), STEERS)[1] is None


def test_raw_prompts_are_not_split_and_take_no_controls() -> None:
    raw = dataclasses.replace(_request(None), messages=None, prompt="<think>")
    facts = ModelFacts(chat_template=THINK_TEMPLATE)
    assert prepare_reasoning(raw, _entry(), facts, STEERS)[1] is None
    with pytest.raises(CapabilityError):
        prepare_reasoning(dataclasses.replace(raw, reasoning=ReasoningControl(enabled=True)), _entry(), facts, STEERS)


# --- the backends' gate ----------------------------------------------------------------------------------

CONTROL = ReasoningControl(max_tokens=3, start_marker="<think>", end_marker="</think>", close_text="</think>")
CLOSE = [90, 91, 92]  # the close text's tokens: "</", "think", ">"
PIECES = {90: b"</", 91: b"think", 92: b">", 7: b" a", 8: b"\n", 1: b"<th", 2: b"ink>"}


def _accept(gate: ReasoningGate, tokens: list[int]) -> None:
    for token in tokens:
        gate.accept(token, PIECES[token])


def test_a_spent_budget_forces_the_close_tokens_then_the_answer_is_free() -> None:
    gate = ReasoningGate(CONTROL, CLOSE, opened=True)
    assert gate.defers_constraint and gate.forced_token() is None
    _accept(gate, [7, 7])
    assert gate.forced_token() is None
    _accept(gate, [7])
    forced = []
    while (token := gate.forced_token()) is not None:
        forced.append(token)
        _accept(gate, [token])
    assert forced == CLOSE and gate.section is Section.ANSWER and gate.closed_by_budget
    assert not gate.defers_constraint and gate.reasoning_tokens == 6


def test_the_model_closing_in_time_forces_nothing() -> None:
    gate = ReasoningGate(CONTROL, CLOSE, opened=False)
    _accept(gate, [8, 1, 2])  # "\n<think>" split across tokens
    assert gate.section is Section.REASONING and not gate.defers_constraint  # not opened by the prompt
    _accept(gate, [7, 90, 91, 92])
    assert gate.section is Section.ANSWER and gate.forced_token() is None and not gate.closed_by_budget


def test_an_answer_without_reasoning_is_never_forced() -> None:
    gate = ReasoningGate(dataclasses.replace(CONTROL, max_tokens=0), CLOSE, opened=False)
    _accept(gate, [7])
    assert gate.section is Section.ANSWER and gate.forced_token() is None


def test_prompts_open_the_reasoning_when_they_end_with_the_start_marker() -> None:
    assert prompt_opens_reasoning("<|im_start|>assistant\n<think>\n", CONTROL)
    assert not prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n", CONTROL)
    assert not prompt_opens_reasoning("<think>", None)
