"""Sampling values resolve request > model config > server default."""

from __future__ import annotations

import dataclasses
from typing import Any

from heylook_llm.types import SamplingOverrides, SamplingParams


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
    return dataclasses.replace(server, **values)
