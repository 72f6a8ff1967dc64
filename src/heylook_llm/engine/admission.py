"""Several generations of one request (a list of prompts, `n` choices, parallel batch groups), admitted together.

The model's queue takes all of them or none: a request with more parts than the queue can ever hold is refused
by name (`LimitExceeded`, HTTP 413), one that does not fit now is refused whole (`ServerBusy`), and no part is
queued before every part passed the checks that need no model step. With `all_or_nothing`, the first part that
fails once queued (an empty prompt, a prompt longer than the context) cancels every other part at once, so no
work goes on for a request whose client got an error.
"""

from __future__ import annotations

import asyncio
import contextlib

from heylook_llm.config.registry import ModelEntry
from heylook_llm.engine.activity import GenerationTrace
from heylook_llm.engine.generation import ActiveGeneration, prepared, with_entry_defaults
from heylook_llm.engine.leases import Lease
from heylook_llm.engine.output import OutputParser
from heylook_llm.engine.router import ModelRouter
from heylook_llm.engine.worker import GenerationStream
from heylook_llm.errors import HeylookError, LimitExceeded
from heylook_llm.types import GenerationChunk, GenerationRequest


def check_capacity(count: int, capacity: int, param: str | None) -> None:
    """LimitExceeded when `count` generations could never be queued on one model at once."""
    if count > capacity:
        raise LimitExceeded(
            f"this request runs {count} generations at once, more than one model queues "
            f"(max_queued_requests_per_model is {capacity})",
            param=param,
        )


class _Parts:
    """The parts of one request between checkout and start: each part's lease, stream, trace and parser."""

    def __init__(self, router: ModelRouter, entry: ModelEntry, count: int) -> None:
        self.router = router
        self.entry = entry
        self.leases: list[Lease] = []
        self.streams: list[GenerationStream | None] = [None] * count
        self.parsers: list[OutputParser | None] = [None] * count
        self.traces: list[GenerationTrace] = []
        self.settled: set[int] = set()
        """Indexes failed here or handed to an ActiveGeneration (which then owns the lease and the stream)."""

    def fail(self, index: int, exc: BaseException) -> None:
        """Stop part `index` and free its hold on the model; record why (once)."""
        if index in self.settled:
            return
        self.settled.add(index)
        stream = self.streams[index]
        if stream is not None:
            stream.cancel()
        self.leases[index].release()
        if isinstance(exc, Exception):
            self.router.metrics.generation_failed(self.entry.id, exc)
            self.traces[index].failed(exc)
        else:
            self.traces[index].cancelled()

    def fail_rest(self, exc: BaseException) -> None:
        for index in range(len(self.leases)):
            self.fail(index, exc)


async def start_generations(
    router: ModelRouter,
    entry: ModelEntry,
    requests: list[GenerationRequest],
    *,
    keep_alive: float | None = None,
    all_or_nothing: bool = True,
    param: str | None = None,
) -> list[ActiveGeneration | HeylookError]:
    """Queue every request on `entry` at once and wait until each prompt is accepted.

    With `all_or_nothing` a failing part cancels all the others and its error is raised (the list then holds
    only generations); otherwise each failed part's error stands in its place. A refusal of the whole (too many
    parts, the queue full, the model not loading) is raised either way. `param` names the request field whose
    count is checked against the queue limit.
    """
    check_capacity(len(requests), router.settings.max_queued_requests_per_model, param)
    requests = [with_entry_defaults(r, entry) for r in requests]
    parts = _Parts(router, entry, len(requests))
    parts.traces = [router.metrics.trace(entry.id, r) for r in requests]
    try:
        first_lease = await router.checkout(entry, keep_alive=keep_alive, count=len(requests))
    except HeylookError as exc:
        for trace in parts.traces:
            router.metrics.generation_failed(entry.id, exc)
            trace.failed(exc)
        raise
    parts.leases = [first_lease, *(first_lease.share() for _ in requests[1:])]
    errors: dict[int, BaseException] = {}
    # Every part is checked before any is queued: a refused part costs no model time.
    for index, request in enumerate(requests):
        try:
            requests[index], parts.parsers[index] = prepared(request, entry, parts.leases[index])
        except HeylookError as exc:
            errors[index] = exc
            if all_or_nothing:
                break
    if errors and all_or_nothing:
        first_error = errors[min(errors)]
        parts.fail_rest(first_error)
        raise first_error
    for index, request in enumerate(requests):
        if index not in errors:
            parts.streams[index] = parts.leases[index].worker.submit(request)
    firsts = await _first_chunks(parts, errors, all_or_nothing)
    return _started(parts, firsts, errors, all_or_nothing)


async def _first_chunks(
    parts: _Parts, errors: dict[int, BaseException], all_or_nothing: bool
) -> dict[int, GenerationChunk]:
    """Each queued part's first chunk (the prompt was accepted); failures go into `errors`. With
    `all_or_nothing`, waiting stops at the first failure."""
    waiting: dict[asyncio.Future[GenerationChunk], int] = {}
    for index, stream in enumerate(parts.streams):
        if stream is not None:
            waiting[asyncio.ensure_future(anext(stream))] = index
    firsts: dict[int, GenerationChunk] = {}
    try:
        pending = set(waiting)
        while pending and not (errors and all_or_nothing):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for future in done:
                exc = future.exception()
                if exc is None:
                    firsts[waiting[future]] = future.result()
                else:
                    errors[waiting[future]] = exc
    except BaseException as exc:  # cancelled: the client went away while the parts waited
        _cancel_waits(waiting)
        parts.fail_rest(exc)
        raise
    _cancel_waits(waiting)
    return firsts


def _cancel_waits(waiting: dict[asyncio.Future[GenerationChunk], int]) -> None:
    for future in waiting:
        if not future.done():
            future.cancel()
        else:
            with contextlib.suppress(BaseException):
                future.exception()  # retrieved, so that asyncio does not log it as never retrieved


def _started(
    parts: _Parts, firsts: dict[int, GenerationChunk], errors: dict[int, BaseException], all_or_nothing: bool
) -> list[ActiveGeneration | HeylookError]:
    if errors and all_or_nothing:
        first_error = errors[min(errors)]
        parts.fail_rest(first_error)
        raise first_error
    results: list[ActiveGeneration | HeylookError] = []
    for index, lease in enumerate(parts.leases):
        if index in firsts:
            stream, parser = parts.streams[index], parts.parsers[index]
            assert stream is not None and parser is not None
            parts.traces[index].first_output()
            active = ActiveGeneration(lease, stream, firsts[index], parts.traces[index])
            active.parser = parser
            parts.settled.add(index)
            results.append(active)
            continue
        error = errors[index]
        parts.fail(index, error)
        if not isinstance(error, HeylookError):
            for other in results:
                if isinstance(other, ActiveGeneration):
                    other.close()
            parts.fail_rest(error)
            raise error
        results.append(error)
    return results
