"""The MLX backend in-process on the real demo models: load checks, cache reuse, seeds, EOS, memory release."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache, QuantizedKVCache

from heylook_llm.backends import mlx_batched
from heylook_llm.backends.base import Backend
from heylook_llm.backends.mlx import MLXBackend, MLXBatchedBackend
from heylook_llm.backends.mlx_common import MLXModelBase
from heylook_llm.config.registry import MLXConfig, parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.demo import (
    DEMO_MLX_DIR,
    DEMO_MLX_DRAFT_DIR,
    EOS_TOKEN,
    ModelShape,
    train_tokenizer,
    write_random_mlx_model,
)
from heylook_llm.engine.features import refuse_undeclared
from heylook_llm.errors import CapabilityError, ContextLengthExceeded, InvalidRequest, ModelLoadError
from heylook_llm.types import ChatMessage, Feature, FinishReason, GenerationChunk, GenerationRequest, SamplingParams

pytestmark = pytest.mark.unit

HELLO = [ChatMessage("user", "hello there, tests")]


def _backend(**config: Any) -> Any:
    """The class the backends table picks for this config (built directly: vision configs load through mlx-vlm)."""
    registry = parse_registry({"models": [{"id": "m", "provider": "mlx", "config": config}]}, None)
    entry = registry.get("m")
    assert entry is not None
    assert isinstance(entry.config, MLXConfig)
    backend_cls = MLXBatchedBackend if mlx_batched(entry.config) else MLXBackend
    return backend_cls(entry, ServerSettings())


def _request(
    messages: list[ChatMessage] | None = HELLO, prompt: str | None = None, **sampling: Any
) -> GenerationRequest:
    sampling.setdefault("temperature", 0.0)
    sampling.setdefault("max_tokens", 16)
    chat = messages if prompt is None else None
    return GenerationRequest("m", SamplingParams(**sampling), messages=chat, prompt=prompt)


def _run(backend: Backend, request: GenerationRequest) -> tuple[str, GenerationChunk]:
    chunks = list(backend.generate(request))
    return "".join(c.text for c in chunks), chunks[-1]


@pytest.fixture(scope="module")
def demo_mlx(demo_dir: Path) -> Iterator[MLXModelBase]:
    backend = _backend(model_path=str(demo_dir / DEMO_MLX_DIR))
    backend.load()
    yield backend
    backend.unload()


def test_facts_after_load(demo_mlx: MLXModelBase) -> None:
    assert demo_mlx.facts.context_length == ModelShape().context
    assert demo_mlx.facts.size_bytes > 0
    assert demo_mlx.facts.chat_template is not None and "<|im_start|>" in demo_mlx.facts.chat_template
    assert demo_mlx.facts.metadata["general.architecture"] == "llama"


def test_a_shared_prefix_is_reused_and_gives_the_same_tokens(demo_mlx: MLXModelBase) -> None:
    first_text, first = _run(demo_mlx, _request(max_tokens=20, repeat_penalty=1.3, repeat_last_n=16))
    again_text, again = _run(demo_mlx, _request(max_tokens=20, repeat_penalty=1.3, repeat_last_n=16))
    assert first.stats is not None and again.stats is not None
    assert first_text == again_text
    assert again.stats.cached_prompt_tokens == again.stats.prompt_tokens - 1
    # A fresh backend (nothing cached) agrees, penalties included: the reused prefix still counts for them.
    with_longer = [*HELLO, ChatMessage("assistant", first_text), ChatMessage("user", "more")]
    reused_text, reused = _run(demo_mlx, _request(with_longer, max_tokens=20, repeat_penalty=1.3, repeat_last_n=16))
    assert reused.stats is not None and reused.stats.cached_prompt_tokens > 0
    fresh_backend = _backend(model_path=str(demo_mlx.config.model_path))
    fresh_backend.load()
    try:
        fresh_text, fresh = _run(
            fresh_backend, _request(with_longer, max_tokens=20, repeat_penalty=1.3, repeat_last_n=16)
        )
    finally:
        fresh_backend.unload()
    assert fresh.stats is not None and fresh.stats.cached_prompt_tokens == 0
    assert fresh_text == reused_text


def test_seeded_sequences_taking_turns_on_one_thread_keep_their_own_draws(demo_mlx: MLXModelBase) -> None:
    alone = [_run(demo_mlx, _request(temperature=1.0, top_p=1.0, seed=s, max_tokens=24))[0] for s in (1, 2)]
    assert alone[0] != alone[1]
    streams = [demo_mlx.generate(_request(temperature=1.0, top_p=1.0, seed=s, max_tokens=24)) for s in (1, 2)]
    texts = ["", ""]
    done = [False, False]
    while not all(done):
        for i, stream in enumerate(streams):
            if not done[i]:
                chunk = next(stream)
                texts[i] += chunk.text
                done[i] = chunk.finish_reason is not None
    assert texts == alone


def test_eos_ends_with_stop_and_is_not_counted(demo_mlx: MLXModelBase, demo_dir: Path) -> None:
    eos = train_tokenizer(ModelShape().vocab).token_id(EOS_TOKEN)
    text, last = _run(demo_mlx, _request(logit_bias=((eos, 100.0),)))
    assert text == "" and last.finish_reason is FinishReason.STOP
    assert last.stats is not None and last.stats.completion_tokens == 0


def test_raw_prompts_may_spell_control_tokens(demo_mlx: MLXModelBase) -> None:
    # As in the llama.cpp backend: "a<|im_end|>b" is three tokens.
    _, last = _run(demo_mlx, _request(prompt=f"a{EOS_TOKEN}b", max_tokens=1))
    assert last.stats is not None and last.stats.prompt_tokens == 3


def test_a_reply_can_be_continued_from_its_tokens(demo_mlx: MLXModelBase) -> None:
    request = _request(prompt="Once upon a time", max_tokens=12)
    request.return_tokens = True
    _, first = _run(demo_mlx, request)
    assert first.stats is not None and first.context_tokens is not None
    assert len(first.context_tokens) == first.stats.prompt_tokens + 12
    follow = _request(prompt=" and then", max_tokens=4)
    follow.context_tokens = first.context_tokens
    demo_mlx.check_request(follow)
    _, second = _run(demo_mlx, follow)
    assert second.stats is not None and second.context_tokens is None
    assert second.stats.prompt_tokens > len(first.context_tokens)
    # The whole first exchange is still in the KV cache.
    assert second.stats.cached_prompt_tokens >= len(first.context_tokens) - 1
    bad = _request(prompt="x")
    bad.context_tokens = [1, 99_999]
    with pytest.raises(InvalidRequest, match="context holds token id 99999"):
        demo_mlx.generate(bad)


def test_suffix_is_not_declared(demo_mlx: MLXBackend) -> None:
    # The engine refuses any request feature a backend does not declare (engine/features.py).
    assert Feature.RESPONSE_FORMAT in demo_mlx.features and Feature.FILL_IN_MIDDLE not in demo_mlx.features
    with_suffix = _request(prompt="def f(")
    with_suffix.suffix = "return x"
    with pytest.raises(CapabilityError, match="fill-in-the-middle") as refused:
        refuse_undeclared(with_suffix, demo_mlx.features, "demo-mlx")
    assert refused.value.param == "suffix"


def test_request_errors_come_before_the_first_token(demo_mlx: MLXModelBase) -> None:
    with pytest.raises(ContextLengthExceeded) as too_long:
        demo_mlx.generate(_request(prompt="hello " * 3000))
    assert too_long.value.context_length == ModelShape().context
    with pytest.raises(InvalidRequest, match="logit_bias token id 9999"):
        demo_mlx.generate(_request(logit_bias=((9999, 1.0),)))
    with pytest.raises(InvalidRequest, match="empty"):
        demo_mlx.generate(_request(prompt=""))


def test_closing_between_tokens_cancels(demo_mlx: MLXModelBase) -> None:
    stream = demo_mlx.generate(_request(max_tokens=500))
    for _ in range(3):
        assert next(stream).finish_reason is None
    stream.close()
    _, last = _run(demo_mlx, _request(max_tokens=4))
    assert last.finish_reason is FinishReason.LENGTH and last.stats is not None
    assert last.stats.completion_tokens == 4


def test_unload_frees_mlx_memory(demo_dir: Path) -> None:
    before = mx.get_active_memory()
    backend = _backend(model_path=str(demo_dir / DEMO_MLX_DIR))
    backend.load()
    _run(backend, _request())
    assert mx.get_active_memory() - before > 500_000  # the demo weights are about 650 kB
    backend.unload()
    assert mx.get_active_memory() - before < 50_000
    assert mx.get_cache_memory() == 0


@pytest.fixture(scope="module")
def head_dim_32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose 32-wide attention heads can be quantized (the demo's are 16 wide, below MLX's group sizes)."""
    folder = tmp_path_factory.mktemp("hd32")
    write_random_mlx_model(folder, ModelShape(hidden=64, heads=2, kv_heads=1), train_tokenizer(512), seed=3)
    return folder


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"cache_type": "quantized", "kv_bits": 8}, "divisible by the quantization group size 64"),
        ({"vision": True}, "needs mlx-vlm"),
        ({"model_path": "/nonexistent/folder"}, "is not an MLX model folder"),
        ({"draft_model_path": "/nonexistent/folder"}, "draft_model_path /nonexistent/folder is not an MLX model"),
    ],
)
def test_settings_mlx_cannot_honour_are_load_errors(demo_dir: Path, config: dict[str, Any], reason: str) -> None:
    backend = _backend(**{"model_path": str(demo_dir / DEMO_MLX_DIR), **config})
    with pytest.raises(ModelLoadError, match=reason):
        backend.load()


