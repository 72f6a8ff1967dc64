"""Profiles, and the one precedence every imported value follows: detected < profile < --override.

- detected: what the files say (model_path, mmproj_path, embedding, vision, the trained context length).
- profile: the values in PROFILES below; docs/import.md lists every one of them. The profile's context is an
  upper bound: a model trained on a shorter context gets its trained length.
- override: `--override KEY=VALUE`, taken as given (a note says when n_ctx exceeds the trained context).

Embedding models get no sampling values (they would have no effect). Which source set each value is kept in
`PlannedEntry.sources`, so tests and the report can show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from heylook_llm.config.registry import PROVIDER_CONFIGS, MLXConfig
from heylook_llm.importer.detect import FoundModel, Provider
from heylook_llm.importer.overrides import Override
from heylook_llm.model_info import format_parameter_count

Source = Literal["detected", "profile", "override"]
MlxCache = Literal["standard", "rotating", "quantized"]

_MLX_QUANTIZED_ONLY = ("kv_bits", "kv_group_size", "quantized_kv_start")
# MLX continuous batching (`parallel`) came with mlx-lm's BatchGenerator; read from the schema, not assumed.
_MLX_HAS_PARALLEL = "parallel" in MLXConfig.model_fields
_MLX_DEFAULT_PARALLEL = int(MLXConfig.model_fields["parallel"].default) if _MLX_HAS_PARALLEL else 1
_MLX_GROUP_SIZES = (64, 32)
"""Group sizes MLX quantizes with (largest first); a head's width must be a multiple of the one used."""


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    purpose: str
    context: int
    """llama.cpp n_ctx, and the tokens an MLX model's KV cache is sized for; at most the trained context."""
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    """llama.cpp `repeat_penalty`, MLX `repetition_penalty` (1.0 is off)."""
    parallel: int
    """Sequences generated at once (llama.cpp slots, MLX batch); KV memory grows with parallel x context.
    MLX batches only with a standard cache: a rotating or quantized one gets 1."""
    n_batch: int
    """llama.cpp prompt tokens per step (embedding models use n_ctx: a whole input in one step)."""
    mlx_cache: MlxCache
    """MLX KV cache: rotating keeps the last `context` tokens; quantized stores `kv_bits` per number."""
    kv_bits: int | None = None


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="fast",
            purpose="short answers quickly: small context, short outputs, a narrow sampling choice",
            context=2048,
            max_tokens=256,
            temperature=0.7,
            top_p=0.9,
            top_k=20,
            min_p=0.05,
            repeat_penalty=1.0,
            parallel=4,
            n_batch=512,
            mlx_cache="standard",
        ),
        Profile(
            name="balanced",
            purpose="general use: a 4k context and medium outputs",
            context=4096,
            max_tokens=1024,
            temperature=0.7,
            top_p=0.9,
            top_k=40,
            min_p=0.05,
            repeat_penalty=1.05,
            parallel=4,
            n_batch=512,
            mlx_cache="standard",
        ),
        Profile(
            name="quality",
            purpose="long inputs and long answers, a full-precision KV cache, more careful sampling",
            context=8192,
            max_tokens=4096,
            temperature=0.6,
            top_p=0.95,
            top_k=64,
            min_p=0.02,
            repeat_penalty=1.0,
            parallel=2,
            n_batch=1024,
            mlx_cache="standard",
        ),
        Profile(
            name="memory",
            purpose="the least memory: small context, one sequence slot, a 4-bit MLX KV cache",
            context=2048,
            max_tokens=512,
            temperature=0.7,
            top_p=0.9,
            top_k=40,
            min_p=0.05,
            repeat_penalty=1.05,
            parallel=1,
            n_batch=256,
            mlx_cache="quantized",
            kv_bits=4,
        ),
        Profile(
            name="interactive",
            purpose="one person chatting: long conversations in one slot, lively short replies",
            context=8192,
            max_tokens=512,
            temperature=0.8,
            top_p=0.95,
            top_k=40,
            min_p=0.05,
            repeat_penalty=1.1,
            parallel=1,
            n_batch=512,
            mlx_cache="rotating",
        ),
    )
}
DEFAULT_PROFILE = "balanced"


