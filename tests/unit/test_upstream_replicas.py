"""Replica choice (least busy, then fastest; conversations kept on one replica while it is not much busier),
backoff of failed replicas, and keys from models.yaml or the environment."""

from __future__ import annotations

import pytest

from heylook_llm.config.registry import UpstreamConfig
from heylook_llm.engine.upstream.replicas import (
    AFFINITY_ENTRIES,
    Replica,
    ReplicaPool,
    affinity_key,
    replicas_of,
)
from heylook_llm.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.unit


def _pool(count: int) -> ReplicaPool:
    return ReplicaPool([Replica(i, f"http://r{i}", "m", None) for i in range(count)])


def _chat(*turns: str) -> GenerationRequest:
    return GenerationRequest("m", SamplingParams(), messages=[ChatMessage("user", t) for t in turns])


def test_the_least_busy_then_fastest_healthy_replica_is_chosen() -> None:
    pool = _pool(3)
    pool.replicas[0].in_flight = 2
    pool.replicas[1].first_output(0.5)
    pool.replicas[2].first_output(0.1)
    assert pool.pick(None) is pool.replicas[2]
    pool.replicas[2].in_flight = 1
    assert pool.pick(None) is pool.replicas[1]
    pool.replicas[1].failed("connection refused")
    assert pool.pick(None) is pool.replicas[2]
    assert pool.pick(None, exclude=frozenset({2})) is pool.replicas[0]
    assert pool.pick(None, exclude=frozenset({0, 2})) is None


def test_a_conversation_stays_on_its_replica_unless_it_is_clearly_busier() -> None:
    pool = _pool(2)
    key = affinity_key(_chat("system prompt and question"))
    first = pool.pick(key)
    assert first is not None
    first.in_flight = 1  # one more than the other: still worth its cached prefix
    assert pool.pick(key) is first
    first.in_flight = 3
    other = pool.pick(key)
    assert other is not None and other is not first
    # A later turn of the same conversation has the same start, so the same key.
    assert affinity_key(_chat("system prompt and question")) == key
    assert affinity_key(_chat("another conversation")) != key


def test_remembered_conversations_are_bounded() -> None:
    pool = _pool(2)
    for i in range(AFFINITY_ENTRIES + 50):
        pool.pick(f"conversation {i}")
    assert len(pool._affinity) == AFFINITY_ENTRIES


def test_backoff_doubles_up_to_its_bound_and_a_passed_check_resets_it() -> None:
    replica = Replica(0, "http://r", "m", None, check_every_seconds=2.0)
    waits = []
    for _ in range(6):
        replica.check_failed("down", now=100.0)
        waits.append(replica.next_check - 100.0)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0]  # 8 health-check periods at most
    assert not replica.healthy and replica.errors == 0  # health checks are not request errors
    replica.failed("reset by peer", now=100.0)
    assert replica.errors == 1
    replica.passed(next_check=110.0)
    assert replica.healthy and replica.failures == 0 and replica.last_error is None


def test_replicas_take_their_own_url_model_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAIN_KEY", "k-main")
    monkeypatch.setenv("SECOND_KEY", "k-second")
    config = UpstreamConfig.model_validate(
        {
            "base_url": "http://a/v1",
            "model": "big",
            "api_key_env": "MAIN_KEY",
            "replicas": [
                {"base_url": "http://b/v1"},
                {"base_url": "http://c/v1", "model": "big-fp8", "api_key_env": "SECOND_KEY"},
                {"base_url": "http://d/v1", "api_key": "literal"},
            ],
        }
    )
    found = [(r.base_url, r.model, r.api_key) for r in replicas_of(config)]
    assert found == [
        ("http://a/v1", "big", "k-main"),
        ("http://b/v1", "big", "k-main"),
        ("http://c/v1", "big-fp8", "k-second"),
        ("http://d/v1", "big", "literal"),
    ]
