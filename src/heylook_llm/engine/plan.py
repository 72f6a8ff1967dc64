"""One generation plan for a request that runs several generations: `n` choices of one prompt, or the groups of a
batch processing mode. The plan starts them and yields their chunks tagged by index (`Piece`); the dialect only
encodes those pieces, streamed or collected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from heylook_llm.engine.admission import check_capacity
from heylook_llm.engine.batch import BatchRun, ProcessingMode, run_batch, split_groups
from heylook_llm.engine.fanout import Piece, StartGeneration, already_started, interleave
from heylook_llm.engine.output import CollectedOutput
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

    output: CollectedOutput = field(default_factory=CollectedOutput)
    error: HeylookError | None = None

    @property
    def text(self) -> str:
        return self.output.text

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.output.finish_reason

    @property
    def stats(self) -> GenerationStats | None:
        return self.output.stats

    def record(self, piece: Piece) -> None:
        if piece.error is not None:
            self.error = piece.error
            return
        assert piece.chunk is not None
        self.output.add(piece.chunk)


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

    Choices are admitted together and all started before this returns, so that a refused prompt is an error before
    any output (and cancels the other choices); batch groups start as the plan is read (sequential modes need
    earlier answers first) and report failures per group. Parallel groups are admitted together: a batch with more
    groups than a model queues is refused here, before any output.
    """
    if mode is not ProcessingMode.CONVERSATION:
        if n > 1:
            raise InvalidRequest("n > 1 works only with processing_mode conversation", param="n")
        assert gen.messages is not None
        split = split_groups(gen.messages)
        if mode.parallel:
            check_capacity(len(split.groups), start.capacity, "messages")
        run = BatchRun(mode, split.groups, split.shared)
        return PlanRun(len(split.groups), run_batch(start, gen, mode, split, run), gen, run)
    actives = await start.all(choice_requests(gen, n), param="n")
    return PlanRun(n, interleave([already_started(a) for a in actives]), gen)
