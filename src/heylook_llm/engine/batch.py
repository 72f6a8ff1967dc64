"""Batch processing of one chat request that holds several conversations ("groups").

Splitting: a message whose text is `___CONVERSATION_BOUNDARY___` separates groups; a message that contains the
marker is cut there (the text before ends one group, the text after starts the next, same role). Without any
marker, each user message is a group together with the non-user messages (system prompts) just before it.
The messages before the first user message (the leading system prompt, say) are the shared prefix: every group
sees them first, in every mode.

Modes (`ProcessingMode`):
- sequential: shared prefix + the group, one group after another; groups do not see each other.
- sequential_with_context: one after another; each group also sees every earlier group's messages and answer.
- parallel: shared prefix + the group, all groups submitted at once so that the model's worker batches them.
- parallel_with_context: as parallel, but the shared prefix is evaluated once first (a one-token generation)
  so that every group reuses it from the prefix cache instead of evaluating it again.

Every mode yields `Piece`s tagged with the group index, so streaming and collected responses share one path.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from heylook_llm.engine.fanout import Piece, StartGeneration, already_started, failed, interleave
from heylook_llm.errors import HeylookError, InvalidRequest
from heylook_llm.types import ChatMessage, GenerationRequest, GenerationStats

log = logging.getLogger(__name__)

CONVERSATION_BOUNDARY = "___CONVERSATION_BOUNDARY___"


class ProcessingMode(enum.StrEnum):
    CONVERSATION = "conversation"
    SEQUENTIAL = "sequential"
    SEQUENTIAL_WITH_CONTEXT = "sequential_with_context"
    PARALLEL = "parallel"
    PARALLEL_WITH_CONTEXT = "parallel_with_context"

    @property
    def parallel(self) -> bool:
        return self in (ProcessingMode.PARALLEL, ProcessingMode.PARALLEL_WITH_CONTEXT)


@dataclass(slots=True)
class Groups:
    shared: list[ChatMessage]
    """Messages every group sees first: those before the first user message."""
    groups: list[list[ChatMessage]]


def _segments(messages: list[ChatMessage]) -> list[list[ChatMessage]]:
    segments: list[list[ChatMessage]] = [[]]
    for message in messages:
        parts = message.content.split(CONVERSATION_BOUNDARY)
        if len(parts) == 1:
            segments[-1].append(message)
            continue
        for i, part in enumerate(parts):
            if i > 0:
                segments.append([])
            if part.strip():
                # The message's images stay with its first part.
                images = message.images if i == 0 else []
                segments[-1].append(dataclasses.replace(message, content=part.strip(), images=images))
    return [s for s in segments if s]


def _per_user_message(messages: list[ChatMessage]) -> list[list[ChatMessage]]:
    groups: list[list[ChatMessage]] = []
    current: list[ChatMessage] = []
    for message in messages:
        current.append(message)
        if message.role == "user":
            groups.append(current)
            current = []
    if current:
        # Messages after the last user message (an assistant prefill, say) belong to the last group.
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


def split_groups(messages: list[ChatMessage]) -> Groups:
    """The shared prefix and groups of a batch request; raises InvalidRequest when no user message is there."""
    marked = any(CONVERSATION_BOUNDARY in m.content for m in messages)
    groups = _segments(messages) if marked else _per_user_message(messages)
    shared: list[ChatMessage] = []
    if groups:
        first = groups[0]
        lead = next((i for i, m in enumerate(first) if m.role == "user"), len(first))
        shared, rest = first[:lead], first[lead:]
        groups = ([rest] if rest else []) + groups[1:]
    groups = [g for g in groups if any(m.role == "user" for m in g)]
    if not groups:
        raise InvalidRequest("a batch request needs at least one user message to answer", param="messages")
    return Groups(shared, groups)


@dataclass(slots=True)
class GroupTiming:
    started: float = 0.0
    ended: float = 0.0


@dataclass(slots=True)
class BatchRun:
    """What a batch did, filled while its pieces are read."""

    mode: ProcessingMode
    groups: list[list[ChatMessage]]
    shared: list[ChatMessage]
    requests: list[GenerationRequest] = field(default_factory=list)
    """The request each group ran (filled as groups start; with_context modes build them from earlier answers)."""
    timings: list[GroupTiming] = field(default_factory=list)
    shared_prefix_stats: GenerationStats | None = None
    started: float = 0.0
    ended: float = 0.0

    @property
    def total_seconds(self) -> float:
        return self.ended - self.started

    def parallel_speedup(self) -> float | None:
        """Sum of the groups' own latencies over the wall time from the first group's start to the last one's
        end (the shared prefix evaluation excluded): how many groups were generating at once, on average."""
        done = [t for t in self.timings if t.ended]
        if not done:
            return None
        span = max(t.ended for t in done) - min(t.started for t in done)
        spent = sum(t.ended - t.started for t in done)
        return spent / span if span > 0 else None

    @property
    def shared_prefix_seconds(self) -> float:
        """Time spent evaluating the shared prefix before the groups started (parallel_with_context)."""
        first = min((t.started for t in self.timings if t.started), default=self.started)
        return max(0.0, first - self.started) if self.mode is ProcessingMode.PARALLEL_WITH_CONTEXT else 0.0


def _group_request(base: GenerationRequest, index: int, messages: list[ChatMessage]) -> GenerationRequest:
    request_id = f"{base.request_id}-{index}" if base.request_id else ""
    return dataclasses.replace(base, messages=messages, request_id=request_id)


async def _evaluate_shared_prefix(start: StartGeneration, base: GenerationRequest, run: BatchRun) -> None:
    """Generate one token after the shared messages so their tokens sit in the prefix cache before the groups
    start; a failure here is left for the groups to report (they hold the same prefix)."""
    sampling = dataclasses.replace(base.sampling, max_tokens=1, temperature=0.0, stop=())
    request = dataclasses.replace(base, messages=run.shared, sampling=sampling, response_format=None)
    try:
        active = await start(request)
    except HeylookError as exc:
        log.info("evaluating the shared prefix of a batch failed: %s", exc.message)
        return
    try:
        async for chunk in active.chunks():
            if chunk.finish_reason is not None:
                run.shared_prefix_stats = chunk.stats
    except HeylookError as exc:
        log.info("evaluating the shared prefix of a batch failed: %s", exc.message)
    finally:
        active.close()


async def run_batch(
    start: StartGeneration, base: GenerationRequest, mode: ProcessingMode, split: Groups, run: BatchRun | None = None
) -> AsyncGenerator[Piece, None]:
    """Run every group of `split` in `mode`, yielding each group's chunks (or its error) tagged with its index.

    `base` gives the model, sampling and format; each group's request replaces its messages. `run` (if given)
    collects the requests and the timing.
    """
    if run is None:
        run = BatchRun(mode, split.groups, split.shared)
    run.timings = [GroupTiming() for _ in split.groups]
    run.started = time.perf_counter()
    try:
        if mode.parallel:
            async for piece in _parallel(start, base, run):
                yield piece
        else:
            async for piece in _sequential(start, base, run):
                yield piece
    finally:
        run.ended = time.perf_counter()


async def _parallel(start: StartGeneration, base: GenerationRequest, run: BatchRun) -> AsyncGenerator[Piece, None]:
    if run.shared and run.mode is ProcessingMode.PARALLEL_WITH_CONTEXT:
        await _evaluate_shared_prefix(start, base, run)
    run.requests = [_group_request(base, i, [*run.shared, *g]) for i, g in enumerate(run.groups)]
    now = time.perf_counter()
    for timing in run.timings:
        timing.started = now
    # Admitted together (or refused whole); a group refused once queued reports its error in its place.
    parts = await start.each(run.requests, param="messages")
    starters = [failed(p) if isinstance(p, HeylookError) else already_started(p) for p in parts]
    async for piece in interleave(starters):
        if piece.error is not None or (piece.chunk is not None and piece.chunk.finish_reason is not None):
            run.timings[piece.index].ended = time.perf_counter()
        yield piece


async def _sequential(start: StartGeneration, base: GenerationRequest, run: BatchRun) -> AsyncGenerator[Piece, None]:
    history: list[ChatMessage] = []
    keep_history = run.mode is ProcessingMode.SEQUENTIAL_WITH_CONTEXT
    for index, group in enumerate(run.groups):
        request = _group_request(base, index, [*run.shared, *history, *group])
        run.requests.append(request)
        timing = run.timings[index]
        timing.started = time.perf_counter()
        answer: list[str] = []
        try:
            active = await start(request)
            try:
                async for chunk in active.chunks():
                    answer.append(chunk.text)
                    yield Piece(index, chunk)
            finally:
                active.close()
        except HeylookError as exc:
            timing.ended = time.perf_counter()
            yield Piece(index, None, exc)
            # A failed group adds nothing to the history: later groups see only answered ones.
            continue
        timing.ended = time.perf_counter()
        if keep_history:
            history += [*group, ChatMessage("assistant", "".join(answer))]
