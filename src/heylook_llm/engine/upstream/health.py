"""Periodic health checks of every upstream replica: healthy ones every `health_check_seconds`, failed ones when
their backoff runs out; a replica that answers again is put back in rotation."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from heylook_llm.engine.upstream.client import UpstreamClient, WireName
from heylook_llm.engine.upstream.replicas import Replica

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
"""How often the checker looks for replicas that are due."""


@dataclass(slots=True)
class Watched:
    model_id: str
    wire: WireName
    replica: Replica
    every_seconds: float
    timeout_seconds: float


async def check_forever(client: UpstreamClient, watched: Callable[[], list[Watched]]) -> None:
    """Check each due replica (all of them at once, each at most once in flight) until cancelled."""
    running: dict[int, asyncio.Task[None]] = {}
    try:
        while True:
            now = time.monotonic()
            for item in watched():
                key = id(item.replica)
                if key in running or now < item.replica.next_check:
                    continue
                task = asyncio.get_running_loop().create_task(_check(client, item))
                running[key] = task
                task.add_done_callback(functools.partial(_forget, running, key))
            await asyncio.sleep(TICK_SECONDS)
    finally:
        for task in list(running.values()):
            task.cancel()


def _forget(running: dict[int, asyncio.Task[None]], key: int, _task: asyncio.Task[None]) -> None:
    running.pop(key, None)


async def _check(client: UpstreamClient, item: Watched) -> None:
    replica = item.replica
    problem = await client.check(item.wire, replica, item.timeout_seconds)
    now = time.monotonic()
    if problem is None:
        if not replica.healthy:
            log.info("upstream %s of model '%s' is healthy again", replica.name, item.model_id)
        replica.passed(now + item.every_seconds)
        return
    if replica.healthy:
        log.warning("upstream %s of model '%s' is down: %s", replica.name, item.model_id, problem)
    replica.check_failed(problem, now=now)
