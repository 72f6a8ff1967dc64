"""Features: what a request asks for, the one check against what a backend declares, and chunk merging that
keeps everything a chunk carries."""

from __future__ import annotations

import pytest

from heylook_llm.config.registry import parse_registry
from heylook_llm.engine.features import (
    capability_names,
    expected_features,
    refuse_undeclared,
    requested_features,
    shown_features,
)
from heylook_llm.errors import CapabilityError
from heylook_llm.types import (
    ChatMessage,
    Feature,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationStats,
    ImageData,
    ReasoningControl,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
)

pytestmark = pytest.mark.unit

SAMPLING = SamplingParams()


def _chat(**fields: object) -> GenerationRequest:
    return GenerationRequest("m", SAMPLING, messages=[ChatMessage("user", "hi")], **fields)  # type: ignore[arg-type]


def test_requested_features_cover_every_optional_field() -> None:
    assert requested_features(_chat()) == [Feature.CHAT]
    assert requested_features(GenerationRequest("m", SAMPLING, prompt="x", suffix="y")) == [
        Feature.COMPLETION,
        Feature.FILL_IN_MIDDLE,
    ]
    image = ImageData(b"x", "image/png", 1, 1)
    everything = GenerationRequest(
        "m",
        SAMPLING,
        messages=[ChatMessage("user", "hi", [image])],
        response_format="json",
        context_tokens=[1],
        tools=[ToolSpec("f")],
        logprobs=True,
        reasoning=ReasoningControl(enabled=True),
    )
    assert set(requested_features(everything)) == {
        Feature.CHAT,
        Feature.IMAGES,
        Feature.RESPONSE_FORMAT,
        Feature.CONTEXT_TOKENS,
        Feature.TOOLS,
        Feature.LOGPROBS,
        Feature.REASONING,
    }


def test_tools_with_choice_none_and_reasoning_off_ask_for_nothing() -> None:
    request = _chat(tools=[ToolSpec("f")], tool_choice=ToolChoice("none"), reasoning=ReasoningControl(enabled=False))
    assert requested_features(request) == [Feature.CHAT]
    history = GenerationRequest(
        "m", SAMPLING, messages=[ChatMessage("assistant", "", tool_calls=[ToolCall("1", "f", "{}")])]
    )
    assert Feature.TOOLS in requested_features(history)


def test_an_undeclared_feature_is_refused_with_its_parameter() -> None:
    declared = frozenset({Feature.CHAT})
    refuse_undeclared(_chat(), declared, "m")
    with pytest.raises(CapabilityError) as err:
        refuse_undeclared(_chat(logprobs=True), declared, "m")
    assert err.value.param == "logprobs" and "model 'm'" in err.value.message
    # A backend that declares nothing is refused everything: new backends are safe by default.
    with pytest.raises(CapabilityError):
        refuse_undeclared(_chat(), frozenset(), "m")


def test_expected_features_follow_the_configuration() -> None:
    registry = parse_registry(
        {
            "models": [
                {"id": "chat", "provider": "llama_cpp", "config": {"model_path": "a.gguf"}},
                {"id": "embed", "provider": "llama_cpp", "config": {"model_path": "b.gguf", "embedding": True}},
                {"id": "see", "provider": "llama_cpp", "config": {"model_path": "c.gguf", "mmproj_path": "p.gguf"}},
                {"id": "mlx", "provider": "mlx", "config": {"model_path": "d"}},
            ]
        },
        None,
    )
    chat, embed, see, mlx = registry.models
    expected = expected_features(chat, fill_in_middle=True)
    # Backends declare reasoning for every model they load; "thinking" is shown only where the model has a
    # reasoning format (a template with <think>, or reasoning_format in models.yaml).
    assert capability_names(shown_features(expected, chat, None)) == ["completion", "insert", "tools"]
    assert capability_names(shown_features(expected, chat, "{{ '<think>' }}")) == [
        "completion",
        "insert",
        "tools",
        "thinking",
    ]
    assert capability_names(expected_features(embed)) == ["embedding"]
    assert capability_names(shown_features(expected_features(see), see, None)) == ["completion", "vision", "tools"]
    assert Feature.RESPONSE_FORMAT in expected_features(mlx) and Feature.FILL_IN_MIDDLE not in expected_features(mlx)


def test_merged_chunks_keep_text_reasoning_tool_calls_tokens_and_logprobs() -> None:
    first = GenerationChunk("a", token_count=1, token_ids=[1], logprobs=[TokenLogprob(1, "a", -0.1)], reasoning="r1")
    first.tool_calls = [ToolCallDelta(0, "call_1", "f", '{"x"')]
    second = GenerationChunk("b", token_count=1, token_ids=[2], reasoning="r2")
    second.tool_calls = [ToolCallDelta(0, arguments=": 1}"), ToolCallDelta(1, "call_2", "g", "{}")]
    last = GenerationChunk(
        "", token_count=1, token_ids=[3], finish_reason=FinishReason.STOP, stats=GenerationStats(1, 3)
    )
    first.absorb(second)
    first.absorb(last)
    assert (first.text, first.reasoning, first.token_count, first.token_ids) == ("ab", "r1r2", 3, [1, 2, 3])
    assert [(d.index, d.id, d.name, d.arguments) for d in first.tool_calls] == [
        (0, "call_1", "f", '{"x": 1}'),
        (1, "call_2", "g", "{}"),
    ]
    assert len(first.logprobs) == 1 and first.finish_reason is FinishReason.STOP and first.stats is not None
