"""Give freed native memory back to the operating system after a model is unloaded."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)


def release_free_heap() -> None:
    """Ask glibc to return free heap pages to the system (a no-op elsewhere).

    After the first large free, glibc raises its mmap threshold, so the next model's weights come from the heap
    and stay resident after they are freed unless the heap is trimmed.
    """
    if not sys.platform.startswith("linux"):
        return
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
