"""The dashboard's event stream against a real server: one event a second, and it ends when the server is told to
stop, so an open page does not hold the shutdown for uvicorn's graceful timeout."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import start_server

pytestmark = pytest.mark.integration


def test_stream_ticks_every_second_and_ends_when_the_server_stops(demo_dir: Path, tmp_path: Path) -> None:
    server = start_server(tmp_path, demo_dir / "models.yaml")
    events: list[tuple[str, float]] = []
    ended = threading.Event()

    def read() -> None:
        with (
            httpx.Client(timeout=30) as http,
            http.stream("GET", f"{server.base_url}/v1/dashboard/stream") as response,
        ):
            name = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, orjson.loads(line.removeprefix("data: "))["time"]))
        ended.set()

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        deadline = time.monotonic() + 15
        while len(events) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [name for name, _ in events[:4]] == ["snapshot", "tick", "tick", "tick"]
        ticks = [at for _, at in events[1:4]]
        gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
        assert all(0.5 < gap < 1.5 for gap in gaps), gaps
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=15)
        assert time.monotonic() - started < 4.0
        assert ended.wait(5)
        assert "graceful shutdown exceeded" not in server.log()
    finally:
        server.stop()
