"""What an upstream model passes through: declared in models.yaml (`features`), else the provider's defaults."""

from __future__ import annotations

from heylook_llm.config.registry import UpstreamConfig
from heylook_llm.types import Feature

_OPENAI_DEFAULTS = frozenset(
    {Feature.CHAT, Feature.COMPLETION, Feature.TOOLS, Feature.RESPONSE_FORMAT, Feature.LOGPROBS}
)
"""vLLM, SGLang, llama-server and heylookllm all take tools, JSON schemas and logprobs; images, embeddings and
reasoning controls depend on the model the upstream runs, so they are declared per model."""

_OLLAMA_DEFAULTS = frozenset({Feature.CHAT, Feature.COMPLETION, Feature.TOOLS, Feature.RESPONSE_FORMAT})
"""Ollama takes tools and `format`; its logprobs are recent and not in every version, so they are declared."""


def upstream_features(provider: str, config: UpstreamConfig) -> frozenset[Feature]:
    if config.features is not None:
        return frozenset(Feature(name) for name in config.features)
    return _OLLAMA_DEFAULTS if provider == "ollama" else _OPENAI_DEFAULTS
