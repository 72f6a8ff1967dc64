"""One generation plan for a request that runs several generations: `n` choices of one prompt, or the groups of a
batch processing mode. The plan starts them and yields their chunks tagged by index (`Piece`); the dialect only
encodes those pieces, streamed or collected.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from heylook_llm.engine.batch import BatchRun, ProcessingMode, run_batch, split_groups
from heylook_llm.engine.fanout import Piece, StartGeneration, already_started, interleave
from heylook_llm.engine.generation import ActiveGeneration
from heylook_llm.errors import HeylookError, InvalidRequest
from heylook_llm.types import FinishReason, GenerationRequest, GenerationStats


def choice_requests(gen: GenerationRequest, n: int) -> list[GenerationRequest]:
    """One request per choice; with a seed, choice i samples with seed + i (reproducible, yet not n copies)."""
    seed = gen.sampling.seed
    return [
        dataclasses.replace(gen, sampling=dataclasses.replace(gen.sampling, seed=None if seed is None else seed + i))
        for i in range(n)
    ]


@dataclass(slots=True)
class PieceResult:
    """One generation's collected output (or the error that ended it)."""

    parts: list[str] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stats: GenerationStats | None = None
    error: HeylookError | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def record(self, piece: Piece) -> None:
        if piece.error is not None:
            self.error = piece.error
            return
        assert piece.chunk is not None
        self.parts.append(piece.chunk.text)
        if piece.chunk.finish_reason is not None:
            self.finish_reason = piece.chunk.finish_reason
            self.stats = piece.chunk.stats or GenerationStats()


@dataclass(slots=True)
class PlanRun:
    """Several generations of one request, running: read `pieces` (arrival order, tagged by index) once."""

    count: int
    pieces: AsyncGenerator[Piece, None]
    base: GenerationRequest
    batch: BatchRun | None = None
    """For batch modes: the groups' requests and timing, filled as the pieces are read."""

    async def collect(self) -> list[PieceResult]:
        results = [PieceResult() for _ in range(self.count)]
        try:
            async for piece in self.pieces:
                results[piece.index].record(piece)
        finally:
            # Also when the caller is cancelled (the client went away): every generation still running stops.
            await self.pieces.aclose()
        return results


async def start_plan(start: StartGeneration, gen: GenerationRequest, n: int, mode: ProcessingMode) -> PlanRun:
    """Start the generations of a request with `n` > 1 or a batch mode.

    Choices are all started before this returns, so that a refused prompt is an error before any output; batch
    groups start as the plan is read (sequential modes need earlier answers first) and report failures per group.
    """
    if mode is not ProcessingMode.CONVERSATION:
        if n > 1:
            raise InvalidRequest("n > 1 works only with processing_mode conversation", param="n")
        assert gen.messages is not None
        split = split_groups(gen.messages)
        run = BatchRun(mode, split.groups, split.shared)
        return PlanRun(len(split.groups), run_batch(start, gen, mode, split, run), gen, run)
    results = await asyncio.gather(*(start(g) for g in choice_requests(gen, n)), return_exceptions=True)
    actives = [r for r in results if isinstance(r, ActiveGeneration)]
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        for active in actives:
            active.close()
        raise failure
    return PlanRun(n, interleave([already_started(a) for a in actives]), gen)