def test_unsupported_kv_bits_are_a_load_error(head_dim_32: Path) -> None:
    backend = _backend(model_path=str(head_dim_32), cache_type="quantized", kv_bits=7, kv_group_size=32)
    with pytest.raises(ModelLoadError, match=r"kv_bits=7, kv_group_size=32: .*bits 7 is not supported"):
        backend.load()


def test_rotating_cache_with_a_draft_model_is_a_load_error(demo_dir: Path) -> None:
    backend = _backend(
        model_path=str(demo_dir / DEMO_MLX_DIR),
        draft_model_path=str(demo_dir / DEMO_MLX_DRAFT_DIR),
        cache_type="rotating",
        max_kv_size=64,
    )
    with pytest.raises(ModelLoadError, match="cannot rewind a rotating cache"):
        backend.load()


def test_draft_with_another_vocabulary_is_a_load_error(demo_dir: Path, tmp_path: Path) -> None:
    write_random_mlx_model(tmp_path, ModelShape(vocab=300), train_tokenizer(300), seed=4)
    backend = _backend(model_path=str(demo_dir / DEMO_MLX_DIR), draft_model_path=str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"draft model's vocabulary \(300 tokens\) differs"):
        backend.load()


@pytest.mark.parametrize("start", [0, 30])
def test_quantized_cache_quantizes_from_quantized_kv_start(head_dim_32: Path, start: int) -> None:
    backend = _backend(
        model_path=str(head_dim_32), cache_type="quantized", kv_bits=4, kv_group_size=32, quantized_kv_start=start
    )
    backend.load()
    try:
        stream = backend.generate(_request(max_tokens=40))
        assert next(stream).finish_reason is None
        stream.close()
        assert backend._cache is not None
        assert {type(c) for c in backend._cache} == ({QuantizedKVCache} if start == 0 else {KVCache})
        first_text, first = _run(backend, _request(max_tokens=40))
        assert first.finish_reason is FinishReason.LENGTH and first.stats is not None
        assert first.stats.completion_tokens == 40
        assert {type(c) for c in backend._cache} == {QuantizedKVCache}
        # The prompt (a dozen tokens) is shorter than 30: a cache quantized past 30 is not reused for it.
        again_text, again = _run(backend, _request(max_tokens=40))
        assert again.stats is not None and again_text == first_text
        assert again.stats.cached_prompt_tokens == (again.stats.prompt_tokens - 1 if start == 0 else 0)
    finally:
        backend.unload()
