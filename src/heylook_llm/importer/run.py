"""The import from start to end, and `models list` / `models validate`, printing as a command does.

Scan -> ids -> plan each entry (detected < profile < override) -> new or merged document -> read it back with
the server's parser -> report -> write (or print, with --dry-run).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from rich.filesize import decimal

from heylook_llm.config.registry import LlamaCppConfig, MLXConfig, ModelEntry, Registry, RegistryError, load_registry
from heylook_llm.engine.memory import estimate_footprint
from heylook_llm.importer.detect import FoundModel, Skipped
from heylook_llm.importer.hf_cache import HfCacheError, hf_cache_groups
from heylook_llm.importer.manage import model_rows, validate_file
from heylook_llm.importer.memory import (
    MemoryEstimate,
    estimate,
    estimate_entry,
    fit_warning,
    machine_memory_bytes,
)
from heylook_llm.importer.naming import assign_ids
from heylook_llm.importer.overrides import Override, OverrideError, parse_overrides
from heylook_llm.importer.profiles import PlanError, PlannedEntry, Profile, plan_entry
from heylook_llm.importer.report import RichProgress, console, imported_table, models_table, skipped_table
from heylook_llm.importer.scan import FileGroup, ScanResult, folder_group, scan
from heylook_llm.importer.writer import (
    Document,
    WriteError,
    check_round_trip,
    existing_ids_by_path,
    merge,
    new_document,
    read_existing,
    write,
)
from heylook_llm.model_info import ModelFileError, read_model_files
from heylook_llm.packaged_models import find_packaged_models, missing_package_hint


@dataclass(frozen=True, slots=True)
class ImportRequest:
    folders: list[Path]
    hf_cache: Path | None
    use_hf_cache: bool
    profile: Profile
    overrides: list[str]
    output: Path
    merge: bool
    force: bool
    dry_run: bool
    use_packages: bool = False
    """Add the models inside installed Python packages (heylook_llm/packaged_models.py)."""


class ImportFailed(Exception):
    """Stops the import with these messages and exit code; nothing has been written."""

    def __init__(self, messages: list[str], code: int = 2) -> None:
        self.messages = messages
        self.code = code
        super().__init__("; ".join(messages))


def _say(message: str) -> None:
    print(f"heylookllm: {message}", file=sys.stderr)


def _groups(request: ImportRequest) -> tuple[list[FileGroup], list[Skipped]]:
    groups: list[FileGroup] = []
    skipped: list[Skipped] = []
    for folder in request.folders:
        folder = folder.expanduser()
        if not folder.is_dir():
            raise ImportFailed([f"--folder {folder}: not a folder"])
        group, group_skipped = folder_group(folder)
        groups.append(group)
        skipped.extend(group_skipped)
    if request.use_hf_cache:
        try:
            hf_groups, hf_skipped = hf_cache_groups(request.hf_cache.expanduser() if request.hf_cache else None)
        except HfCacheError as exc:
            raise ImportFailed([str(exc)]) from None
        groups.extend(hf_groups)
        skipped.extend(hf_skipped)
    if request.use_packages:
        found = find_packaged_models()
        if not found and (hint := missing_package_hint()) is not None:
            _say(hint)
        # The model's own id names it, as a repository id names a Hugging Face model.
        groups.extend(FileGroup(root=f.path.parent, files=(f.path,), repo_id=f.model.model_id) for f in found)
    return groups, skipped


def _document(request: ImportRequest) -> Document | None:
    """The file to merge into, or None for a new file; refuses to replace a file without --merge or --force."""
    output = request.output
    if not output.exists():
        return None
    if request.merge:
        try:
            return read_existing(output)
        except WriteError as exc:
            raise ImportFailed([str(exc)]) from None
    if not request.force:
        raise ImportFailed([f"{output} exists: pass --merge to add to it, --force to replace it, or another --output"])
    return None


def _plan(
    models: list[FoundModel], existing: Document | None, profile: Profile, overrides: list[Override]
) -> list[PlannedEntry]:
    kept: list[str | None] = [None] * len(models)
    taken: list[str] = []
    if existing is not None:
        by_path, taken = existing_ids_by_path(existing)
        kept = [by_path.get(m.resolved) for m in models]
    ids = assign_ids(models, taken, kept)
    planned: list[PlannedEntry] = []
    problems: list[str] = []
    for model, model_id in zip(models, ids, strict=True):
        try:
            planned.append(plan_entry(model, model_id, profile, overrides))
        except PlanError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ImportFailed(problems)
    return planned


def _unused_overrides(overrides: list[Override], planned: list[PlannedEntry]) -> None:
    providers = {p.provider for p in planned}
    for override in overrides:
        if not override.is_entry_field and not override.providers & providers:
            which = ", ".join(sorted(override.providers))
            _say(f"note: --override {override.key} applies to {which} models, and none was imported")


def _estimates(planned: list[PlannedEntry], registry: Registry, profile: Profile) -> list[MemoryEstimate]:
    """The imported models' estimates, and those of the other enabled entries in the file (merge)."""
    estimates = [estimate(p.id, p.found, p.config, p.context) for p in planned]
    imported = {p.id for p in planned}
    for entry in registry.enabled():
        if entry.id not in imported:
            other = estimate_entry(entry, profile.context)
            if other is not None:
                estimates.append(other)
    enabled = {e.id for e in registry.enabled()}
    return [e for e in estimates if e.model_id in enabled]


