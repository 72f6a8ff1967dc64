"""Find the models in groups of files: walk folders, read every candidate's header, then put the pieces
together: split shards become one model, projectors are paired with their models, and the same weights
reached twice (a symlink, or a copy with identical bytes) are imported once.

Progress goes through the `ScanProgress` protocol so that this module prints nothing; the command layer
draws the bars.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from heylook_llm.importer.detect import (
    SHARD_NAME,
    FoundModel,
    Projector,
    Shard,
    Skipped,
    detect_folder,
    detect_gguf,
    starts_with_gguf_magic,
    unrecognised_reason,
)

log = logging.getLogger(__name__)

# llama.cpp's recommended projector precision first: a lower precision projector is a fallback.
_PROJECTOR_PREFERENCE = ("F16", "BF16", "F32", "Q8_0")
_HASH_CHUNK = 8 << 20
_SAMPLE = 1 << 20


class ScanProgress(Protocol):
    def start(self, description: str, total: int, *, in_bytes: bool = False) -> None: ...

    def advance(self, amount: int = 1) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, description: str, total: int, *, in_bytes: bool = False) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class FileGroup:
    """Files looked at together: a folder given with --folder, or one revision of a Hugging Face repository."""

    root: Path
    files: tuple[Path, ...]
    repo_id: str | None = None


@dataclass(slots=True)
class ScanResult:
    models: list[FoundModel] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def folder_group(folder: Path) -> tuple[FileGroup, list[Skipped]]:
    """Every file under `folder`, following symlinked folders once; hidden entries are left out."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    seen_dirs: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if real in seen_dirs:  # a symlink loop, or a second way into the same folder
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        keep = []
        for name in sorted(dirnames):
            if name.startswith("."):
                continue
            if name.startswith("models--") and (here / name / "snapshots").is_dir():
                skipped.append(Skipped(here / name, f"a Hugging Face cache repository: use --hf-cache {here}"))
                continue
            keep.append(name)
        dirnames[:] = keep
        files.extend(here / name for name in sorted(filenames) if not name.startswith("."))
    return FileGroup(root=folder, files=tuple(files)), skipped


def scan(groups: Sequence[FileGroup], progress: ScanProgress | None = None) -> ScanResult:
    progress = progress or NoProgress()
    result = ScanResult()
    projectors: list[Projector] = []
    shards: list[Shard] = []
    progress.start("reading model headers", sum(len(g.files) for g in groups))
    for group in groups:
        found, group_projectors, group_shards = _scan_group(group, result.skipped, progress)
        for model in found:
            model.repo_id = group.repo_id
        result.models.extend(found)
        projectors.extend(group_projectors)
        shards.extend(group_shards)
    progress.finish()
    _report_orphan_shards(shards, result)
    # Projectors are paired before duplicates go: of two copies of a model, the one with a projector beside it is
    # kept, and a projector is reported unused only when no kept model uses it.
    found = result.models
    _pair_projectors(found, projectors)
    result.models = _without_duplicates(found, result.skipped, progress)
    _report_unused_projectors(result.models, found, projectors, result.skipped)
    return result


def _scan_group(
    group: FileGroup, skipped: list[Skipped], progress: ScanProgress
) -> tuple[list[FoundModel], list[Projector], list[Shard]]:
    models: list[FoundModel] = []
    projectors: list[Projector] = []
    shards: list[Shard] = []
    # A folder with a model config.json is judged as a whole: its safetensors/bin files are not looked at one
    # by one (GGUF files beside them still are).
    judged_dirs: set[Path] = set()
    for folder in sorted({f.parent for f in group.files if f.name == "config.json"}):
        verdict = detect_folder(folder)
        if verdict is None:
            continue
        judged_dirs.add(folder)
        if isinstance(verdict, FoundModel):
            models.append(verdict)
        else:
            skipped.append(verdict)
    for path in group.files:
        progress.advance()
        if not starts_with_gguf_magic(path):
            if path.parent in judged_dirs:
                continue
            reason = unrecognised_reason(path)
            if reason is not None:
                skipped.append(Skipped(path, reason))
            continue
        verdict_file = detect_gguf(path)
        if isinstance(verdict_file, FoundModel):
            models.append(verdict_file)
        elif isinstance(verdict_file, Projector):
            projectors.append(verdict_file)
        elif isinstance(verdict_file, Shard):
            shards.append(verdict_file)
        else:
            skipped.append(verdict_file)
    # Keep the order the files were listed in (an MLX folder sits where its config.json is).
    position = {path: index for index, path in enumerate(group.files)}
    models.sort(key=lambda m: position.get(m.path / "config.json" if m.provider == "mlx" else m.path, 0))
    return models, projectors, shards


def _report_orphan_shards(shards: Iterable[Shard], result: ScanResult) -> None:
    """Shards are imported through their first shard, whose line in the report (imported, or skipped with the
    reason) covers them; a shard is listed itself only when no first shard lies beside it."""
    used = {p.resolve() for m in result.models for p in m.files}
    for shard in shards:
        if shard.path.resolve() in used:
            continue
        match = SHARD_NAME.match(shard.path.name)
        if match is not None and shard.path.with_name(f"{match['prefix']}-00001-of-{match['count']}.gguf").exists():
            continue
        result.skipped.append(
            Skipped(shard.path, f"shard {shard.number} of {shard.count} of a split model whose first shard is missing")
        )


def _preferred(model: FoundModel) -> tuple[bool, bool, int]:
    # Between two paths to the same bytes keep the one llama.cpp can use (a Hugging Face blob has no .gguf name),
    # then the one with a projector beside it, which loses nothing.
    unusable = model.provider == "llama_cpp" and model.path.suffix != ".gguf"
    return (unusable, model.mmproj_path is None, len(str(model.path)))


