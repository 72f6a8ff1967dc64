"""What the user sees: progress bars while scanning and hashing, and the tables at the end.

rich draws both: it is well kept, already installed with our dependencies, draws a bar only on a terminal (a
pipe or a log file gets no control characters), and lays out tables with long paths without hand-written
column arithmetic. Markup is off, so brackets in file names print as they are.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from heylook_llm.importer.detect import Skipped
from heylook_llm.importer.memory import MemoryEstimate
from heylook_llm.importer.profiles import PlannedEntry

_PIPE_WIDTH = 160
"""Width of tables written to a pipe or file, where there is no terminal to measure (rich would use 80)."""


def console(stream: TextIO | None = None) -> Console:
    stream = stream or sys.stdout
    width = None if stream.isatty() else max(_PIPE_WIDTH, shutil.get_terminal_size((_PIPE_WIDTH, 24)).columns)
    return Console(file=stream, width=width, markup=False, highlight=False, emoji=False)


class RichProgress:
    """`ScanProgress` drawn by rich on stderr; one bar at a time (files, then bytes hashed)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._console = Console(file=stream or sys.stderr, markup=False, highlight=False)
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, description: str, total: int, *, in_bytes: bool = False) -> None:
        self.finish()
        columns: tuple[ProgressColumn, ...] = (TextColumn("{task.description}"), BarColumn())
        if in_bytes:
            columns += (DownloadColumn(), TransferSpeedColumn())
        else:
            columns += (MofNCompleteColumn(), TimeRemainingColumn())
        self._progress = Progress(*columns, console=self._console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = None
        self._task = None


def _yes(flag: bool, detail: str = "") -> str:
    return (f"yes ({detail})" if detail else "yes") if flag else "-"


def imported_table(planned: Sequence[PlannedEntry], estimates: dict[str, MemoryEstimate], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("id", "provider", "quant", "size", "memory (weights + KV @ tokens)", "vision", "embedding", "notes"):
        table.add_column(name, overflow="fold")
    for item in planned:
        found = item.found
        est = estimates.get(item.id)
        memory = f"{decimal(est.total_bytes)} @ {est.kv_tokens}" if est is not None else "?"
        vision = _yes(found.vision, "mmproj" if found.mmproj_path is not None else "")
        table.add_row(
            item.id,
            item.provider,
            found.quantization,
            decimal(found.size_bytes),
            memory,
            vision,
            _yes(found.embedding),
            "; ".join(item.notes),
        )
    return table


def skipped_table(skipped: Sequence[Skipped]) -> Table:
    table = Table(title=f"Skipped ({len(skipped)})", title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("reason", overflow="fold")
    for item in skipped:
        table.add_row(str(item.path), item.reason)
    return table


def models_table(rows: Sequence[tuple[str, str, str, str, str, str]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("id", "provider", "size", "memory (est.)", "capabilities", "enabled"):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table
