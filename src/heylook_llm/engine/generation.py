"""A generation in flight: started through the router (model held, request queued on its worker), read as
parsed chunks, closed to release the model and cancel what is left."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from heylook_llm.config.registry import ModelEntry
from heylook_llm.engine.activity import GenerationTrace
from heylook_llm.engine.features import refuse_undeclared
from heylook_llm.engine.leases import Lease
from heylook_llm.engine.output import CollectedOutput, OutputParser, PassThrough, output_parser_for
from heylook_llm.engine.reasoning.stage import prepare_reasoning, reasoning_parser
from heylook_llm.engine.router import ModelRouter
from heylook_llm.engine.tool_calls.stage import ToolOutputParser, prepare_tools
from heylook_llm.engine.worker import GenerationStream
from heylook_llm.errors import HeylookError
from heylook_llm.types import ChatMessage, GenerationChunk, GenerationRequest, GenerationStats


def with_entry_defaults(request: GenerationRequest, entry: ModelEntry) -> GenerationRequest:
    """Apply what the registry entry adds to every request: its system prompt, when the chat has none."""
    if entry.system and request.messages is not None and not any(m.role == "system" for m in request.messages):
        return dataclasses.replace(request, messages=[ChatMessage("system", entry.system), *request.messages])
    return request


class ActiveGeneration:
    """A generation that has started: the model is held until `close()`, which also cancels the worker side.

    `close()` is synchronous so that it runs to the end in the `finally` of a task being cancelled. Chunks pass
    through `parser`, the model's output parser (tool calls, reasoning), once, before any dialect sees them.
    """

    def __init__(self, lease: Lease, stream: GenerationStream, first: GenerationChunk, trace: GenerationTrace) -> None:
        self.lease = lease
        self._stream = stream
        self.first = first
        self._trace = trace
        self._ended = False
        self.parser: OutputParser = PassThrough()

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        async for chunk in self._raw_chunks():
            yield self.parser.parse(chunk)

    async def _raw_chunks(self) -> AsyncIterator[GenerationChunk]:
        chunk = self.first
        while True:
            # Once per chunk, not per token: fast streams merge tokens into one chunk per stream interval.
            self._trace.tokens(chunk.token_count)
            if chunk.finish_reason is not None and not self._ended:
                # Every generation ends here, whatever the dialect: the one place its figures are recorded.
                self._ended = True
                stats = chunk.stats if chunk.stats is not None else GenerationStats()
                stats.load_seconds = self.lease.load_seconds
                chunk.stats = stats
                self.lease.metrics.generation_finished(self.lease.entry.id, stats)
                self._trace.finished(chunk.finish_reason, stats)
            yield chunk
            if chunk.finish_reason is not None:
                return
            try:
                chunk = await anext(self._stream)
            except Exception as exc:
                self._ended = True
                self.lease.metrics.generation_failed(self.lease.entry.id, exc)
                self._trace.failed(exc)
                raise

    async def collect(self) -> CollectedOutput:
        """Read the generation to its end, whole (what a non-streamed response encodes), and close it."""
        output = CollectedOutput()
        try:
            async for chunk in self.chunks():
                output.add(chunk)
                if chunk.finish_reason is not None:
                    return output
        finally:
            self.close()
        raise AssertionError("a generation ended without a finish reason")

    def close(self) -> None:
        if not self._ended:
            self._ended = True
            self.lease.metrics.generation_cancelled(self.lease.entry.id)
            self._trace.cancelled()
        self._stream.cancel()
        self.lease.release()


async def start_generation(
    router: ModelRouter, entry: ModelEntry, request: GenerationRequest, *, keep_alive: float | None = None
) -> ActiveGeneration:
    """Acquire the model, queue the request and wait until the prompt is accepted (errors surface here).

    `keep_alive`: seconds the model stays loaded after this request (None: the server default).
    """
    request = with_entry_defaults(request, entry)
    trace = router.metrics.trace(entry.id, request)
    try:
        lease = await router.checkout(entry, keep_alive=keep_alive)
    except HeylookError as exc:
        router.metrics.generation_failed(entry.id, exc)
        trace.failed(exc)
        raise
    stream: GenerationStream | None = None
    try:
        request, parser = prepared(request, entry, lease)
        stream = lease.worker.submit(request)
        first = await anext(stream)
    except BaseException as exc:
        if stream is not None:
            stream.cancel()
        lease.release()
        if isinstance(exc, Exception):
            router.metrics.generation_failed(entry.id, exc)
            trace.failed(exc)
        else:
            trace.cancelled()  # the client went away while the request waited
        raise
    trace.first_output()
    active = ActiveGeneration(lease, stream, first, trace)
    active.parser = parser
    return active


def prepared(request: GenerationRequest, entry: ModelEntry, lease: Lease) -> tuple[GenerationRequest, OutputParser]:
    """The request as the model's backend will run it and the parser for its output; raises the domain error that
    refuses it (a feature the backend does not declare, a tool definition it cannot take, ...)."""
    backend = lease.worker.backend
    refuse_undeclared(request, backend.features, entry.id)
    request, tool_parser = prepare_tools(request, entry, backend.facts)
    request, reasoning = prepare_reasoning(request, entry, backend.facts, backend.features)
    backend.check_request(request)
    tools = ToolOutputParser(tool_parser) if tool_parser is not None else None
    if reasoning is not None:
        # Reasoning first, then tool calls in the answer part: a call written while reasoning is not a call.
        return request, reasoning_parser(reasoning, tools)
    return request, tools if tools is not None else output_parser_for(entry, request)