def _run(request: ImportRequest) -> int:
    try:
        overrides = parse_overrides(request.overrides)
    except OverrideError as exc:
        raise ImportFailed(exc.problems) from None
    existing = _document(request)
    groups, skipped = _groups(request)
    progress = RichProgress()
    try:
        result: ScanResult = scan(groups, progress)
    finally:
        progress.finish()
    skipped.extend(result.skipped)
    report = console(sys.stderr if request.dry_run else sys.stdout)
    if not result.models:
        if skipped:
            report.print(skipped_table(skipped))
        raise ImportFailed(["no models found: nothing written"], code=1)
    planned = _plan(result.models, existing, request.profile, overrides)
    _unused_overrides(overrides, planned)
    if existing is not None:
        document = existing
        merge(document, planned)
    else:
        document = new_document(request.output, planned, request.profile.name)
    text = document.render()
    try:
        registry = check_round_trip(text, request.output)
    except RegistryError as exc:
        where = "the merged file" if existing is not None else "the new file"
        raise ImportFailed([f"{where} would not load: {p}" for p in exc.problems]) from None
    estimates = _estimates(planned, registry, request.profile)
    by_id = {e.model_id: e for e in estimates}
    title = f"Imported {len(planned)} model(s) with profile {request.profile.name}"
    report.print(imported_table(planned, by_id, title))
    if skipped:
        report.print(skipped_table(skipped))
    warning = fit_warning(estimates, registry.max_loaded_models, machine_memory_bytes())
    if warning:
        _say(f"warning: {warning}")
    summary = f"{len(document.added)} added, {len(document.replaced)} replaced"
    if request.dry_run:
        sys.stdout.write(text)
        _say(f"dry run: {request.output} would get {summary}; nothing written")
        return 0
    if not document.changes_file(text):
        _say(f"{request.output} already holds these entries; nothing written")
        return 0
    try:
        backup = write(document, text)
    except WriteError as exc:
        raise ImportFailed([str(exc)]) from None
    kept = f"; previous version in {backup}" if backup else ""
    report.print(f"wrote {request.output} ({summary}{kept})")
    return 0


def run(request: ImportRequest) -> int:
    try:
        return _run(request)
    except ImportFailed as exc:
        for message in exc.messages:
            _say(message)
        return exc.code


def list_models(path: Path) -> int:
    try:
        registry = load_registry(path)
    except RegistryError as exc:
        _say(str(exc))
        return 1
    entries = {entry.id: entry for entry in registry.models}
    rows = [
        (
            row.id,
            row.provider,
            decimal(row.size_bytes) if row.size_bytes is not None else "missing",
            _estimated_memory(entries[row.id]),
            ", ".join(row.capabilities),
            "yes" if row.enabled else "no",
        )
        for row in model_rows(registry)
    ]
    title = f"{path}: {len(rows)} model(s), default {registry.default_model or '-'}, "
    title += f"max_loaded_models {registry.max_loaded_models}, memory_budget {registry.memory_budget or 'default'}"
    console().print(models_table(rows, title))
    return 0


def _estimated_memory(entry: ModelEntry) -> str:
    """What the server will count the model as before loading it (engine/memory.py): weights, KV cache, margin."""
    if not isinstance(entry.config, LlamaCppConfig | MLXConfig):
        return "-"
    try:
        info = read_model_files(entry.config.model_path)
    except (ModelFileError, OSError):
        return "?"
    return decimal(estimate_footprint(entry, info).estimate_bytes)


def validate_models(path: Path) -> int:
    registry, problems = validate_file(path)
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    assert registry is not None
    print(f"{path}: valid ({len(registry.models)} model(s), {len(registry.enabled())} enabled)")
    return 0
