"""robots.txt (RFC 9309, parsed by protego) and robots directives (X-Robots-Tag, meta robots).

:class:`RobotsCache` fetches ``/robots.txt`` once per origin (concurrent callers share one
fetch), applies our user-agent token and exposes Crawl-delay. Per RFC 9309: a 4xx means no
restrictions, a 5xx or network failure means complete disallow (until the entry expires), with the
reason ``"robots.txt unreachable: <cause>"`` (``HTTP 503``, ``DNS NXDOMAIN for host x``, ``timeout after
10s (first byte)``, ``breaker open: ...``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from yarl import URL

from clipcrawl.crawler.netguard import BlockedAddressError, blocked_message
from clipcrawl.crawler.origins import OriginCache

#: robots.txt files larger than this are truncated before parsing (RFC 9309 asks for >= 500 KiB).
MAX_ROBOTS_BYTES = 512 * 1024


def user_agent_token(user_agent: str) -> str:
    """``"clipcrawl/0.1 (+https://...)"`` -> ``"clipcrawl"`` (the token robots rules match)."""
    return user_agent.split("/", 1)[0].split(" ", 1)[0].strip().lower() or user_agent.lower()


#: directives that take a value after a colon (so ``name: value`` is not a user-agent group)
VALUE_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
#: what ``none`` stands for
NONE_MEANS = ("noindex", "nofollow")
_UA_GROUP = re.compile(r"^\s*([A-Za-z0-9_.*-]+)\s*:\s*(.*)$", re.S)
_WEEKDAY = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)[a-z]*$", re.I)


def _parse_date(value: str) -> float | None:
    """An ``unavailable_after`` date (RFC 822/850/1123, ISO 8601) as a unix time, or None."""
    import email.utils
    from datetime import datetime, timezone

    v = value.strip()
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        when = None
    if when is None:
        try:
            when = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            for fmt in ("%d %b %Y %H:%M:%S %Z", "%d-%b-%y %H:%M:%S %Z", "%d %b %Y", "%Y-%m-%d"):
                try:
                    when = datetime.strptime(v, fmt)
                    break
                except ValueError:
                    continue
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def robots_directives(values: Iterable[str], ua_token: str, now: float | None = None) -> list[tuple[str, str]]:
    """The robots directives of X-Robots-Tag header values (or meta robots contents) that apply to us.

    Per Google's and Bing's X-Robots-Tag spec: each header line (several lines may also arrive
    comma-combined in one value, as HTTP combines them) is a list of comma-separated directives; an
    element ``token: directive`` starts a user-agent group and the directives after it, up to the next
    ``token:``, apply only to that user agent. Directives outside a group apply to every agent; groups
    for ``ua_token`` (the token the run sends, case-insensitive) apply to us, others are skipped.
    ``none`` also yields ``noindex`` and ``nofollow``; ``unavailable_after: DATE`` in the past yields
    ``noindex`` (the date is kept in the reason). Returns ``(directive, reason)`` pairs, lowercased.
    """
    now = time.time() if now is None else now
    ua = ua_token.strip().lower()
    out: list[tuple[str, str]] = []
    for value in values:
        group: str | None = None  # None: applies to every agent
        parts = [p.strip() for p in str(value).split(",")]
        i = 0
        while i < len(parts):
            piece = parts[i]
            i += 1
            m = _UA_GROUP.match(piece)
            if m and m.group(1).lower() not in VALUE_DIRECTIVES:
                group, piece = m.group(1).lower(), m.group(2).strip()
                m = _UA_GROUP.match(piece)
            if not piece or (group is not None and group not in (ua, "*")):
                continue
            name, _, arg = piece.partition(":")
            name = name.strip().lower()
            arg = arg.strip()
            if name == "unavailable_after":
                if _WEEKDAY.match(arg) and i < len(parts):  # "Friday, 25-Jun-10 15:00:00 PST" was split
                    arg = f"{arg}, {parts[i]}"
                    i += 1
                when = _parse_date(arg)
                if when is not None and when <= now:
                    out.append(("unavailable_after", f"unavailable_after: {arg}"))
                    out.append(("noindex", f"unavailable_after: {arg}"))
                continue
            if name in VALUE_DIRECTIVES:
                continue
            out.append((name, name))
            if name == "none":
                out.extend((d, "none") for d in NONE_MEANS)
    return out


def robots_tag_disallows(values: Iterable[str], ua_token: str, directives: Iterable[str],
                         now: float | None = None) -> str | None:
    """Check X-Robots-Tag header values (or meta robots contents) against ``directives``.

    Parsed by :func:`robots_directives`. Returns the first directive that applies to ``ua_token``
    and is in ``directives`` (named by what the page said: ``none``, ``unavailable_after: DATE``), or None.
    """
    wanted = {d.strip().lower() for d in directives}
    for name, reason in robots_directives(values, ua_token, now):
        if name in wanted:
            return reason
    return None


@dataclass(frozen=True)
class RobotsVerdict:
    allowed: bool
    crawl_delay: float = 0.0
    reason: str | None = None
    blocked: bool = False  # the host itself is refused by the address guard


@dataclass
class _Entry:
    parser: object | None  # protego.Protego, or None for "allow all"
    disallow_all: bool
    reason: str | None
    expires: float
    blocked: bool = False


#: fetch(url) -> (http status, body bytes); a failed request raises (:class:`FetchFailed` with its cause)
#: or returns (None, b"")
RobotsFetch = Callable[[str], Awaitable[tuple[int | None, bytes]]]


class FetchFailed(Exception):
    """A robots.txt / tdmrep.json request failed; ``str(e)`` is the cause ("DNS NXDOMAIN for host x")."""


class RobotsCache:
    """Per-origin robots.txt verdicts for one user agent."""

    def __init__(self, fetch: RobotsFetch, user_agent: str, ttl: float = 24 * 3600, error_ttl: float = 600) -> None:
        self._fetch = fetch
        self.token = user_agent_token(user_agent)
        self.ttl, self.error_ttl = ttl, error_ttl
        self._cache: OriginCache[_Entry] = OriginCache(self._load)
        self.fetches = 0  # robots.txt requests made (tests assert "once per host")

    @staticmethod
    def origin(url: str | URL) -> str:
        u = url if isinstance(url, URL) else URL(url)
        return str(u.origin())

    async def check(self, url: str) -> RobotsVerdict:
        entry = await self._entry(self.origin(url))
        if entry.disallow_all:
            return RobotsVerdict(False, 0.0, entry.reason, entry.blocked)
        if entry.parser is None:
            return RobotsVerdict(True)
        p = entry.parser
        allowed = p.can_fetch(url, self.token)  # type: ignore[attr-defined]
        delay = p.crawl_delay(self.token) or 0.0  # type: ignore[attr-defined]
        rate = p.request_rate(self.token)  # type: ignore[attr-defined]
        if rate is not None and rate.requests:
            delay = max(delay, rate.seconds / rate.requests)
        return RobotsVerdict(bool(allowed), float(delay), None if allowed else "disallowed by robots.txt")

    async def _entry(self, origin: str) -> _Entry:
        return await self._cache.get(origin)

    async def _load(self, origin: str) -> _Entry:
        from protego import Protego

        self.fetches += 1
        now = time.monotonic()
        try:
            status, body = await self._fetch(origin + "/robots.txt")
        except BlockedAddressError as e:
            return _Entry(None, True, blocked_message(e), now + self.error_ttl, blocked=True)
        except FetchFailed as e:
            status, body, err = None, b"", str(e)
        except Exception as e:  # noqa: BLE001 - any failure means "unreachable"
            status, body, err = None, b"", f"{type(e).__name__}: {e}"
        else:
            err = None
        if status is None:
            return _Entry(None, True, f"robots.txt unreachable: {err or 'network error'}", now + self.error_ttl)
        if status >= 500:
            return _Entry(None, True, f"robots.txt unreachable: HTTP {status}", now + self.error_ttl)
        if status >= 400 or not body.strip():
            return _Entry(None, False, None, now + self.ttl)
        text = body[:MAX_ROBOTS_BYTES].decode("utf-8", "replace")
        return _Entry(Protego.parse(text), False, None, now + self.ttl)
