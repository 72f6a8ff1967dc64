"""Splitting a batch request into a shared prefix and groups, and the group runs on a fake backend."""

from __future__ import annotations

import pytest

from heylook_llm.config.registry import parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.batch import CONVERSATION_BOUNDARY, BatchRun, ProcessingMode, run_batch, split_groups
from heylook_llm.engine.service import Engine
from heylook_llm.errors import InvalidRequest
from heylook_llm.types import ChatMessage, GenerationRequest, SamplingParams
from tests.support.fake_backend import FakeWorld

pytestmark = pytest.mark.unit


def _texts(groups: list[list[ChatMessage]]) -> list[list[str]]:
    return [[f"{m.role}:{m.content}" for m in g] for g in groups]


def test_without_marker_each_user_message_is_a_group_and_leading_system_is_shared() -> None:
    split = split_groups(
        [
            ChatMessage("system", "be brief"),
            ChatMessage("user", "a"),
            ChatMessage("system", "now in French"),
            ChatMessage("user", "b"),
            ChatMessage("assistant", "prefill"),
        ]
    )
    assert _texts([split.shared]) == [["system:be brief"]]
    assert _texts(split.groups) == [["user:a"], ["system:now in French", "user:b", "assistant:prefill"]]


def test_marker_message_separates_and_embedded_marker_splits_the_text() -> None:
    split = split_groups(
        [
            ChatMessage("system", "shared"),
            ChatMessage("user", f"first{CONVERSATION_BOUNDARY}second"),
            ChatMessage("user", CONVERSATION_BOUNDARY),
            ChatMessage("user", "third"),
            ChatMessage("assistant", "kept with third"),
        ]
    )
    assert _texts([split.shared]) == [["system:shared"]]
    assert _texts(split.groups) == [["user:first"], ["user:second"], ["user:third", "assistant:kept with third"]]


def test_a_first_segment_without_user_message_is_the_shared_prefix() -> None:
    split = split_groups(
        [ChatMessage("system", "s"), ChatMessage("user", CONVERSATION_BOUNDARY), ChatMessage("user", "q")]
    )
    assert _texts([split.shared]) == [["system:s"]]
    assert _texts(split.groups) == [["user:q"]]


def test_no_user_message_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        split_groups([ChatMessage("system", "only instructions")])


def test_unknown_mode_names_are_not_modes() -> None:
    assert [m.value for m in ProcessingMode] == [
        "conversation",
        "sequential",
        "sequential_with_context",
        "parallel",
        "parallel_with_context",
    ]
    assert ProcessingMode.PARALLEL.parallel and not ProcessingMode.SEQUENTIAL.parallel


@pytest.mark.parametrize("mode", [m for m in ProcessingMode if m is not ProcessingMode.CONVERSATION])
async def test_every_mode_answers_every_group_in_order(mode: ProcessingMode) -> None:
    world = FakeWorld(load_seconds=0.0)
    registry = parse_registry({"models": [{"id": "a", "provider": "llama_cpp", "config": {"model_path": "a"}}]}, None)
    engine = Engine(registry, ServerSettings(), world.factory)
    messages = [ChatMessage("system", "s"), ChatMessage("user", "x"), ChatMessage("user", "y")]
    split = split_groups(messages)
    base = GenerationRequest("a", SamplingParams(max_tokens=2), messages=messages, request_id="chatcmpl-1")
    run = BatchRun(mode, split.groups, split.shared)
    finished = {
        p.index
        for p in [p async for p in run_batch(engine.starter(engine.resolve("a")), base, mode, split, run)]
        if p.chunk and p.chunk.finish_reason
    }
    assert finished == {0, 1}
    assert [r.request_id for r in run.requests] == ["chatcmpl-1-0", "chatcmpl-1-1"]
    second = [m.content for m in run.requests[1].messages or []]
    # Context modes: the second group sees the first group's prompt and answer; others only the shared prefix.
    expected = ["s", "x", "t0 t1 ", "y"] if mode is ProcessingMode.SEQUENTIAL_WITH_CONTEXT else ["s", "y"]
    assert second == expected
    assert all(t.ended >= t.started > 0 for t in run.timings)
    await engine.close()
