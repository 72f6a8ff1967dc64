"""The replicas of one upstream model: their health and load, and the choice of one for each request.

A request goes to the least busy healthy replica (fewest requests in flight, then the lowest recent time to first
token). A conversation goes back to the replica that served its prefix while that replica is healthy and not
clearly busier than the others, so the upstream's prefix cache is reused. A replica that fails is taken out and
checked again after a backoff that doubles up to a minute (health.py).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from heylook_llm.config.registry import UpstreamConfig
from heylook_llm.types import GenerationRequest

AFFINITY_ENTRIES = 4096
"""Conversations remembered per model (least recently used forgotten first)."""
AFFINITY_PREFIX_CHARS = 2048
"""How much of the prompt names a conversation: its system prompt and first turns."""
AFFINITY_SLACK = 1
"""A remembered replica keeps a conversation while it has at most this many more requests in flight than the
least busy one; past that, spreading the load is worth more than the cached prefix."""
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
BACKOFF_CHECKS = 8
"""A replica that is down is checked at least every 8 health-check periods (or every minute, if sooner)."""
LATENCY_WEIGHT = 0.2
"""Weight of the newest time to first token in the running average."""


@dataclass(slots=True)
class Replica:
    """One upstream server of a model, with what this server has seen of it."""

    index: int
    base_url: str
    model: str
    api_key: str | None
    healthy: bool = True
    in_flight: int = 0
    latency_seconds: float | None = None
    """Running average of its time to first token."""
    requests: int = 0
    errors: int = 0
    latency_sum_seconds: float = 0.0
    latency_count: int = 0
    failures: int = 0
    """Failures in a row: the backoff grows with them."""
    next_check: float = 0.0
    """time.monotonic() of the next health check."""
    last_error: str | None = None
    down_since: float | None = field(default=None)
    check_every_seconds: float = 10.0
    """The health-check period: the backoff starts at the lower of it and a second, and ends at 8 periods."""

    @property
    def name(self) -> str:
        return f"replica {self.index + 1}"

    def started(self) -> None:
        self.in_flight += 1
        self.requests += 1

    def ended(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    def first_output(self, seconds: float) -> None:
        self.latency_sum_seconds += seconds
        self.latency_count += 1
        old = self.latency_seconds
        self.latency_seconds = seconds if old is None else old + LATENCY_WEIGHT * (seconds - old)

    def failed(self, reason: str, *, now: float | None = None) -> None:
        """A request failed on it (connection, timeout, 5xx): out of rotation until a health check passes."""
        self.errors += 1
        self.check_failed(reason, now=now)

    def check_failed(self, reason: str, *, now: float | None = None) -> None:
        """Out of rotation; checked again after a backoff that doubles with each failure in a row."""
        now = time.monotonic() if now is None else now
        self.failures += 1
        self.last_error = reason
        if self.healthy:
            self.down_since = now
        self.healthy = False
        first = min(FIRST_BACKOFF_SECONDS, self.check_every_seconds)
        longest = min(MAX_BACKOFF_SECONDS, BACKOFF_CHECKS * self.check_every_seconds)
        self.next_check = now + min(longest, first * 2 ** (self.failures - 1))

    def passed(self, next_check: float) -> None:
        """A health check passed: back in rotation, next checked at `next_check` (time.monotonic())."""
        self.healthy = True
        self.failures = 0
        self.down_since = None
        self.last_error = None
        self.next_check = next_check


def _key(config: UpstreamConfig, key: str | None, key_env: str | None) -> str | None:
    if key is not None:
        return key
    if key_env is not None:
        return os.environ.get(key_env)
    return (
        config.api_key
        if config.api_key is not None
        else (os.environ.get(config.api_key_env) if config.api_key_env is not None else None)
    )


def replicas_of(config: UpstreamConfig) -> list[Replica]:
    """The first replica from the entry's own fields, then one per `replicas` item (its fields override)."""
    found = [Replica(0, config.base_url, config.model, _key(config, None, None))]
    for i, extra in enumerate(config.replicas, start=1):
        found.append(
            Replica(i, extra.base_url, extra.model or config.model, _key(config, extra.api_key, extra.api_key_env))
        )
    for replica in found:
        replica.check_every_seconds = config.health_check_seconds
    return found


def affinity_key(request: GenerationRequest) -> str:
    """A hash of the start of the prompt: the same conversation (system prompt and first turns) gives the same key
    on every turn."""
    if request.messages is not None:
        text = "\x00".join(f"{m.role}\x01{m.content}" for m in request.messages)
    else:
        text = request.prompt or ""
    return hashlib.blake2b(text[:AFFINITY_PREFIX_CHARS].encode(), digest_size=16).hexdigest()


class ReplicaPool:
    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self._affinity: OrderedDict[str, int] = OrderedDict()

    def healthy(self) -> list[Replica]:
        return [r for r in self.replicas if r.healthy]

    def pick(self, key: str | None, exclude: frozenset[int] = frozenset()) -> Replica | None:
        """The replica for the next request (None when no healthy one is left outside `exclude`)."""
        candidates = [r for r in self.replicas if r.healthy and r.index not in exclude]
        if not candidates:
            return None
        best = min(candidates, key=lambda r: (r.in_flight, r.latency_seconds or 0.0, r.index))
        if key is not None:
            remembered = self._affinity.get(key)
            if remembered is not None:
                sticky = next((r for r in candidates if r.index == remembered), None)
                if sticky is not None and sticky.in_flight <= best.in_flight + AFFINITY_SLACK:
                    best = sticky
            self._affinity[key] = best.index
            self._affinity.move_to_end(key)
            while len(self._affinity) > AFFINITY_ENTRIES:
                self._affinity.popitem(last=False)
        return best

    def soonest_check(self) -> float | None:
        """Seconds until a replica that is down is checked again (None when none is down)."""
        down = [r.next_check for r in self.replicas if not r.healthy]
        return max(0.0, min(down) - time.monotonic()) if down else None
