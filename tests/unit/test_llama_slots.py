"""When the prefix cache copies a prefix from another slot rather than evaluate it again."""

from __future__ import annotations

import pytest

from heylook_llm.backends.llama_slots import MIN_BORROWED_TOKENS, SlotTable

pytestmark = pytest.mark.unit


def test_a_unified_cache_always_borrows_because_a_copy_only_tags_cells() -> None:
    table = SlotTable(None, 4, True, stream_copy_seconds=0.0)
    assert table.borrow_pays(1)
    assert not table.borrow_pays(0)


def test_before_any_measurement_a_fixed_prefix_length_decides() -> None:
    table = SlotTable(None, 4, True, stream_copy_seconds=0.01)
    assert not table.borrow_pays(MIN_BORROWED_TOKENS - 1)
    assert table.borrow_pays(MIN_BORROWED_TOKENS)


def test_measured_evaluation_time_is_weighed_against_the_copy() -> None:
    table = SlotTable(None, 4, True, stream_copy_seconds=0.012)
    table.note_evaluation(56, 0.090)  # 1.6 ms a token: 30 tokens take 48 ms, more than the 12 ms copy
    assert table.token_seconds == pytest.approx(0.090 / 56)
    assert table.borrow_pays(30)
    assert not table.borrow_pays(7)
    table.note_evaluation(4, 10.0)  # a step of a few tokens is mostly fixed cost: not counted
    assert table.token_seconds == pytest.approx(0.090 / 56)
    table.note_evaluation(100, 0.050)  # later prompts run faster: the estimate follows
    assert 0.0005 < table.token_seconds < 0.090 / 56


def test_unknown_copy_cost_falls_back_to_the_fixed_length() -> None:
    table = SlotTable(None, 4, True, stream_copy_seconds=None)
    table.note_evaluation(56, 0.090)
    assert not table.borrow_pays(MIN_BORROWED_TOKENS - 1)
    assert table.borrow_pays(MIN_BORROWED_TOKENS)
