"""Per-host slots (scrapy's ``Slot``): concurrency and a minimum delay between request starts,
host pauses on 429/503, plus retry timing as pure functions (exponential backoff with jitter,
``Retry-After``).

A host that answers ``429`` (or ``503`` with ``Retry-After``) is paused for every later request
of the run, whether or not the failed request is retried: no request to it starts before
``Retry-After`` seconds (capped by ``max_pause``) have passed. Repeated 429s without a long enough
Retry-After back off exponentially (``base * 2**(n-1)`` for the n-th 429 in a row); a response
under 400 resets the streak.
"""

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


PAUSE_STATUSES = frozenset({429, 503})


class HostPaused(Exception):
    """A request would wait longer than it may for a host paused after 429/503 (``acquire(max_wait=)``)."""


@dataclass
class _Slot:
    sem: asyncio.Semaphore
    next_start: float = 0.0  # monotonic time before which no request may start
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    streak_429: int = 0  # 429s in a row
    paused_until: float = 0.0  # monotonic end of the host's 429/503 pause
    pause_status: int | None = None  # the status that paused it last
    min_spacing: float = 0.0  # the host's Crawl-delay, once known: holds for every request to it


class HostSlots:
    """At most ``concurrency`` requests in flight per host, starts spaced by ``delay`` seconds."""

    def __init__(self, concurrency: int = 2, delay: float = 0.0, max_pause: float = 120.0,
                 backoff_base: float = 1.0) -> None:
        self.concurrency, self.delay = concurrency, delay
        self.max_pause, self.backoff_base = max_pause, backoff_base
        self._slots: dict[str, _Slot] = {}
        self.pauses = 0  # host pauses started (429/503)
        self.paused_seconds = 0.0  # their total length

    def _slot(self, host: str) -> _Slot:
        s = self._slots.get(host)
        if s is None:
            s = self._slots[host] = _Slot(asyncio.Semaphore(self.concurrency))
        return s

    def _check_pause(self, host: str, s: _Slot, max_wait: float | None) -> None:
        left = s.paused_until - time.monotonic()
        if max_wait is not None and left > max_wait:
            raise HostPaused(f"host paused after HTTP {s.pause_status} from {host}: {left:.0f}s left, longer "
                             f"than the {max_wait:g}s timeout (not requested)")

    @asynccontextmanager
    async def acquire(self, host: str, delay: float | None = None, max_wait: float | None = None
                      ) -> AsyncIterator[None]:
        """Hold a slot of ``host``; ``delay`` (e.g. robots Crawl-delay) raises the spacing. ``max_wait``:
        raise :class:`HostPaused` instead of waiting longer than this for a 429/503 pause of the host (an
        image download fails fast rather than holding its lane for minutes; the spacing itself always waits)."""
        s = self._slot(host)
        spacing = max(self.delay, delay or 0.0, s.min_spacing)
        self._check_pause(host, s, max_wait)
        async with s.sem:
            async with s.lock:  # serialise start times so spacing holds across concurrent waiters
                while (wait := s.next_start - time.monotonic()) > 0:  # a pause may move next_start while we sleep
                    self._check_pause(host, s, max_wait)
                    await asyncio.sleep(wait)
                s.next_start = max(s.next_start, time.monotonic()) + spacing
            yield

    def set_spacing(self, host: str, delay: float) -> None:
        """The host's own minimum spacing (robots Crawl-delay), for requests that carry none (tdmrep.json)."""
        s = self._slot(host)
        s.min_spacing = max(s.min_spacing, delay)

    def backoff(self, host: str, seconds: float) -> None:
        """Push the host's next start ``seconds`` into the future (429/503 Retry-After)."""
        s = self._slot(host)
        s.next_start = max(s.next_start, time.monotonic() + seconds)

    def pause(self, host: str, status: int | None, retry_after: float | None) -> float:
        """Pause ``host`` after a response of ``status``; returns the pause in seconds (0: none).

        429: ``max(Retry-After, base * 2**(n-1))`` for the n-th 429 in a row; 503: Retry-After only;
        both capped at ``max_pause``. Any other status under 400 resets the 429 streak.
        """
        s = self._slot(host)
        if status not in PAUSE_STATUSES:
            if status is not None and status < 400:
                s.streak_429 = 0
            return 0.0
        seconds = retry_after or 0.0
        if status == 429:
            s.streak_429 += 1
            seconds = max(seconds, self.backoff_base * 2 ** (s.streak_429 - 1))
        seconds = min(seconds, self.max_pause)
        if seconds > 0:
            before = s.next_start
            self.backoff(host, seconds)
            s.paused_until = max(s.paused_until, time.monotonic() + seconds)
            s.pause_status = status
            if s.next_start > before:
                self.pauses += 1
                self.paused_seconds += seconds
        return seconds

    def __len__(self) -> int:
        return len(self._slots)
