"""Per-host slots (scrapy's ``Slot``): concurrency and a minimum delay between request starts,
plus retry timing as pure functions (exponential backoff with jitter, ``Retry-After``)."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 522, 524})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def retry_delay(attempt: int, retry_after: float | None = None, base: float = 0.5, cap: float = 30.0,
                rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (0-based): Retry-After when given, else
    ``base * 2**attempt`` with full jitter in [0.5x, 1.5x), capped at ``cap``."""
    if retry_after is not None:
        return max(0.0, retry_after)
    r = (rng or random).random()
    return min(cap, base * (2**attempt) * (0.5 + r))


@dataclass
class _Slot:
    sem: asyncio.Semaphore
    next_start: float = 0.0  # monotonic time before which no request may start
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class HostSlots:
    """At most ``concurrency`` requests in flight per host, starts spaced by ``delay`` seconds."""

    def __init__(self, concurrency: int = 2, delay: float = 0.0) -> None:
        self.concurrency, self.delay = concurrency, delay
        self._slots: dict[str, _Slot] = {}

    def _slot(self, host: str) -> _Slot:
        s = self._slots.get(host)
        if s is None:
            s = self._slots[host] = _Slot(asyncio.Semaphore(self.concurrency))
        return s

    @asynccontextmanager
    async def acquire(self, host: str, delay: float | None = None) -> AsyncIterator[None]:
        """Hold a slot of ``host``; ``delay`` (e.g. robots Crawl-delay) raises the spacing."""
        s = self._slot(host)
        spacing = max(self.delay, delay or 0.0)
        async with s.sem:
            async with s.lock:  # serialise start times so spacing holds across concurrent waiters
                wait = s.next_start - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                s.next_start = max(s.next_start, time.monotonic()) + spacing
            yield

    def backoff(self, host: str, seconds: float) -> None:
        """Push the host's next start ``seconds`` into the future (429/503 Retry-After)."""
        s = self._slot(host)
        s.next_start = max(s.next_start, time.monotonic() + seconds)

    def __len__(self) -> int:
        return len(self._slots)
