from __future__ import annotations

import pytest

from heylook_llm.backends.text import StopMatcher, Utf8Assembler

pytestmark = pytest.mark.unit


def test_multibyte_characters_are_never_split() -> None:
    data = "héllo 🙂 wörld".encode()
    assembler = Utf8Assembler()
    pieces = [assembler.feed(data[i : i + 1]) for i in range(len(data))]
    assert "".join(pieces) + assembler.flush() == "héllo 🙂 wörld"
    assert all("\ufffd" not in p for p in pieces)


def test_invalid_bytes_become_replacement_characters() -> None:
    assembler = Utf8Assembler()
    assert assembler.feed(b"a\xffb") == "a\ufffdb"
    assert assembler.feed(b"\xe2\x82") == ""
    assert assembler.flush() == "\ufffd"


def test_stop_string_across_pieces_is_cut_and_never_emitted() -> None:
    matcher = StopMatcher(["STOP"])
    out = [matcher.feed(p) for p in ["hello S", "T", "OP and more"]]
    assert "".join(out) == "hello "
    assert matcher.stopped
    assert matcher.feed("later") == "" and matcher.flush() == ""


def test_false_start_of_a_stop_string_is_released() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("a ST") == "a "
    assert matcher.feed("ART") == "START"
    assert not matcher.stopped
    assert matcher.feed("xx S") == "xx "
    assert matcher.flush() == "S"


def test_earliest_of_several_stops_wins() -> None:
    matcher = StopMatcher(["world", "lo w"])
    assert matcher.feed("hello world") == "hel"
    assert matcher.stopped


def test_no_stops_passes_text_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == "abc" and matcher.flush() == ""
