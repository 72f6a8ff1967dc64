"""MLX continuous batching in-process on the real demo model: several sequences per step through mlx-lm's
BatchGenerator, the same tokens as one at a time, cancellation, prompt-cache reuse, and when it is off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache

from heylook_llm.backends import create_backend
from heylook_llm.backends.mlx import MLXBackend, MLXBatchedBackend
from heylook_llm.backends.mlx_batch import PromptCachePool
from heylook_llm.backends.mlx_common import MLXModelBase
from heylook_llm.config.registry import RegistryError, parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.demo import DEMO_MLX_DIR, DEMO_MLX_DRAFT_DIR
from heylook_llm.types import ChatMessage, FinishReason, GenerationChunk, GenerationRequest, SamplingParams

pytestmark = pytest.mark.unit


def _backend(model_path: Path, **config: Any) -> Any:
    registry = parse_registry(
        {"models": [{"id": "m", "provider": "mlx", "config": {"model_path": str(model_path), **config}}]}, None
    )
    entry = registry.get("m")
    assert entry is not None
    backend = create_backend(entry, ServerSettings())
    assert isinstance(backend, MLXModelBase)
    backend.load()
    return backend


def _request(index: int, **sampling: Any) -> GenerationRequest:
    sampling.setdefault("temperature", 0.0)
    sampling.setdefault("max_tokens", 24)
    # Prompts of different lengths, so that the batch needs padding.
    text = f"request {index} says " + "hello " * (index * 3 + 1)
    return GenerationRequest("m", SamplingParams(**sampling), messages=[ChatMessage("user", text)])


def _alone(backend: MLXModelBase, request: GenerationRequest) -> tuple[str, GenerationChunk]:
    chunks = list(backend.generate(request))
    return "".join(c.text for c in chunks), chunks[-1]


class Together:
    """Drives sequences as the worker does: every live one in each step, closed when it ends."""

    def __init__(self, backend: MLXModelBase, requests: list[GenerationRequest]) -> None:
        self.backend = backend
        self.handles = [backend.open_sequence(r) for r in requests]
        self.texts = [""] * len(requests)
        self.last: list[GenerationChunk | None] = [None] * len(requests)
        self.closed = [False] * len(requests)
        self.steps = 0

    def live(self) -> list[int]:
        return [i for i in range(len(self.handles)) if not self.closed[i]]

    def step(self) -> list[GenerationChunk | None]:
        live = self.live()
        results = self.backend.step([self.handles[i] for i in live])
        self.steps += 1
        out: list[GenerationChunk | None] = [None] * len(self.handles)
        for i, result in zip(live, results, strict=True):
            assert not isinstance(result, BaseException), result
            out[i] = result
            if result is None:
                continue
            self.texts[i] += result.text
            if result.finish_reason is not None:
                self.last[i] = result
                self.cancel(i)
        return out

    def cancel(self, index: int) -> None:
        self.backend.close_sequence(self.handles[index])
        self.closed[index] = True

    def run(self) -> None:
        while self.live():
            self.step()


@pytest.fixture(scope="module")
def model_path(demo_dir: Path) -> Path:
    return demo_dir / DEMO_MLX_DIR


@pytest.fixture()
def batched(model_path: Path) -> Iterator[MLXBatchedBackend]:
    backend = _backend(model_path)
    yield backend
    backend.unload()


@pytest.fixture(scope="module")
def one_at_a_time(model_path: Path) -> Iterator[MLXBackend]:
    backend = _backend(model_path, parallel=1)
    yield backend
    backend.unload()


def test_the_demo_model_is_batched_four_at_a_time_by_default(
    batched: MLXBatchedBackend, one_at_a_time: MLXBackend
) -> None:
    assert isinstance(batched, MLXBatchedBackend) and batched.max_parallel == 4 and batched._batch is not None
    assert isinstance(one_at_a_time, MLXBackend) and one_at_a_time.max_parallel == 1


def test_one_step_advances_every_sequence(batched: MLXBatchedBackend) -> None:
    together = Together(batched, [_request(i, max_tokens=40) for i in range(4)])
    while not all(c is not None and c.finish_reason is None for c in together.step()):
        assert together.steps < 10, "the prompts should be read within a few steps"
    for _ in range(5):
        assert all(c is not None and c.token_count == 1 for c in together.step())
    together.run()
    assert all(
        last is not None and last.stats is not None and last.stats.completion_tokens == 40 for last in together.last
    )
    # 4 x 40 tokens in about 40 steps, not 160.
    assert together.steps < 50


@pytest.mark.parametrize(
    "sampling",
    [
        {},
        {"repeat_penalty": 1.3, "repeat_last_n": 16},
        {"logit_bias": ((5, 4.0), (9, -100.0))},
    ],
    ids=["greedy", "penalties", "logit-bias"],
)
def test_greedy_tokens_are_the_same_alone_batched_and_unbatched(
    batched: MLXBatchedBackend, one_at_a_time: MLXBackend, sampling: dict[str, Any]
) -> None:
    requests = [_request(i, **sampling) for i in range(4)]
    unbatched = [_alone(one_at_a_time, r)[0] for r in requests]
    alone = [_alone(batched, r)[0] for r in requests]
    batched._batch.pool.clear()  # type: ignore[union-attr]
    together = Together(batched, [_request(i, **sampling) for i in range(4)])
    together.run()
    assert alone == unbatched
    assert together.texts == alone
    assert len(set(alone)) > 1


def test_batched_logprobs_are_bit_identical_to_single_ones(batched: MLXBatchedBackend) -> None:
    """Why the equality above is exact: on this CPU build one row of a batch computes the same floats as a batch of
    one (padded prompts included). Should a backend ever differ, this test says so before greedy texts do."""
    engine = batched._batch
    assert engine is not None
    tokenizer = batched._tokenizer
    prompts = [tokenizer.encode(f"row {i} " * (2 * i + 1)) for i in range(3)]

    def logprobs(batch: list[list[int]]) -> list[mx.array]:
        generator = engine._new_generator()
        uids = generator.insert(batch, max_tokens=[6] * len(batch))
        rows: dict[int, list[mx.array]] = {uid: [] for uid in uids}
        while any(len(v) < 6 for v in rows.values()):
            for response in generator.next()[1]:
                rows[response.uid].append(response.logprobs)
        generator.close()
        return [mx.stack(rows[uid]) for uid in uids]

    alone = [logprobs([p])[0] for p in prompts]
    together = logprobs(prompts)
    for single, row in zip(alone, together, strict=True):
        assert mx.array_equal(single, row).item()


def test_seeded_sampling_is_reproducible_under_concurrency(
    batched: MLXBatchedBackend, one_at_a_time: MLXBackend
) -> None:
    def requests(seeds: list[int]) -> list[GenerationRequest]:
        return [_request(i, temperature=1.0, top_p=0.95, seed=s, max_tokens=32) for i, s in enumerate(seeds)]

    alone = [_alone(one_at_a_time, r)[0] for r in requests([11, 12, 13, 14])]
    assert len(set(alone)) == 4
    together = Together(batched, requests([11, 12, 13, 14]))
    together.run()
    assert together.texts == alone
    # Mixed with greedy sequences, and started at different times, each seeded one still draws its own tokens.
    mixed = Together(batched, [requests([11])[0], _request(1)])
    for _ in range(7):
        mixed.step()
    late = Together(batched, [_request(2, temperature=1.0, top_p=0.95, seed=13, max_tokens=32)])
    while mixed.live() or late.live():
        if mixed.live():
            mixed.step()
        if late.live():
            late.step()
    assert mixed.texts[0] == alone[0]
    assert late.texts[0] == alone[2]


def test_cancelling_one_sequence_leaves_the_others_running(batched: MLXBatchedBackend) -> None:
    alone = [_alone(batched, _request(i, max_tokens=30))[0] for i in range(3)]
    together = Together(batched, [_request(i, max_tokens=30) for i in range(3)])
    for _ in range(6):
        together.step()
    together.cancel(1)
    together.run()
    assert together.last[1] is None
    assert together.texts[0] == alone[0] and together.texts[2] == alone[2]
    assert alone[1].startswith(together.texts[1])
    for index in (0, 2):
        last = together.last[index]
        assert last is not None and last.finish_reason is FinishReason.LENGTH
        assert last.stats is not None and last.stats.completion_tokens == 30
    # Closing a generate() stream between tokens cancels it too, and the batch carries on.
    stream = batched.generate(_request(0, max_tokens=500))
    for _ in range(3):
        assert next(stream).finish_reason is None
    stream.close()
    assert _alone(batched, _request(2, max_tokens=30))[0] == alone[2]


def test_stop_strings_and_eos_end_only_their_own_sequence(batched: MLXBatchedBackend) -> None:
    reference = _alone(batched, _request(0, max_tokens=30))[0]
    stop = reference[8:11]
    assert stop and stop not in reference[:8]
    together = Together(
        batched,
        [
            _request(0, max_tokens=30, stop=(stop,)),
            _request(1, max_tokens=30, logit_bias=((2, 100.0),)),  # 2 is the demo's EOS token
            _request(2, max_tokens=30),
        ],
    )
    together.run()
    first, eos, other = together.last
    assert together.texts[0] == reference[: reference.index(stop)]
    assert first is not None and first.finish_reason is FinishReason.STOP and first.stop_sequence == stop
    assert eos is not None and eos.finish_reason is FinishReason.STOP and together.texts[1] == ""
    assert eos.stop_sequence is None
    assert eos.stats is not None and eos.stats.completion_tokens == 0
    assert other is not None and other.finish_reason is FinishReason.LENGTH


def test_a_second_turn_reuses_the_first_turns_cache(batched: MLXBatchedBackend, model_path: Path) -> None:
    penalties = {"temperature": 0.0, "repeat_penalty": 1.3, "repeat_last_n": 64, "max_tokens": 20}
    turn1 = [
        GenerationRequest("m", SamplingParams(**penalties), messages=[ChatMessage("user", f"chat {i}")]) for i in (0, 1)
    ]
    together = Together(batched, turn1)
    together.run()
    turn2 = [
        GenerationRequest(
            "m",
            SamplingParams(**penalties),
            messages=[
                ChatMessage("user", f"chat {i}"),
                ChatMessage("assistant", together.texts[i]),
                ChatMessage("user", "and then?"),
            ],
        )
        for i in (0, 1)
    ]
    second = Together(batched, turn2)
    second.run()
    fresh = _backend(model_path)
    expected: list[tuple[str, GenerationChunk]] = []
    try:
        for request in turn2:
            fresh._batch.pool.clear()  # type: ignore[union-attr]  # nothing cached: a clean reference
            expected.append(_alone(fresh, request))
    finally:
        fresh.unload()
    for first, last, (_, fresh_last) in zip(together.last, second.last, expected, strict=True):
        assert first is not None and first.stats is not None
        assert last is not None and last.stats is not None and fresh_last.stats is not None
        assert fresh_last.stats.cached_prompt_tokens == 0
        # At least the first turn's whole prompt is reused, and not the whole of this one.
        assert first.stats.prompt_tokens <= last.stats.cached_prompt_tokens < last.stats.prompt_tokens
    assert second.texts == [text for text, _ in expected]


def test_the_pool_serves_the_longest_prefix_and_keeps_conversations_apart() -> None:
    def cache(length: int) -> list[Any]:
        layer = KVCache()
        layer.update_and_fetch(mx.zeros((1, 1, length, 4)), mx.zeros((1, 1, length, 4)))
        return [layer]

    pool = PromptCachePool(capacity=2)
    assert pool.take([1, 2, 3]) == (None, 0)
    pool.put([1, 2, 3], cache(3))
    pool.put([1, 2, 3, 4, 5], cache(5))  # the same conversation, one turn on: replaces the shorter entry
    assert len(pool) == 1
    pool.put([1, 2], cache(2))  # already held by a longer entry
    assert len(pool) == 1
    view, common = pool.take([1, 2, 3, 4, 9])
    assert common == 4 and view is not None and view[0].offset == 4
    # The whole prompt matching still leaves its last token to be read.
    assert pool.take([1, 2, 3, 4, 5])[1] == 4
    pool.put([7, 8], cache(2))
    pool.put([6, 6], cache(2))  # over capacity: the least recently used entry goes
    assert pool.take([1, 2, 3, 4, 5])[1] == 0
    pool.put([3], cache(2))  # a cache that does not hold exactly these tokens is not kept
    assert pool.take([3, 1])[1] == 0


def test_models_mlx_lm_cannot_batch_run_one_request_at_a_time(demo_dir: Path, model_path: Path) -> None:
    for config in (
        {"draft_model_path": str(demo_dir / DEMO_MLX_DRAFT_DIR)},
        {"cache_type": "rotating", "max_kv_size": 64},
    ):
        backend = _backend(model_path, **config)
        try:
            assert isinstance(backend, MLXBackend) and backend.max_parallel == 1
        finally:
            backend.unload()
    for config in (
        {"draft_model_path": "d", "parallel": 2},
        {"cache_type": "quantized", "kv_bits": 4, "parallel": 4},
    ):
        with pytest.raises(RegistryError, match="parallel > 1"):
            parse_registry({"models": [{"id": "m", "provider": "mlx", "config": {"model_path": "x", **config}}]}, None)
