"""TDMRep, the W3C TDM Reservation Protocol (Final Community Group Report, 2024).

A rightsholder reserves text-and-data-mining rights (EU DSM directive art. 4) in three ways, all read here:

* the HTTP response header ``tdm-reservation: 1`` (optionally ``tdm-policy: <url>``) on a page or an image;
* ``<meta name="tdm-reservation" content="1">`` in an HTML page (read by the crawler's extractor);
* the origin's ``/.well-known/tdmrep.json``: a JSON array of rules
  ``{"location": "/images/*", "tdm-reservation": 1, "tdm-policy": "https://..."}``. ``location`` is a path
  pattern with robots.txt syntax (RFC 9309: matched from the start of the path+query, ``*`` any run of
  characters, a trailing ``$`` anchors the end). The first rule in the array that matches applies.

:class:`TdmRepCache` fetches the file once per origin (concurrent callers share one fetch) and keeps it
like robots.txt; a missing file (4xx) or an unreadable one means no reservation from it (a 5xx or network
failure is retried after ``error_ttl``; the verdicts carry its cause in ``unreachable``). A resource reserved by the file is never requested; one reserved
by a header is refused before its body is read. Any technique saying ``1`` reserves the resource
(the safe reading when techniques disagree).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from yarl import URL

from clipcrawl.crawler.netguard import BlockedAddressError
from clipcrawl.crawler.origins import OriginCache

WELL_KNOWN_PATH = "/.well-known/tdmrep.json"
MAX_TDMREP_BYTES = 512 * 1024


def _reserved_value(value: object) -> bool:
    return str(value).strip() in ("1", "true", "True")


def header_reservation(headers: Mapping[str, str] | None) -> str | None:
    """The reason a response is TDM-reserved by its headers (``tdm-reservation: 1``), or None."""
    if not headers:
        return None
    values = [v for k, v in headers.items() if k.lower() == "tdm-reservation"]
    if not values or not any(_reserved_value(x) for v in values for x in str(v).split(",")):
        return None
    policy = next((v for k, v in headers.items() if k.lower() == "tdm-policy"), None)
    return "TDM rights reserved (tdm-reservation: 1 header" + (f", policy {policy.strip()}" if policy else "") + ")"


def compile_location(pattern: str) -> re.Pattern[str]:
    """A tdmrep.json ``location`` (robots.txt path syntax) as a regex matched at the path's start."""
    p = pattern.strip() or "/"
    if not p.startswith("/") and not p.startswith("*"):
        p = "/" + p
    anchored = p.endswith("$")
    body = p[:-1] if anchored else p
    rx = "".join(".*" if c == "*" else re.escape(c) for c in body)
    return re.compile(rx + ("$" if anchored else ""), re.S)


@dataclass(frozen=True)
class TdmRule:
    location: str
    pattern: re.Pattern[str]
    reserved: bool
    policy: str | None = None


def parse_tdmrep_json(body: bytes | str) -> list[TdmRule]:
    """The rules of a tdmrep.json body; malformed entries are skipped, a malformed file gives no rules."""
    try:
        data = json.loads(body[:MAX_TDMREP_BYTES] if isinstance(body, bytes) else body)
    except (ValueError, UnicodeDecodeError):
        return []
    if isinstance(data, dict):  # tolerate a single rule object
        data = [data]
    if not isinstance(data, list):
        return []
    rules = []
    for item in data:
        if not isinstance(item, dict) or "location" not in item or "tdm-reservation" not in item:
            continue
        loc = str(item["location"])
        policy = item.get("tdm-policy")
        rules.append(TdmRule(loc, compile_location(loc), _reserved_value(item["tdm-reservation"]),
                             str(policy) if policy else None))
    return rules


def match_rules(rules: list[TdmRule], url: str | URL) -> TdmRule | None:
    """The first rule whose location matches ``url``'s path (+ query), or None."""
    u = url if isinstance(url, URL) else URL(url)
    path = u.raw_path_qs or "/"
    for r in rules:
        if r.pattern.match(path):
            return r
    return None


@dataclass(frozen=True)
class TdmVerdict:
    reserved: bool
    reason: str | None = None
    unreachable: str | None = None  # "tdmrep.json unreachable: <cause>" when the file could not be fetched


@dataclass
class _Entry:
    rules: list[TdmRule]
    expires: float
    error: str | None = None  # why the file could not be fetched


#: fetch(url) -> (http status, body bytes); a failed request raises (``str(e)``: its cause) or returns (None, b"")
TdmFetch = Callable[[str], Awaitable[tuple[int | None, bytes]]]


class TdmRepCache:
    """Per-origin ``/.well-known/tdmrep.json`` rules."""

    def __init__(self, fetch: TdmFetch, ttl: float = 24 * 3600, error_ttl: float = 600) -> None:
        self._fetch = fetch
        self.ttl, self.error_ttl = ttl, error_ttl
        self._cache: OriginCache[_Entry] = OriginCache(self._load)
        self.fetches = 0  # tdmrep.json requests made (tests assert "once per origin")
        self.unreachable = 0  # of which failed (network, 5xx): their cause is kept on the origin's verdicts

    async def check(self, url: str | URL) -> TdmVerdict:
        u = url if isinstance(url, URL) else URL(url)
        if u.raw_path == WELL_KNOWN_PATH:
            return TdmVerdict(False)
        entry = await self._entry(str(u.origin()))
        rule = match_rules(entry.rules, u)
        if rule is None or not rule.reserved:
            return TdmVerdict(False, None, entry.error and f"tdmrep.json unreachable: {entry.error}")
        policy = f", policy {rule.policy}" if rule.policy else ""
        return TdmVerdict(True, f"TDM rights reserved ({WELL_KNOWN_PATH} location {rule.location!r}{policy})")

    async def _entry(self, origin: str) -> _Entry:
        return await self._cache.get(origin)

    async def _load(self, origin: str) -> _Entry:
        self.fetches += 1
        now = time.monotonic()
        try:
            status, body = await self._fetch(origin + WELL_KNOWN_PATH)
        except BlockedAddressError as e:  # the request itself is refused by the address guard
            return _Entry([], now + self.error_ttl, str(e))
        except Exception as e:  # noqa: BLE001 - an unreachable file means no rules from it, for a while
            self.unreachable += 1
            return _Entry([], now + self.error_ttl, str(e) or type(e).__name__)
        if status is None or status >= 500:
            self.unreachable += 1
            return _Entry([], now + self.error_ttl, f"HTTP {status}" if status else "network error")
        if status >= 400 or not body.strip():
            return _Entry([], now + self.ttl)
        return _Entry(parse_tdmrep_json(body), now + self.ttl)
