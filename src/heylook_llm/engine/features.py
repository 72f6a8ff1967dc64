"""What a request asks of a model, and the one check that refuses what the model does not declare.

Backends declare `features` when they load; before a model is loaded, `expected_features` predicts them from
models.yaml and the model file, for listings (/v1/models, /api/show, /v1/capabilities). Both come here, so
"what a model can do" is decided in one place.
"""

from __future__ import annotations

from heylook_llm.config.registry import LlamaCppConfig, MLXConfig, ModelEntry, UpstreamConfig
from heylook_llm.engine.reasoning.formats import FORMATS, detect_reasoning_format
from heylook_llm.engine.upstream.capabilities import upstream_features
from heylook_llm.errors import CapabilityError
from heylook_llm.types import Feature, GenerationRequest

_WHY_NOT: dict[Feature, str] = {
    Feature.CHAT: "it cannot chat (an embedding model or a reranker)",
    Feature.COMPLETION: "it cannot complete raw prompts",
    Feature.EMBEDDING: "it does not produce embeddings",
    Feature.IMAGES: "it does not accept images",
    Feature.RESPONSE_FORMAT: "it cannot constrain its output (response_format, grammar or regex; Ollama: format)",
    Feature.FILL_IN_MIDDLE: "it has no fill-in-the-middle tokens, so it cannot complete with a suffix",
    Feature.CONTEXT_TOKENS: "it cannot continue from token ids (context)",
    Feature.TOOLS: "tool calling is not available for it",
    Feature.LOGPROBS: "log probabilities are not available for it",
    Feature.REASONING: "reasoning controls (think, reasoning_effort, max_reasoning_tokens) are not available for it",
    Feature.RERANK: "it is not a reranker",
}

_PARAM: dict[Feature, str] = {
    Feature.CHAT: "messages",
    Feature.COMPLETION: "prompt",
    Feature.IMAGES: "messages",
    Feature.RESPONSE_FORMAT: "response_format",
    Feature.FILL_IN_MIDDLE: "suffix",
    Feature.CONTEXT_TOKENS: "context",
    Feature.TOOLS: "tools",
    Feature.LOGPROBS: "logprobs",
    Feature.REASONING: "reasoning",
}


def requested_features(request: GenerationRequest) -> list[Feature]:
    """Every feature the request uses, in the order their errors are most useful."""
    wanted = [Feature.CHAT if request.messages is not None else Feature.COMPLETION]
    messages = request.messages or []
    if any(m.images for m in messages):
        wanted.append(Feature.IMAGES)
    if request.response_format is not None or request.grammar is not None:
        wanted.append(Feature.RESPONSE_FORMAT)
    if request.suffix is not None:
        wanted.append(Feature.FILL_IN_MIDDLE)
    if request.context_tokens:
        wanted.append(Feature.CONTEXT_TOKENS)
    choice = request.tool_choice
    uses_tools = bool(request.tools) and (choice is None or choice.mode != "none")
    if uses_tools or any(m.tool_calls or m.role == "tool" for m in messages):
        wanted.append(Feature.TOOLS)
    if request.logprobs or request.top_logprobs:
        wanted.append(Feature.LOGPROBS)
    control = request.reasoning
    if control is not None and (control.enabled or control.effort or control.max_tokens is not None):
        wanted.append(Feature.REASONING)
    return wanted


def refuse_undeclared(request: GenerationRequest, declared: frozenset[Feature], model_id: str) -> None:
    """Raise CapabilityError naming the first feature the request uses that the model does not declare."""
    for feature in requested_features(request):
        if feature not in declared:
            message = f"model '{model_id}' cannot serve this request: {_WHY_NOT[feature]}"
            raise CapabilityError(message, param=_PARAM.get(feature, "model"))


def expected_features(entry: ModelEntry, *, fill_in_middle: bool = False) -> frozenset[Feature]:
    """What the model will declare once loaded, from its models.yaml entry and what its file says
    (`fill_in_middle`: the vocabulary has FIM tokens)."""
    config = entry.config
    if isinstance(config, UpstreamConfig):
        return upstream_features(entry.provider, config)
    if isinstance(config, LlamaCppConfig):
        if config.embedding:
            return frozenset({Feature.EMBEDDING})
        if config.rerank:
            return frozenset({Feature.RERANK})
        found = {
            Feature.CHAT,
            Feature.COMPLETION,
            Feature.RESPONSE_FORMAT,
            Feature.CONTEXT_TOKENS,
            Feature.LOGPROBS,
            Feature.REASONING,
            # Every chat template can take tools: the generic format describes them when the template cannot.
            Feature.TOOLS,
        }
        if config.mmproj_path is not None:
            found.add(Feature.IMAGES)
        if fill_in_middle:
            found.add(Feature.FILL_IN_MIDDLE)
        return frozenset(found)
    if isinstance(config, MLXConfig):
        if config.vision:
            return frozenset({Feature.CHAT, Feature.COMPLETION, Feature.IMAGES})
        text = {Feature.CHAT, Feature.COMPLETION, Feature.CONTEXT_TOKENS}
        if config.draft_model_path is not None:
            return frozenset(text)
        return frozenset({*text, Feature.RESPONSE_FORMAT, Feature.LOGPROBS, Feature.REASONING, Feature.TOOLS})
    return frozenset()


def shown_features(features: frozenset[Feature], entry: ModelEntry, chat_template: str | None) -> frozenset[Feature]:
    """`features` as listed for clients: reasoning ("thinking") only for a model with a reasoning format (named in
    models.yaml or seen in its chat template), since clients show a thinking switch for it. Backends declare
    REASONING for every model they can steer; the engine refuses reasoning controls for the others."""
    named = entry.config.reasoning_format
    fmt = FORMATS.get(named) if named is not None else detect_reasoning_format(chat_template)
    return features if fmt is not None else features - {Feature.REASONING}


def capability_names(features: frozenset[Feature]) -> list[str]:
    """Ollama's capability words (also shown by /v1/models): completion, embedding, vision, insert, tools,
    thinking."""
    names = []
    if Feature.CHAT in features or Feature.COMPLETION in features:
        names.append("completion")
    if Feature.EMBEDDING in features:
        names.append("embedding")
    if Feature.IMAGES in features:
        names.append("vision")
    if Feature.FILL_IN_MIDDLE in features:
        names.append("insert")
    if Feature.TOOLS in features:
        names.append("tools")
    if Feature.REASONING in features:
        names.append("thinking")
    return names