def _without_duplicates(models: list[FoundModel], skipped: list[Skipped], progress: ScanProgress) -> list[FoundModel]:
    by_path: dict[Path, list[FoundModel]] = defaultdict(list)
    for model in models:
        by_path[model.resolved].append(model)
    kept: list[FoundModel] = []
    for same in by_path.values():
        best = min(same, key=_preferred)
        kept.append(best)
        skipped.extend(Skipped(m.path, f"the same files as {best.path} (a symlink)") for m in same if m is not best)
    # Different paths, same bytes: only weights of equal size whose samples (start, middle, end of each file)
    # also agree can be copies, so only those are hashed in full; two quantizations never get that far.
    by_sample: dict[tuple[str, int, str], list[FoundModel]] = defaultdict(list)
    for model in kept:
        by_sample[(model.provider, model.size_bytes, "")].append(model)
    for (provider, size, _), group in list(by_sample.items()):
        if len(group) > 1:
            del by_sample[(provider, size, "")]
            for model in group:
                by_sample[(provider, size, _sample_digest(model))].append(model)
    suspects = [m for group in by_sample.values() if len(group) > 1 for m in group]
    if suspects:
        progress.start("hashing same-size models", sum(m.size_bytes for m in suspects), in_bytes=True)
        digests = {id(m): _content_digest(m, progress) for m in suspects}
        progress.finish()
        copies: dict[str, list[FoundModel]] = defaultdict(list)
        for model in kept:
            if id(model) in digests:
                copies[digests[id(model)]].append(model)
        for same_content in copies.values():
            # The first copy is kept unless only a later one has a projector beside it (min keeps the first of equals).
            original = min(same_content, key=lambda m: m.mmproj_path is None)
            for model in same_content:
                if model is not original:
                    kept.remove(model)
                    skipped.append(Skipped(model.path, f"the same content as {original.path} (a copy)"))
    position = {id(m): i for i, m in enumerate(models)}
    return sorted(kept, key=lambda m: position[id(m)])


def _sample_digest(model: FoundModel) -> str:
    digest = hashlib.sha256()
    for path in model.files:
        size = path.stat().st_size
        with path.open("rb") as handle:
            for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
                handle.seek(offset)
                digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()


def _content_digest(model: FoundModel, progress: ScanProgress) -> str:
    """sha256 over the model's files in order, names included for folders (so that renamed files differ)."""
    digest = hashlib.sha256()
    for path in model.files:
        if model.provider == "mlx":
            digest.update(path.name.encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
                progress.advance(len(chunk))
    return digest.hexdigest()


def _unique_projectors(projectors: Iterable[Projector]) -> list[Projector]:
    """The first path to each projector file (symlinks followed)."""
    unique: dict[Path, Projector] = {}
    for projector in projectors:
        unique.setdefault(projector.resolved, projector)
    return list(unique.values())


def _projector_rank(projector: Projector) -> tuple[int, str]:
    level = projector.quantization.upper()
    order = _PROJECTOR_PREFERENCE.index(level) if level in _PROJECTOR_PREFERENCE else len(_PROJECTOR_PREFERENCE)
    return order, projector.path.name


def _pair_projectors(models: list[FoundModel], projectors: list[Projector]) -> None:
    """A projector belongs to the chat models in its folder whose embedding length it projects to (every
    quantization of one model shares one projector). Every copy of a model is paired, duplicates included."""
    for model in models:
        if model.provider != "llama_cpp" or model.embedding:
            continue
        matching = _unique_projectors(
            p
            for p in projectors
            if p.path.parent == model.path.parent
            and (p.projection_dim is None or p.projection_dim == model.embedding_length)
        )
        if not matching:
            continue
        best = min(matching, key=_projector_rank)
        model.mmproj_path = best.path
        model.vision = True
        if len(matching) > 1:
            model.notes.append(f"{len(matching)} projectors beside it: chose {best.path.name} ({best.quantization})")


def _report_unused_projectors(
    kept: list[FoundModel], found: list[FoundModel], projectors: list[Projector], skipped: list[Skipped]
) -> None:
    """List each projector no imported model uses; `found` still holds the duplicates that were not imported."""
    used_paths = {m.mmproj_path for m in kept if m.mmproj_path is not None}
    # The path whose line (the model's, or the projector's own) stands for each projector file.
    standing: dict[Path, Path] = {}
    for projector in projectors:
        if projector.path in used_paths:
            standing.setdefault(projector.resolved, projector.path)
    for projector in projectors:
        if projector.path in used_paths:
            continue
        first = standing.setdefault(projector.resolved, projector.path)
        if first != projector.path:
            skipped.append(Skipped(projector.path, f"the same projector as {first} (a symlink)"))
        else:
            skipped.append(Skipped(projector.path, _unused_projector_reason(projector, kept, found)))


def _unused_projector_reason(projector: Projector, kept: list[FoundModel], found: list[FoundModel]) -> str:
    kept_ids = {id(m) for m in kept}
    beside = [m for m in found if m.path.parent == projector.path.parent and m.mmproj_path is not None]
    chosen = next((m.mmproj_path for m in beside if id(m) in kept_ids and m.mmproj_path is not None), None)
    if chosen is not None:
        return f"a vision projector (mmproj); {chosen.name} was chosen for the model beside it"
    duplicate = next((m for m in beside if id(m) not in kept_ids), None)
    if duplicate is not None:
        return f"a vision projector (mmproj) for {duplicate.path.name}, which is skipped as a duplicate"
    return "a vision projector (mmproj) with no model of matching embedding length beside it"
