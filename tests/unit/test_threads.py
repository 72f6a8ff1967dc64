"""The workers' threads are reused from one load to the next (MLX keeps native state per thread)."""

from __future__ import annotations

import threading

import pytest

from heylook_llm.engine.threads import ThreadHost

pytestmark = pytest.mark.unit


def test_sequential_jobs_share_one_thread_and_take_its_name() -> None:
    host = ThreadHost()
    seen: list[tuple[int, str]] = []
    for i in range(5):
        done = host.run(lambda i=i: seen.append((threading.get_ident(), f"job-{i}")), f"job-{i}")
        assert done.wait(5)
    assert host.started == 1
    assert len({ident for ident, _ in seen}) == 1
    host.close()


def test_concurrent_jobs_get_their_own_threads_and_errors_do_not_kill_them() -> None:
    host = ThreadHost()
    release = threading.Event()
    names: list[str] = []

    def blocking() -> None:
        names.append(threading.current_thread().name)
        release.wait(5)

    def failing() -> None:
        raise RuntimeError("boom")

    first, second = host.run(blocking, "model-a"), host.run(blocking, "model-b")
    release.set()
    assert first.wait(5) and second.wait(5)
    assert sorted(names) == ["model-a", "model-b"] and host.started == 2
    assert host.run(failing, "model-c").wait(5)
    assert host.run(lambda: None, "model-d").wait(5)
    assert host.started == 2
    host.close()
