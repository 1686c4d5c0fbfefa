"""Per-host circuit breaker: a host that keeps failing at the network level is not asked again for a while.

After ``threshold`` consecutive host failures (DNS SERVFAIL and timeouts, connect errors, TLS handshake
errors, timeouts; HTTP answers such as 404 are not failures, nor, by default, 429/503, which pause the host
instead: :mod:`clipcrawl.crawler.politeness`; nor NXDOMAIN, a cached answer that fails fast by itself), or
after ``timeout_threshold`` of them that were request timeouts (connect, first byte, body stalled, total: each
held one of the host's slots for a whole timeout, so a dead or trickling host's later URLs would otherwise wait
out one timeout per pair of slots), the breaker of the host opens: its requests fail at once
with ``"breaker open: <host>: <last cause>"``, no request made. After ``cooldown`` seconds it half-opens:
one trial request goes out (the others still fail fast); success closes the breaker, failure re-opens it
for another ``cooldown``. Any answer from the host closes it and resets the count.

:class:`ErrorRateWatch` warns once when a run's failure rate jumps (the whole network, not one host).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("clipcrawl.breaker")


@dataclass
class _State:
    label: str
    failures: int = 0  # consecutive
    timeouts: int = 0  # of those, request timeouts
    cause: str = ""
    opened_at: float | None = None  # None: closed
    trial: bool = False  # the half-open trial is in flight


class HostBreaker:
    """``trial, reason = b.admit(host)``; then ``b.success(host)``, ``b.failure(host, cause, trial)`` or
    ``b.release(host, trial)``."""

    def __init__(self, threshold: int = 5, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, timeout_threshold: int = 2) -> None:
        self.threshold, self.cooldown, self.clock = threshold, cooldown, clock
        self.timeout_threshold = timeout_threshold  # 0: timeouts count like other failures only
        self._states: dict[str, _State] = {}  # only hosts with failures: success forgets the host
        self.opened = 0  # times a breaker opened (re-opens after a failed trial included)
        self.fast_failures = 0  # requests refused while open

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def admit(self, host: str) -> tuple[bool, str | None]:
        """``(is_trial, None)``: go ahead; ``(False, reason)``: fail fast with ``reason``."""
        s = self._states.get(host)
        if s is None or s.opened_at is None:
            return False, None
        if not s.trial and self.clock() - s.opened_at >= self.cooldown:
            s.trial = True  # half-open: this caller is the one trial
            return True, None
        self.fast_failures += 1
        return False, f"breaker open: {s.label}: {s.cause}"

    def success(self, host: str) -> None:
        s = self._states.pop(host, None)
        if s is not None and s.opened_at is not None:
            log.info("breaker closed: %s answers again", s.label)

    def failure(self, host: str, cause: str, trial: bool = False, label: str | None = None,
                timeout: bool = False) -> None:
        """A host failure; ``timeout``: a request timeout (counts against ``timeout_threshold`` too)."""
        if not self.enabled:
            return
        s = self._states.get(host)
        if s is None:
            s = self._states[host] = _State(label or host)
        s.failures += 1
        s.timeouts += timeout
        s.cause = cause
        reached = s.failures >= self.threshold or 0 < self.timeout_threshold <= s.timeouts
        if trial or (s.opened_at is None and reached):
            if s.opened_at is None:
                log.info("breaker open: %s after %d failures in a row (%s)", s.label, s.failures, cause)
            s.opened_at, s.trial = self.clock(), False
            self.opened += 1

    def release(self, host: str, trial: bool) -> None:
        """The request neither reached the host nor failed at it (refused by the guard, cancelled): a trial
        it held goes to the next request."""
        s = self._states.get(host)
        if trial and s is not None:
            s.trial = False

    def state(self, host: str) -> str:
        s = self._states.get(host)
        if s is None or s.opened_at is None:
            return "closed"
        return "half-open" if s.trial or self.clock() - s.opened_at >= self.cooldown else "open"

    def __len__(self) -> int:
        return sum(1 for s in self._states.values() if s.opened_at is not None)


class ErrorRateWatch:
    """Logs one warning when the failure rate of the last ``window`` results jumps above ``high`` while the
    results before them failed below ``low`` (a DNS server or the network went away mid-run, not a bad list)."""

    def __init__(self, window: int = 500, high: float = 0.5, low: float = 0.2, what: str = "download") -> None:
        self.window, self.high, self.low, self.what = window, high, low, what
        self._recent: deque[bool] = deque(maxlen=window)
        self._recent_failed = 0
        self.total = self.failed = 0
        self.last_cause: str | None = None
        self.warned: str | None = None  # the warning, once given

    def add(self, failed: bool, cause: str | None = None) -> None:
        if len(self._recent) == self.window:
            self._recent_failed -= self._recent[0]
        self._recent.append(failed)
        self._recent_failed += failed
        self.total += 1
        self.failed += failed
        if failed and cause:
            self.last_cause = cause
        earlier = self.total - self.window
        if self.warned or earlier < self.window:
            return
        rate, before = self._recent_failed / self.window, (self.failed - self._recent_failed) / earlier
        if rate > self.high and before < self.low:
            self.warned = (f"{self.what}: {rate:.0%} of the last {self.window} results failed (was {before:.0%} "
                           f"before); last cause: {self.last_cause} -- DNS or network trouble?")
            log.warning("%s", self.warned)
