"""Embedding vectors as both dialects return them."""

from __future__ import annotations

import math


def shortened(vectors: list[list[float]], dimensions: int | None) -> list[list[float]]:
    """Keep the first `dimensions` values of each vector and rescale to unit length (Ollama's `dimensions`)."""
    if dimensions is None:
        return vectors
    out = []
    for vector in vectors:
        if dimensions >= len(vector):
            out.append(vector)
            continue
        head = vector[:dimensions]
        norm = math.sqrt(sum(v * v for v in head))
        out.append([v / norm for v in head] if norm > 0 else head)
    return out
