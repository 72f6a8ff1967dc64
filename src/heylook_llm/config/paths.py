"""Paths in messages that clients see: relative to the models folder (the folder of models.yaml), never absolute.

Error bodies go to whoever can reach the server; the server's folder layout is none of their business. The log
keeps the absolute paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel


def shown_path(path: Path, models_folder: Path | None) -> str:
    """`path` relative to the models folder; only its name when it lies outside."""
    if models_folder is not None:
        for folder in _spellings(models_folder):
            for candidate in _spellings(path):
                try:
                    return Path(candidate).relative_to(folder).as_posix()
                except ValueError:
                    continue
    return path.name


def config_paths(config: BaseModel) -> list[Path]:
    """The paths a model's config names (its weights, projector, draft model, ...)."""
    return [value for value in vars(config).values() if isinstance(value, Path)]


def without_local_paths(text: str, models_folder: Path | None, paths: Iterable[Path] = ()) -> str:
    """`text` with each of `paths`, and anything under the models folder, written relative to the models folder."""
    # Longest first, so that a file's path is replaced before the folder that holds it.
    replacements: dict[str, str] = {}
    for path in paths:
        for spelling in _spellings(path):
            replacements[spelling] = shown_path(path, models_folder)
    if models_folder is not None:
        for spelling in _spellings(models_folder):
            replacements[spelling + os.sep] = ""
    for absolute in sorted(replacements, key=len, reverse=True):
        if len(absolute) > 1:
            text = text.replace(absolute, replacements[absolute])
    return text


def _spellings(path: Path) -> list[str]:
    """The absolute spellings of `path` a message may hold: as given and with symbolic links resolved."""
    spellings = [str(path.absolute())]
    try:
        resolved = str(path.resolve())
    except OSError:
        return spellings
    if resolved not in spellings:
        spellings.append(resolved)
    return spellings