class PlanError(ValueError):
    """A planned config fails the registry schema; `problems` name the model, the field and the override."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(slots=True)
class PlannedEntry:
    """One models.yaml entry to write, and where each value came from."""

    id: str
    provider: Provider
    description: str
    tags: list[str]
    config: dict[str, Any]
    sources: dict[str, Source]
    context: int
    """Tokens the KV cache is sized for in the memory estimate (context x parallel)."""
    found: FoundModel
    entry_fields: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class _Layers:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, Source] = {}

    def set(self, key: str, value: Any, source: Source) -> None:
        self.values[key] = value
        self.sources[key] = source

    def drop(self, key: str) -> None:
        self.values.pop(key, None)
        self.sources.pop(key, None)


def _bounded(profile_context: int, trained: int) -> int:
    return min(profile_context, trained) if trained > 0 else profile_context


def _detected(found: FoundModel, layers: _Layers) -> None:
    layers.set("model_path", str(found.path), "detected")
    if found.provider == "llama_cpp":
        if found.context_length > 0:
            layers.set("n_ctx", found.context_length, "detected")
        if found.embedding:
            layers.set("embedding", True, "detected")
        if found.mmproj_path is not None:
            layers.set("mmproj_path", str(found.mmproj_path), "detected")
    elif found.vision:
        layers.set("vision", True, "detected")


def _mlx_cache(found: FoundModel, profile: Profile, context: int, layers: _Layers, notes: list[str]) -> None:
    cache = profile.mlx_cache
    if cache == "quantized":
        head_dim = found.kv.head_dim if found.kv is not None else 0
        group = next((g for g in _MLX_GROUP_SIZES if head_dim and head_dim % g == 0), None)
        if group is None:
            # MLX quantizes along a head; heads narrower than its smallest group cannot be quantized.
            notes.append(f"heads {head_dim} wide cannot be quantized: a rotating cache bounds memory instead")
            cache = "rotating"
        else:
            layers.set("cache_type", "quantized", "profile")
            layers.set("kv_bits", profile.kv_bits, "profile")
            layers.set("kv_group_size", group, "profile")
    if cache == "rotating":
        layers.set("cache_type", "rotating", "profile")
        layers.set("max_kv_size", context, "profile")


def _profile(found: FoundModel, profile: Profile, layers: _Layers, notes: list[str]) -> int:
    context = _bounded(profile.context, found.context_length)
    if found.provider == "llama_cpp":
        layers.set("n_ctx", context, "profile")
        layers.set("parallel", profile.parallel, "profile")
        layers.set("n_batch", context if found.embedding else profile.n_batch, "profile")
    else:
        _mlx_cache(found, profile, context, layers, notes)
        if _MLX_HAS_PARALLEL:
            layers.set("parallel", _mlx_parallel(layers, profile.parallel), "profile")
    if found.embedding:
        return context
    for key in ("temperature", "top_p", "top_k", "min_p", "max_tokens"):
        layers.set(key, getattr(profile, key), "profile")
    penalty_key = "repeat_penalty" if found.provider == "llama_cpp" else "repetition_penalty"
    layers.set(penalty_key, profile.repeat_penalty, "profile")
    return context


def _overrides(found: FoundModel, overrides: list[Override], layers: _Layers, entry_fields: dict[str, Any]) -> None:
    for override in overrides:
        if override.is_entry_field:
            entry_fields[override.key] = override.value
        elif override.applies_to(found.provider):
            if override.value is None:
                layers.drop(override.key)
            else:
                layers.set(override.key, override.value, "override")
    cache_type = layers.values.get("cache_type", "standard")
    if layers.sources.get("cache_type") == "override":
        # Settings the profile chose for another cache type would make the config invalid: they go.
        for key in (*_MLX_QUANTIZED_ONLY, "max_kv_size"):
            wanted = cache_type == "quantized" if key in _MLX_QUANTIZED_ONLY else cache_type == "rotating"
            if not wanted and layers.sources.get(key) == "profile":
                layers.drop(key)
        if layers.sources.get("parallel") == "profile":
            layers.set("parallel", _mlx_parallel(layers, int(layers.values["parallel"])), "profile")


def _mlx_parallel(layers: _Layers, wanted: int) -> int:
    """mlx-lm batches only models with a standard cache; the others run one request at a time."""
    return wanted if layers.values.get("cache_type", "standard") == "standard" else 1


def _kv_tokens(found: FoundModel, layers: _Layers, context: int) -> int:
    values = layers.values
    if found.provider == "llama_cpp":
        return int(values.get("n_ctx", 4096)) * int(values.get("parallel", 4))
    if values.get("cache_type") == "rotating" and "max_kv_size" in values:
        return min(context, int(values["max_kv_size"]))
    if values.get("cache_type", "standard") != "standard":
        return context
    return context * int(values.get("parallel", _MLX_DEFAULT_PARALLEL))


def _describe(found: FoundModel) -> str:
    text = f"{found.info.family} {format_parameter_count(found.parameter_count)} {found.quantization}"
    if found.context_length:
        text += f", trained context {found.context_length}"
    if found.shard_count > 1:
        text += f", {found.shard_count} shards"
    return f"{text}; imported from {found.path}"


def _tags(found: FoundModel) -> list[str]:
    tags = [found.info.family, found.quantization]
    tags.append("embedding" if found.embedding else "chat")
    if found.vision:
        tags.append("vision")
    return tags


def plan_entry(found: FoundModel, model_id: str, profile: Profile, overrides: list[Override]) -> PlannedEntry:
    """The entry for one model; PlanError when the resulting config fails the registry schema."""
    layers = _Layers()
    notes = list(found.notes)
    entry_fields: dict[str, Any] = {}
    _detected(found, layers)
    context = _profile(found, profile, layers, notes)
    _overrides(found, overrides, layers, entry_fields)
    n_ctx = layers.values.get("n_ctx")
    if layers.sources.get("n_ctx") == "override" and found.context_length and int(n_ctx or 0) > found.context_length:
        notes.append(f"n_ctx {n_ctx} is above the trained context {found.context_length}: quality may suffer")
    planned = PlannedEntry(
        id=model_id,
        provider=found.provider,
        description=_describe(found),
        tags=_tags(found),
        config=layers.values,
        sources=layers.sources,
        context=_kv_tokens(found, layers, context),
        found=found,
        entry_fields=entry_fields,
        notes=notes,
    )
    _validate(planned, overrides)
    return planned


def _validate(planned: PlannedEntry, overrides: list[Override]) -> None:
    try:
        PROVIDER_CONFIGS[planned.provider].model_validate(planned.config)
    except ValidationError as exc:
        raw = {o.key: o.raw for o in overrides}
        overridden = [k for k, source in planned.sources.items() if source == "override"]
        problems = []
        for err in exc.errors():
            loc = ".".join(str(part) for part in ("config", *err["loc"]))
            # A field's own error blames its override; a combination error blames every override on the model.
            keys = [str(err["loc"][0])] if err["loc"] else overridden
            blamed = [f"--override {k}={raw[k]}" for k in keys if k in overridden]
            blame = f" (from {', '.join(blamed)})" if blamed else ""
            problems.append(f"model '{planned.id}': field '{loc}': {err['msg']}{blame}")
        raise PlanError(problems) from None
