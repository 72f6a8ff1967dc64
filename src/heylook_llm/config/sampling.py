"""Sampling values resolve request > model config > server default, and are checked once here, whatever the
dialect: a value the samplers cannot use safely (NaN, infinity, a penalty that underflows to zero) is a 400
naming the field, never something that reaches llama.cpp or MLX."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from heylook_llm.errors import InvalidRequest
from heylook_llm.types import SamplingOverrides, SamplingParams

MIN_REPEAT_PENALTY = 0.01
"""Smaller penalties overflow logits (a logit divided by ~0) or turn masked ones into NaN (-inf times 0)."""

_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 100.0),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "repeat_penalty": (MIN_REPEAT_PENALTY, 100.0),
    "presence_penalty": (-100.0, 100.0),
    "frequency_penalty": (-100.0, 100.0),
}


def check_sampling(params: SamplingParams) -> SamplingParams:
    """Raise InvalidRequest naming the first value outside what the samplers handle safely."""
    for name, (low, high) in _RANGES.items():
        value = getattr(params, name)
        if not math.isfinite(value) or not low <= value <= high:
            raise InvalidRequest(f"{name} must be a number from {low:g} to {high:g}, got {value!r}", param=name)
    for token, bias in params.logit_bias:
        if math.isnan(bias) or bias == math.inf:
            raise InvalidRequest(f"logit_bias for token {token} must be a number, got {bias!r}", param="logit_bias")
    if params.top_k < 0 or params.max_tokens < 1:
        name = "top_k" if params.top_k < 0 else "max_tokens"
        raise InvalidRequest(f"{name} is out of range", param=name)
    return params


def resolve_sampling(
    request: SamplingOverrides, model_defaults: SamplingOverrides, server: SamplingParams
) -> SamplingParams:
    merged = request.merged_over(model_defaults)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(SamplingParams):
        value = getattr(merged, f.name)
        if value is None:
            continue
        if f.name == "stop":
            value = tuple(s for s in value if s)
        elif f.name == "logit_bias":
            value = tuple(sorted(value.items()))
        values[f.name] = value
    return check_sampling(dataclasses.replace(server, **values))
