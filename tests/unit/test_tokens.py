"""common_prefix: the length of the shared start of two token lists, on every shape of input."""

from __future__ import annotations

import random

import pytest

from heylook_llm.backends.tokens import common_prefix

pytestmark = pytest.mark.unit


def _by_walking(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([], [], 0),
        ([], [1, 2], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2, 3, 4, 5], 3),
        ([1, 2, 3, 4, 5], [1, 2], 2),
        ([9, 2, 3], [1, 2, 3], 0),
        ([1, 2, 3, 4], [1, 2, 3, 9], 3),
        ([1, 2, 7, 4, 5, 6], [1, 2, 3, 4, 5, 6], 2),
    ],
)
def test_known_cases(a: list[int], b: list[int], expected: int) -> None:
    assert common_prefix(a, b) == expected
    assert common_prefix(b, a) == expected


def test_matches_a_token_by_token_walk_on_random_lists() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        a = [rng.randrange(3) for _ in range(rng.randrange(0, 80))]
        b = a[: rng.randrange(0, len(a) + 1)] + [rng.randrange(3) for _ in range(rng.randrange(0, 12))]
        assert common_prefix(a, b) == _by_walking(a, b)
        assert common_prefix(b, a) == _by_walking(a, b)
