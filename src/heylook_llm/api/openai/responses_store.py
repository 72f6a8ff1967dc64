"""Stored responses of the Responses API: a bounded SQLite file, used off the event loop.

Each row keeps the response as it was sent and the whole conversation it ends (every input item of the chain,
then its output items), so that `previous_response_id` needs one read, not a walk up the chain. The file is
opened on first use (a server nobody asks to store anything writes nothing); one thread owns the connection,
so SQLite is never touched from two threads and the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from heylook_llm.config.settings import ResponseStoreSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    response TEXT NOT NULL,
    conversation TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created_at ON responses (created_at);
"""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]
    conversation: list[dict[str, Any]]
    """Input items of the whole chain, then this response's output items (wire JSON)."""


class ResponseStore:
    def __init__(self, settings: ResponseStoreSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="response-store")
        self._db: sqlite3.Connection | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connection()))

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            path = self.settings.file()
            path.parent.mkdir(parents=True, exist_ok=True)
            # One thread uses it (the executor's), but not the one that created the store.
            db = sqlite3.connect(path, timeout=10.0, check_same_thread=False, isolation_level=None)
            db.executescript(_SCHEMA)
            self._db = db
            log.info("stored responses in %s", path)
        return self._db

    def _evict(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM responses WHERE created_at < ?", (self._clock() - self.settings.max_age_seconds,))
        db.execute(
            "DELETE FROM responses WHERE id NOT IN (SELECT id FROM responses ORDER BY created_at DESC, rowid DESC "
            "LIMIT ?)",
            (self.settings.max_responses,),
        )

    async def put(self, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        row = (response["id"], self._clock(), json.dumps(response), json.dumps(conversation))

        def work(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)", row)
                self._evict(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(work)

    async def get(self, response_id: str) -> StoredResponse | None:
        oldest = self._clock() - self.settings.max_age_seconds

        def work(db: sqlite3.Connection) -> tuple[str, str] | None:
            found = db.execute(
                "SELECT response, conversation FROM responses WHERE id = ? AND created_at >= ?", (response_id, oldest)
            ).fetchone()
            return None if found is None else (found[0], found[1])

        row = await self._run(work)
        if row is None:
            return None
        return StoredResponse(json.loads(row[0]), json.loads(row[1]))

    async def delete(self, response_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

        return await self._run(work)

    async def count(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            value: int = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            return value

        return await self._run(work)

    def close(self) -> None:
        def work() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._executor.submit(work).result()
        self._executor.shutdown(wait=True)
