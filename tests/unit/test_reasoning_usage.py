"""The reasoning split counts the generated tokens that went to the reasoning section (usage's reasoning_tokens):
exactly per token as the backend emitted them (merged chunks keep their parts), divided by characters only where one
piece of several tokens crosses the end marker."""

from __future__ import annotations

import pytest

from heylook_llm.engine.reasoning.formats import HARMONY, THINK, ReasoningFormat
from heylook_llm.engine.reasoning.stage import reasoning_parser, reasoning_share
from heylook_llm.types import FinishReason, GenerationChunk, GenerationStats

pytestmark = pytest.mark.unit


def _count(fmt: ReasoningFormat, pieces: list[tuple[str, int]], *, opened: bool, completion: int) -> GenerationChunk:
    """Parse (text, token count) pieces as one generation; returns the final parsed chunk."""
    parser = reasoning_parser(fmt, None)
    last = GenerationChunk("")
    for index, (text, tokens) in enumerate(pieces):
        chunk = GenerationChunk(text, token_count=tokens, reasoning_open=opened and index == 0)
        if index == len(pieces) - 1:
            chunk.finish_reason = FinishReason.STOP
            chunk.stats = GenerationStats(completion_tokens=completion)
        last = parser.parse(chunk)
    return last


def _reasoning_tokens(final: GenerationChunk) -> int:
    assert final.stats is not None
    return final.stats.reasoning_tokens


def test_one_token_per_chunk_counts_the_reasoning_and_its_end_marker() -> None:
    pieces = [("I ", 1), ("think", 1), ("</think>", 1), ("\n\n", 1), ("Hi", 1), (" there", 1)]
    final = _count(THINK, pieces, opened=True, completion=6)
    assert _reasoning_tokens(final) == 3


def test_a_written_start_marker_counts_too() -> None:
    pieces = [("\n", 1), ("<think>", 1), ("a", 1), ("</think>", 1), ("b", 1)]
    assert _reasoning_tokens(_count(THINK, pieces, opened=False, completion=5)) == 3


def test_output_without_reasoning_counts_nothing() -> None:
    pieces = [("Hello", 1), (" <think> is", 1), (" text here", 1)]
    assert _reasoning_tokens(_count(THINK, pieces, opened=False, completion=3)) == 0


def test_reasoning_cut_by_the_budget_counts_every_token() -> None:
    """An end-of-sequence chunk counts a token that completion_tokens leaves out: the count never exceeds it."""
    pieces = [("still", 1), (" thinking", 1), ("", 1)]
    assert _reasoning_tokens(_count(THINK, pieces, opened=True, completion=2)) == 2


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5])
def test_merged_chunks_count_as_their_parts(cut: int) -> None:
    """The worker merges queued chunks (`absorb`); each part's text and tokens are kept, so the count is exact."""
    parts = [("I ", 1), ("think", 1), ("</think>", 1), ("\n\n", 1), ("Hi", 1), (" there", 1)]
    chunks = [GenerationChunk(text, token_count=tokens) for text, tokens in parts]
    head, tail = chunks[0], chunks[cut]
    for chunk in chunks[1:cut]:
        head.absorb(chunk)
    for chunk in chunks[cut + 1 :]:
        tail.absorb(chunk)
    head.reasoning_open = True
    tail.finish_reason, tail.stats = FinishReason.STOP, GenerationStats(completion_tokens=6)
    parser = reasoning_parser(THINK, None)
    first, final = parser.parse(head), parser.parse(tail)
    assert _reasoning_tokens(final) == 3
    assert (first.reasoning + final.reasoning, first.text + final.text) == ("I think", "Hi there")


def test_a_multi_token_chunk_across_the_end_marker_is_divided_by_characters() -> None:
    # 10 tokens in one piece: "abcd</think>" (12 characters) then "efghijkl" (8): 12/20 of 10.
    final = _count(THINK, [("abcd</think>efghijkl", 10)], opened=True, completion=10)
    assert _reasoning_tokens(final) == 6
    assert (final.reasoning, final.text) == ("abcd", "efghijkl")


def test_harmony_counts_the_analysis_message() -> None:
    pieces = [
        ("<|channel|>analysis<|message|>", 3),
        ("Need", 1),
        (" rain", 1),
        ("<|end|>", 1),
        ("<|start|>assistant<|channel|>final<|message|>", 5),
        ("Hi", 1),
    ]
    final = _count(HARMONY, pieces, opened=False, completion=12)
    assert _reasoning_tokens(final) == 6
    assert final.text == "Hi"


@pytest.mark.parametrize(
    ("tokens", "raw", "reasoning", "content", "was", "now", "expected"),
    [
        (0, "x", "x", "", True, True, 0),  # a chunk that carries no token
        (4, "", "", "", True, True, 4),
        (3, "answer", "", "answer", False, False, 0),
        (5, "a</think>" + "b" * 90, "a", "b" * 90, True, False, 1),  # at least one: the marker is a token
    ],
)
def test_reasoning_share_edges(
    tokens: int, raw: str, reasoning: str, content: str, was: bool, now: bool, expected: int
) -> None:
    assert reasoning_share(tokens, raw, reasoning, content, was, now) == expected
