"""How much CPU other programs took while a measurement ran (Linux /proc; elsewhere nothing is reported).

The benchmark shares a small machine with whatever else runs on it. `CpuMeter` compares the machine's busy
time (from /proc/stat, steal included) with the time used by this process, its finished children and the
server processes it is measuring; the difference, per second of wall time, is `other_cores`: how many cores
something else kept busy. Figures taken while it is above ~0.25 are noisy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
NOISY_OTHER_CORES = 0.25


def _machine_busy_s() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICKS


def _process_tree_s(pid: int) -> float:
    """CPU seconds of a live process and its reaped children; 0 once it is gone."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ") state" split: utime, stime, cutime, cstime are fields 14-17 of the whole line.
    return sum(int(v) for v in parts[11:15]) / _TICKS


def _own_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass(slots=True)
class CpuMeter:
    """Call `start()` before and `stop()` after a measurement; `watched` are the server pids being measured."""

    watched: list[int] = field(default_factory=list)
    own_s: float = 0.0
    """After `stop()`: CPU seconds this process (the benchmark client) and its finished children used."""
    watched_s: float = 0.0
    """After `stop()`: CPU seconds the watched processes (the server) used."""
    _busy: float | None = None
    _own: float = 0.0
    _watched: float = 0.0
    _wall: float = 0.0

    def _watched_now(self) -> float:
        return sum(_process_tree_s(pid) for pid in self.watched)

    def start(self) -> None:
        self._busy = _machine_busy_s()
        self._own = _own_s()
        self._watched = self._watched_now()
        self._wall = time.perf_counter()

    def stop(self) -> float | None:
        """Cores' worth of CPU that others used since `start()`, or None where /proc is missing."""
        busy = _machine_busy_s()
        self.own_s = _own_s() - self._own
        self.watched_s = self._watched_now() - self._watched
        if busy is None or self._busy is None:
            return None
        wall = time.perf_counter() - self._wall
        others = (busy - self._busy) - self.own_s - self.watched_s
        return max(others, 0.0) / wall if wall > 0 else None


def wait_for_quiet(timeout_s: float, window_s: float = 1.0) -> float | None:
    """Wait until other programs use less than NOISY_OTHER_CORES over one window, at most `timeout_s`.

    Returns the last window's reading (None where /proc is missing).
    """
    deadline = time.monotonic() + timeout_s
    meter = CpuMeter()
    while True:
        meter.start()
        time.sleep(window_s)
        other = meter.stop()
        if other is None or other < NOISY_OTHER_CORES or time.monotonic() >= deadline:
            return other
