"""Model ids: readable and unique.

From the Hugging Face cache a model is called by its repository (`org/name`); a repository holding several
GGUF files gets the quantization as a tag (`org/name:Q4_K_M`, as Ollama names Hugging Face models), or the
file name when two files share a quantization. From a folder a model is called by its file or folder name.
An id already taken gets `-2`, `-3`, ...
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

from heylook_llm.importer.detect import FoundModel


def _base_id(model: FoundModel, repo_counts: Counter[str], quant_counts: Counter[tuple[str, str]]) -> str:
    if model.repo_id is None:
        return model.name
    if repo_counts[model.repo_id] == 1:
        return model.repo_id
    tag = model.quantization if quant_counts[(model.repo_id, model.quantization)] == 1 else model.name
    return f"{model.repo_id}:{tag}"


def assign_ids(
    models: Sequence[FoundModel], taken: Collection[str] = (), kept: Sequence[str | None] | None = None
) -> list[str]:
    """One id per model, in order; none equals another or one of `taken`. `kept[i]`, when given, is the id
    model i already has in the file being merged into: it stays, so clients and default_model keep working."""
    repo_counts = Counter(m.repo_id for m in models if m.repo_id is not None)
    quant_counts = Counter((m.repo_id, m.quantization) for m in models if m.repo_id is not None)
    kept = kept if kept is not None else [None] * len(models)
    used = set(taken) | {k for k in kept if k is not None}
    ids: list[str] = []
    for model, existing in zip(models, kept, strict=True):
        if existing is not None:
            ids.append(existing)
            continue
        base = _base_id(model, repo_counts, quant_counts)
        candidate, number = base, 2
        while candidate in used:
            candidate = f"{base}-{number}"
            number += 1
        used.add(candidate)
        ids.append(candidate)
    return ids
