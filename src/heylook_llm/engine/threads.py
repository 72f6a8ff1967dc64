"""Long-lived threads for the model workers.

Each loaded model is owned by one thread. Starting a new thread for every load leaks native memory: MLX (0.32) gives
each thread that uses it its own stream, served by a native thread that lives until the process ends, so every
MLX load on a fresh thread left two native threads and their memory behind (RSS grew about 150 KB per GGUF<->MLX
swap). A worker borrows a thread here instead and gives it back when it stops; the next load reuses it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_Job = tuple[Callable[[], None], str, threading.Event]


class ThreadHost:
    """Runs one long job (a model worker's loop) at a time on each of its threads, reusing idle ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Job | None]] = []
        self._closed = False
        self.started = 0
        """Threads started so far (a steady count shows that loads reuse them)."""

    def run(self, job: Callable[[], None], name: str) -> threading.Event:
        """Run `job` on an idle thread (a new one if none is idle); the returned event is set once it returned and
        its thread is free again."""
        done = threading.Event()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                inbox = queue.SimpleQueue()
                self.started += 1
                thread = threading.Thread(target=self._serve, args=(inbox,), name=name, daemon=True)
                thread.start()
        inbox.put((job, name, done))
        return done

    def close(self) -> None:
        """End the idle threads (busy ones end when their job returns)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)

    def _serve(self, inbox: queue.SimpleQueue[_Job | None]) -> None:
        me = threading.current_thread()
        while (item := inbox.get()) is not None:
            job, name, done = item
            me.name = name
            try:
                job()
            except BaseException:
                log.exception("%s ended with an error", name)
            me.name = "model-idle"
            with self._lock:
                closed = self._closed
                if not closed:
                    self._idle.append(inbox)
            done.set()
            if closed:
                return
