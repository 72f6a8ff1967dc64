"""The llama.cpp engine: batched decoding over slots and the prefix cache, driven in-process and over HTTP."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from heylook_llm.backends.llama_engine import CPU_PREFILL_GROUP_TOKENS, LlamaEngine
from heylook_llm.backends.llama_options import EngineOptions, default_flash_attn
from heylook_llm.backends.llama_sequence import Sequence
from heylook_llm.backends.llama_slots import MIN_BORROWED_TOKENS
from heylook_llm.types import GenerationChunk, SamplingParams
from tests.conftest import start_server

pytestmark = pytest.mark.integration

PROMPT = "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture()
def engine(demo_dir: Path) -> Iterator[LlamaEngine]:
    eng = LlamaEngine(EngineOptions(demo_dir / "demo-gguf.gguf", 512, 3, 64, 2, 0, use_mmap=True, prefix_cache=True))
    eng.load()
    yield eng
    eng.unload()


def _run(engine: LlamaEngine, seqs: list[Sequence]) -> list[tuple[str, GenerationChunk]]:
    texts = {id(s): "" for s in seqs}
    finals: dict[int, GenerationChunk] = {}
    live = list(seqs)
    while live:
        for seq, chunk in zip(list(live), engine.step(live), strict=True):
            if chunk is None:
                continue
            texts[id(seq)] += chunk.text
            if chunk.finish_reason is not None:
                finals[id(seq)] = chunk
                live.remove(seq)
                engine.close(seq)
    return [(texts[id(s)], finals[id(s)]) for s in seqs]


def test_flash_attention_is_off_on_cpu_for_narrow_heads_unless_forced(demo_dir: Path, engine: LlamaEngine) -> None:
    assert engine.flash_attn is False, "the demo model's 16-wide heads run faster without flash attention on CPU"
    assert default_flash_attn(128, offloaded=False) is None
    assert default_flash_attn(16, offloaded=True) is None
    forced = LlamaEngine(
        EngineOptions(demo_dir / "demo-gguf.gguf", 256, 1, 64, 1, 0, use_mmap=True, prefix_cache=True, flash_attn=True)
    )
    forced.load()
    try:
        assert forced.flash_attn is True
        prompt = forced.tokenize(PROMPT, add_bos=False, special=True)
        text, final = _run(forced, [forced.open(prompt, SamplingParams(temperature=0, max_tokens=8), None, False)])[0]
        assert final.stats is not None and final.stats.completion_tokens == 8 and text
    finally:
        forced.unload()


def test_one_step_advances_every_sequence(engine: LlamaEngine) -> None:
    prompt = engine.tokenize(PROMPT, add_bos=False, special=True)
    greedy = SamplingParams(temperature=0, max_tokens=20)
    seqs = [engine.open(prompt, greedy, None, False) for _ in range(3)]
    assert engine.free_slots == 0
    first = engine.step(seqs)
    assert all(chunk is not None for chunk in first), "one decode gave every sequence its first token"
    rest = _run(engine, seqs)
    texts = [(chunk.text if chunk else "") + text for chunk, (text, _) in zip(first, rest, strict=True)]
    alone = _run(engine, [engine.open(prompt, greedy, None, False)])[0][0]
    assert texts == [alone] * 3
    assert all(final.stats is not None and final.stats.completion_tokens == 20 for _, final in rest)
    assert engine.free_slots == 3


def test_long_prompts_are_read_in_chunks_of_n_batch(engine: LlamaEngine) -> None:
    prompt = engine.tokenize("word " * 150, add_bos=False, special=False)
    assert len(prompt) > 64 * 2
    seq = engine.open(prompt, SamplingParams(temperature=0, max_tokens=4), None, False)
    reading = 0
    while engine.step([seq])[0] is None:
        reading += 1
    assert reading == (len(prompt) - 1) // 64
    engine.close(seq)


def test_prefix_cache_reuses_a_finished_sequence(engine: LlamaEngine) -> None:
    prompt = engine.tokenize(PROMPT, add_bos=False, special=True)
    greedy = SamplingParams(temperature=0, max_tokens=12)
    _, final1 = _run(engine, [engine.open(prompt, greedy, None, True)])[0]
    assert final1.stats is not None and final1.context_tokens is not None
    # The next turn starts with everything the first one saw and wrote.
    follow = final1.context_tokens + engine.tokenize("<|im_end|>\n<|im_start|>user\nmore", add_bos=False, special=True)
    text2, final2 = _run(engine, [engine.open(follow, greedy, None, False)])[0]
    assert final2.stats is not None
    assert final2.stats.cached_prompt_tokens == len(final1.context_tokens) - 1
    # Read into memory instead of mapped (use_mmap false), which must not change the output either.
    cold = LlamaEngine(EngineOptions(engine.options.model_path, 512, 1, 64, 2, 0, use_mmap=False, prefix_cache=False))
    cold.load()
    try:
        _run(cold, [cold.open(prompt, greedy, None, False)])
        cold_text, cold_final = _run(cold, [cold.open(follow, greedy, None, False)])[0]
    finally:
        cold.unload()
    assert cold_final.stats is not None and cold_final.stats.cached_prompt_tokens == 0
    assert cold_text == text2, "greedy output must not depend on the prefix cache or on how the file is read"


def test_concurrent_http_requests_match_sequential_ones(demo_dir: Path, tmp_path: Path) -> None:
    server = start_server(tmp_path, demo_dir / "models.yaml")
    try:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60)
        prompts = [f"question number {i}" for i in range(6)]

        def ask(prompt: str) -> str:
            chunks = client.chat.completions.create(
                model="demo-gguf",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=40,
                temperature=0,
                stream=True,
            )
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        sequential = [ask(p) for p in prompts]
        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
            concurrent_answers = list(pool.map(ask, prompts))
        assert concurrent_answers == sequential
        assert len(set(sequential)) > 1
    finally:
        server.stop()


def test_chat_turns_report_cached_tokens_and_match_with_the_cache_off(demo_dir: Path, tmp_path: Path) -> None:
    gguf = demo_dir / "demo-gguf.gguf"
    config = tmp_path / "models.yaml"
    config.write_text(
        f"""
