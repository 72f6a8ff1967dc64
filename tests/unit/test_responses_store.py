"""The bounded store of Responses API responses: SQLite in a file, oldest out first, expired by age."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from heylook_llm.api.openai.responses_store import ResponseStore
from heylook_llm.cli import build_parser, response_store_settings
from heylook_llm.config.settings import ResponseStoreSettings

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _response(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "object": "response", "output": []}


def _store(tmp_path: Path, clock: Clock, **settings: Any) -> ResponseStore:
    return ResponseStore(ResponseStoreSettings(path=tmp_path / "sub" / "r.sqlite3", **settings), clock=clock)


def test_nothing_is_written_until_a_response_is_stored(tmp_path: Path) -> None:
    store = _store(tmp_path, Clock())
    store.close()
    assert not (tmp_path / "sub").exists()


def test_put_get_delete_round_trip(tmp_path: Path) -> None:
    async def run() -> None:
        store = _store(tmp_path, Clock())
        conversation = [{"type": "message", "role": "user", "content": "hi"}]
        await store.put(_response("resp_1"), conversation)
        found = await store.get("resp_1")
        assert found is not None and found.response == _response("resp_1") and found.conversation == conversation
        assert await store.get("resp_2") is None
        assert await store.delete("resp_1") is True
        assert await store.delete("resp_1") is False
        assert await store.get("resp_1") is None
        store.close()

    asyncio.run(run())


def test_the_oldest_go_first_past_the_count(tmp_path: Path) -> None:
    async def run() -> None:
        clock = Clock()
        store = _store(tmp_path, clock, max_responses=2)
        for number in range(4):
            clock.now += 1
            await store.put(_response(f"resp_{number}"), [])
        assert await store.count() == 2
        assert [await store.get(f"resp_{n}") is not None for n in range(4)] == [False, False, True, True]
        store.close()

    asyncio.run(run())


def test_responses_expire_by_age(tmp_path: Path) -> None:
    async def run() -> None:
        clock = Clock()
        store = _store(tmp_path, clock, max_age_seconds=60)
        await store.put(_response("resp_old"), [])
        clock.now += 61
        # Past its age it is not found, even before anything evicts it ...
        assert await store.get("resp_old") is None
        # ... and the next write removes it from the file.
        await store.put(_response("resp_new"), [])
        assert await store.count() == 1
        store.close()

    asyncio.run(run())


def test_the_file_survives_a_restart(tmp_path: Path) -> None:
    async def write() -> None:
        store = _store(tmp_path, Clock())
        await store.put(_response("resp_1"), [{"type": "message", "role": "user", "content": "x"}])
        store.close()

    async def read() -> None:
        store = _store(tmp_path, Clock())
        found = await store.get("resp_1")
        assert found is not None and found.conversation[0]["content"] == "x"
        store.close()

    asyncio.run(write())
    asyncio.run(read())


def test_server_flags_make_the_store_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--response-store",
            str(tmp_path / "r.db"),
            "--response-store-max",
            "5",
            "--response-store-max-age",
            "2h",
        ]
    )
    assert response_store_settings(args) == ResponseStoreSettings(
        enabled=True, path=tmp_path / "r.db", max_responses=5, max_age_seconds=7200.0
    )
    off = response_store_settings(build_parser().parse_args(["serve", "--no-response-store"]))
    assert off.enabled is False and off.max_responses == 1000 and off.file().name == "responses.sqlite3"
    for bad in (["--response-store-max", "0"], ["--response-store-max-age", "0s"], ["--response-store-max-age", "x"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", *bad])
