"""StopMatcher records which stop string ended the text (Anthropic's `stop_sequence`), whatever the pieces."""

from __future__ import annotations

import pytest

from heylook_llm.backends.text import StopMatcher
from heylook_llm.types import FinishReason, GenerationChunk, GenerationStats

pytestmark = pytest.mark.unit


def test_the_matched_stop_string_is_recorded_across_pieces() -> None:
    matcher = StopMatcher(["END", "STOP"])
    out = [matcher.feed(p) for p in ["hello S", "T", "OP and END"]]
    assert "".join(out) == "hello "
    assert matcher.stopped and matcher.matched == "STOP"


def test_the_stop_that_starts_first_is_the_one_recorded() -> None:
    matcher = StopMatcher(["world", "lo w"])
    assert matcher.feed("hello world") == "hel"
    assert matcher.matched == "lo w"


def test_of_two_stops_starting_at_the_same_place_the_first_listed_is_recorded() -> None:
    matcher = StopMatcher(["ab", "abc"])
    assert matcher.feed("xabc") == "x"
    assert matcher.matched == "ab"


def test_a_false_start_records_nothing() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("a ST") == "a "
    assert matcher.feed("ART") == "START"
    assert matcher.flush() == ""
    assert not matcher.stopped and matcher.matched is None


def test_a_stop_completed_by_the_last_piece_is_recorded() -> None:
    """Backends feed held-back bytes once more at the end; a stop completed there counts."""
    matcher = StopMatcher(["</s>"])
    assert matcher.feed("done</") == "done"
    assert matcher.feed("s>") == ""
    assert matcher.matched == "</s>" and matcher.flush() == ""


def test_empty_stop_strings_never_match() -> None:
    matcher = StopMatcher(["", "x"])
    assert matcher.feed("abc") == "abc" and matcher.matched is None


def test_merged_chunks_keep_the_final_chunks_stop_sequence() -> None:
    """The worker merges queued chunks; the stop string rides on the final one and must survive the merge."""
    first = GenerationChunk("hel", token_count=1)
    final = GenerationChunk(
        "lo", token_count=1, finish_reason=FinishReason.STOP, stats=GenerationStats(), stop_sequence="STOP"
    )
    first.absorb(final)
    assert (first.text, first.finish_reason, first.stop_sequence) == ("hello", FinishReason.STOP, "STOP")