max_loaded_models: 2
models:
  - {{id: cached, provider: llama_cpp, config: {{model_path: {gguf}, n_ctx: 1024}}}}
  - {{id: uncached, provider: llama_cpp, config: {{model_path: {gguf}, n_ctx: 1024, prefix_cache: false}}}}
"""
    )
    server = start_server(tmp_path, config)
    try:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60)

        def conversation(model: str) -> list[tuple[str, int, int]]:
            messages = [{"role": "system", "content": "You are a test. " * 30}]
            turns = []
            for turn in range(3):
                messages.append({"role": "user", "content": f"turn {turn}"})
                reply = client.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0)  # type: ignore[arg-type]
                text = reply.choices[0].message.content or ""
                usage = reply.usage
                assert usage is not None and usage.prompt_tokens_details is not None
                turns.append((text, usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens or 0))
                messages.append({"role": "assistant", "content": text})
            return turns

        with_cache = conversation("cached")
        without = conversation("uncached")
        assert [t[0] for t in with_cache] == [t[0] for t in without]
        assert all(cached == 0 for _, _, cached in without)
        for (_, prompt_tokens, cached), (_, previous_prompt, _) in zip(with_cache[1:], with_cache, strict=False):
            # At least the previous turn's prompt is reused (its answer too when it tokenizes back the same).
            assert previous_prompt <= cached < prompt_tokens
    finally:
        server.stop()


def test_a_new_conversation_keeps_the_old_one_cached_and_still_reuses_the_shared_header(engine: LlamaEngine) -> None:
    header = "<|im_start|>system\n" + "You answer questions about the weather." + "<|im_end|>\n"
    turn = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    first = engine.tokenize(header + turn.format("rain?"), add_bos=False, special=True)
    second = engine.tokenize(header + turn.format("snow?"), add_bos=False, special=True)
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    greedy = SamplingParams(temperature=0, max_tokens=3 * len(first))
    _, final1 = _run(engine, [engine.open(first, greedy, None, True)])[0]
    assert final1.context_tokens is not None and 2 * shared < len(final1.context_tokens)
    assert shared < MIN_BORROWED_TOKENS, "below the length that decides before any measurement"
    table = engine._slot_table
    assert table.token_seconds is not None, "the first prompt's evaluation was timed"
    assert table.stream_copy_seconds is not None and table.borrow_pays(shared)
    # The second conversation shares only the header: it goes to an empty slot, with the header copied over.
    _, final2 = _run(engine, [engine.open(second, greedy, None, False)])[0]
    assert final2.stats is not None and final2.stats.cached_prompt_tokens == shared
    assert sum(1 for s in table.slots if s.cached) == 2
    # The first conversation's cache is whole: its next turn evaluates only the new tokens.
    follow = final1.context_tokens + engine.tokenize(turn.format("and?"), add_bos=False, special=True)
    _, final3 = _run(engine, [engine.open(follow, greedy, None, False)])[0]
    assert final3.stats is not None and final3.stats.cached_prompt_tokens >= len(final1.context_tokens) - 1


def test_prompts_that_arrive_together_are_read_a_few_at_a_time_on_cpu(demo_dir: Path) -> None:
    eng = LlamaEngine(EngineOptions(demo_dir / "demo-gguf.gguf", 512, 3, 512, 2, 0, use_mmap=True, prefix_cache=True))
    eng.load()
    try:
        prompts = [eng.tokenize(f"{i} " + "word " * 80, add_bos=False, special=False) for i in range(3)]
        assert all(len(p) > CPU_PREFILL_GROUP_TOKENS for p in prompts)
        greedy = SamplingParams(temperature=0, max_tokens=8)
        seqs = [eng.open(p, greedy, None, False) for p in prompts]
        firsts = [[chunk is not None for chunk in eng.step(seqs)] for _ in range(3)]
        # One long prompt per step: the first request's first token comes after its own prompt only.
        assert firsts == [[True, False, False], [True, True, False], [True, True, True]]
        rest = _run(eng, seqs)
        assert all(final.stats is not None and final.stats.completion_tokens == 8 for _, final in rest)
    finally:
        eng.unload()
