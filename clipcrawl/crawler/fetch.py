"""The polite HTTP client shared by the crawler and the image downloader.

One aiohttp session per worker (connection reuse, DNS cache, TLS verification on), the address
guard on every hop, blocklists (URL/domain rules before every hop, hash rules on the body),
robots.txt and TDMRep's ``/.well-known/tdmrep.json`` per origin, the ``tdm-reservation`` header,
per-host slots, host pauses on 429/503 (Retry-After, exponential on repeated 429s) that hold for
every later request whatever ``retries`` is, retries with backoff, a byte cap on streamed bodies,
and a header hook that can refuse a response before its body is read (X-Robots-Tag, content type).
DNS goes through a caching c-ares resolver (:mod:`clipcrawl.crawler.dns`) under the address guard; a
per-host circuit breaker (:mod:`clipcrawl.crawler.breaker`) fails a dead host's requests fast.
Deadlines per request: connect (``connect_timeout``), first byte and body stall (``read_timeout``: no
bytes for that long), and ``timeout`` for the whole request, body included (a trickling host is cut).
Failures come back as data (:class:`FetchResult` with ``error`` and ``error_kind``) whose ``error``
names the real cause ("DNS NXDOMAIN for host x", "connection refused (h:80)", "timeout after 10s
(first byte)", "breaker open: h: ..."); ``fetch`` never raises for the network.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from clipcrawl.crawler.blocklist import Blocklist
from clipcrawl.crawler.breaker import HostBreaker
from clipcrawl.crawler.dns import CachingResolver, DnsError
from clipcrawl.crawler.netguard import (
    BlockedAddressError,
    GuardedResolver,
    blocked_message,
    check_url,
    parse_networks,
)
from clipcrawl.crawler.politeness import (
    RETRYABLE_STATUSES,
    HostPaused,
    HostSlots,
    parse_retry_after,
    retry_delay,
)
from clipcrawl.crawler.robots import FetchFailed, RobotsCache
from clipcrawl.crawler.tdmrep import TdmRepCache, header_reservation

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: error_kind values; the downloader and crawler map them onto their statuses.
#: "tdm": TDMRep reservation (tdmrep.json before the request, tdm-reservation header before the body);
#: "blocklisted": a blocklist rule matched (URL/domain before the request, sha256/md5 after the body);
#: "dns": the host name has no address (NXDOMAIN, SERVFAIL, DNS timeout...); "breaker": the host's breaker is open.
KINDS = ("http", "timeout", "connection", "blocked", "redirect", "too_large", "rejected", "robots", "invalid", "tls",
         "refused", "tdm", "blocklisted", "dns", "breaker")

#: accept(response) -> reason to refuse it before its body is read, or None.
Accept = Callable[[aiohttp.ClientResponse], "str | None"]
#: follow(url) -> reason not to follow a redirect to ``url`` (error_kind "refused"), or None.
Follow = Callable[[str], "str | None"]


@dataclass
class FetchResult:
    url: str
    final_url: str
    status: int | None = None
    headers: dict[str, str] | None = None
    body: bytes | None = None
    error: str | None = None
    error_kind: str | None = None
    retry_after: float | None = None
    redirects: int = 0
    attempts: int = 0
    elapsed: float = 0.0
    host_pause: float = 0.0  # seconds this response paused its host for (429/503)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def retryable(self) -> bool:
        if self.error_kind in ("timeout", "connection"):
            return True
        return self.error_kind == "http" and self.status in RETRYABLE_STATUSES


@dataclass(frozen=True)
class FetchConfig:
    user_agent: str
    timeout: float = 10.0
    max_bytes: int = 30_000_000
    max_redirects: int = 5
    retries: int = 0
    allow_private: bool = False
    allowed_networks: tuple[str, ...] = ()  # CIDR exceptions to the address guard (e.g. an intranet)
    respect_robots: bool = True
    per_host_concurrency: int = 2
    delay: float = 0.0
    total_concurrency: int = 64
    max_retry_after: float = 120.0  # host pauses are capped here; a longer Retry-After is not retried
    backoff_base: float = 0.5
    backoff_429: float = 1.0  # host pause after the n-th 429 in a row without a longer Retry-After: this x 2**(n-1)
    respect_tdmrep: bool = True
    blocklists: tuple[str, ...] = ()  # blocklist files (clipcrawl.crawler.blocklist)
    verify_ssl: bool = True
    dns_servers: tuple[str, ...] = ()  # "ip" or "ip:port"; () = /etc/resolv.conf's (clipcrawl.crawler.dns)
    dns_timeout: float = 5.0  # one lookup, all tries
    dns_concurrency: int = 64  # lookups in flight
    connect_timeout: float | None = None  # TCP (+ TLS) connect; None: min(timeout, 10)
    read_timeout: float | None = None  # no byte for this long (first byte, body stall); None: timeout
    breaker_threshold: int = 5  # consecutive host failures that open the host's breaker (0: no breaker)
    breaker_timeouts: int = 2  # ... or this many of them that were request timeouts (0: no separate count)
    breaker_cooldown: float = 30.0  # seconds open before one trial request
    breaker_statuses: tuple[int, ...] = ()  # HTTP statuses counted as host failures too (e.g. 503)
    max_pause_wait: float | None = None  # fail a request at once rather than wait longer for a 429/503 pause


class Fetcher:
    """``async with Fetcher(cfg) as f: r = await f.fetch(url)``."""

    def __init__(self, cfg: FetchConfig, headers: dict[str, str] | None = None,
                 blocklist: Blocklist | None = None) -> None:
        self.cfg = cfg
        self.slots = HostSlots(cfg.per_host_concurrency, cfg.delay, cfg.max_retry_after, cfg.backoff_429)
        self.robots = RobotsCache(self._fetch_robots, cfg.user_agent)
        self.tdmrep = TdmRepCache(self._fetch_robots)
        self.blocklist = blocklist if blocklist is not None else Blocklist.load(cfg.blocklists)
        self._headers = {"User-Agent": cfg.user_agent, **(headers or {})}
        self.session: aiohttp.ClientSession | None = None
        self.bytes_downloaded = 0
        self._networks = parse_networks(cfg.allowed_networks)
        self.breaker = HostBreaker(cfg.breaker_threshold, cfg.breaker_cooldown, timeout_threshold=cfg.breaker_timeouts)
        self.resolver: CachingResolver | None = None  # its .stats count DNS lookups
        self.connect_timeout = min(cfg.timeout, cfg.connect_timeout or 10.0)
        self.read_timeout = min(cfg.timeout, cfg.read_timeout or cfg.timeout)

    async def __aenter__(self) -> Fetcher:
        cfg = self.cfg
        self.resolver = CachingResolver(cfg.dns_servers, timeout=min(cfg.dns_timeout, cfg.timeout),
                                        concurrency=cfg.dns_concurrency)
        connector = aiohttp.TCPConnector(
            limit=cfg.total_concurrency + 8,
            limit_per_host=0,  # HostSlots enforces per-host politeness
            use_dns_cache=False,  # the resolver caches (TTLs, negative answers); the guard checks every answer
            resolver=GuardedResolver(cfg.allow_private, resolver=self.resolver, allowed_networks=self._networks),
            enable_cleanup_closed=True,
            **({} if cfg.verify_ssl else {"ssl": False}),
            **_EXACT_DEADLINES,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=cfg.timeout, sock_connect=self.connect_timeout,
                                          sock_read=self.read_timeout, **_EXACT_TIMEOUT),
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.resolver is not None:
            await self.resolver.close()

    # ------------------------------------------------------------------ public
    async def fetch(self, url: str, accept: Accept | None = None, robots: bool | None = None,
                    follow: Follow | None = None, tdm: bool | None = None) -> FetchResult:
        """GET ``url`` with retries; never raises for network or HTTP failures. ``follow`` vets each
        redirect target before it is requested (the crawler keeps to its allowed domains with it)."""
        robots = self.cfg.respect_robots if robots is None else robots
        tdm = self.cfg.respect_tdmrep if tdm is None else tdm
        t0 = time.monotonic()
        res = FetchResult(url, url)
        for attempt in range(self.cfg.retries + 1):
            res = await self._fetch_once(url, accept, robots, follow, tdm)
            res.attempts = attempt + 1
            if not res.retryable or attempt == self.cfg.retries:
                break
            if res.retry_after is not None and res.retry_after > self.cfg.max_retry_after:
                res.error += f" (Retry-After {res.retry_after:.0f}s exceeds {self.cfg.max_retry_after:.0f}s)"
                break
            wait = retry_delay(attempt, res.retry_after, base=self.cfg.backoff_base)
            if res.retry_after is not None or res.host_pause:
                wait = 0.0  # the host is paused: its slot itself waits
            await asyncio.sleep(wait)
        res.elapsed = time.monotonic() - t0
        return res

    # ------------------------------------------------------------------ internals
    async def _fetch_once(self, url: str, accept: Accept | None, robots: bool,
                          follow: Follow | None = None, tdm: bool = False) -> FetchResult:
        assert self.session is not None, "use 'async with Fetcher(...)'"
        res = FetchResult(url, url)
        seen = {url}
        current = url
        for hop in range(self.cfg.max_redirects + 1):
            res.final_url, res.redirects = current, hop
            try:
                u = URL(current, encoded=False)
            except (ValueError, TypeError) as e:
                return _fail(res, "invalid", f"invalid URL: {e}")
            reason = check_url(u, self.cfg.allow_private, self._networks)
            if reason:
                if "address" in reason:
                    return _fail(res, "blocked", blocked_message(reason))
                return _fail(res, "invalid", reason)
            reason = self.blocklist.match_url(str(u))
            if reason:
                return _fail(res, "blocklisted", reason)
            if hop and follow is not None:
                reason = follow(str(u))
                if reason:
                    return _fail(res, "refused", reason)
            delay = 0.0
            if robots:
                verdict = await self.robots.check(str(u))
                if not verdict.allowed:
                    if verdict.blocked:
                        return _fail(res, "blocked", blocked_message(verdict.reason or "address refused"))
                    return _fail(res, "robots", verdict.reason or "disallowed by robots.txt")
                delay = verdict.crawl_delay
                if delay:
                    self.slots.set_spacing(_host_key(u), delay)
            if tdm:
                reserved = await self.tdmrep.check(u)
                if reserved.reserved:
                    return _fail(res, "tdm", reserved.reason or "TDM rights reserved")
            key = _host_key(u)
            trial, reason = self.breaker.admit(key)
            if reason:
                return _fail(res, "breaker", reason)
            body = [False]  # set once the response headers are in: a read timeout is then a body stall
            try:
                async with self.slots.acquire(key, delay, self.cfg.max_pause_wait):
                    if not trial:  # the breaker may have opened while this request waited for its slot
                        trial, reason = self.breaker.admit(key)
                        if reason:
                            return _fail(res, "breaker", reason)
                    nxt = await self._request(u, res, accept, tdm, body)
            except asyncio.CancelledError:
                self.breaker.release(key, trial)
                raise
            except HostPaused as e:  # politeness holds: the host is not asked; the row fails with why
                self.breaker.release(key, trial)
                return _fail(res, "paused", str(e))
            except Exception as e:  # noqa: BLE001 - every network failure becomes data
                if self._classify(res, e, body[0]):
                    self.breaker.failure(key, res.error or "", trial, _host_label(u), res.error_kind == "timeout")
                else:
                    self.breaker.release(key, trial)
                return res
            if res.status in self.cfg.breaker_statuses and nxt is None:
                self.breaker.failure(key, res.error or f"HTTP {res.status}", trial, _host_label(u))
            else:
                self.breaker.success(key)
            if nxt is None:
                return res
            if nxt in seen:
                return _fail(res, "redirect", f"redirect loop at {nxt}")
            seen.add(nxt)
            current = nxt
        return _fail(res, "redirect", f"too many redirects (> {self.cfg.max_redirects})")

    async def _request(self, u: URL, res: FetchResult, accept: Accept | None, tdm: bool = False,
                       body_phase: list[bool] | None = None) -> str | None:
        """One request. Returns the next URL for a redirect, else fills ``res`` and returns None."""
        assert self.session is not None
        async with self.session.get(u, allow_redirects=False) as resp:
            if body_phase is not None:
                body_phase[0] = True
            res.status = resp.status
            res.headers = _flat_headers(resp)
            retry_after = parse_retry_after(resp.headers.get("Retry-After")) if resp.status >= 400 else None
            res.host_pause = self.slots.pause(_host_key(u), resp.status, retry_after)
            if resp.status in REDIRECT_STATUSES and "Location" in resp.headers:
                return str(u.join(URL(resp.headers["Location"])))
            if resp.status >= 400:
                res.retry_after = retry_after
                msg = f"HTTP {resp.status} {resp.reason or ''}".strip()
                if res.host_pause:
                    why = f"Retry-After {retry_after:g}s" if retry_after else "repeated 429 backoff"
                    capped = " (capped)" if retry_after and retry_after > res.host_pause else ""
                    msg += f"; host paused {res.host_pause:g}s{capped} ({why})"
                _fail(res, "http", msg)
                return None
            if tdm:
                reason = header_reservation(res.headers)
                if reason:
                    _fail(res, "tdm", reason)
                    return None
            if accept is not None:
                reason = accept(resp)
                if reason:
                    _fail(res, "rejected", reason)
                    return None
            declared = resp.content_length
            if declared is not None and declared > self.cfg.max_bytes:
                _fail(res, "too_large", f"body of {declared} bytes exceeds the {self.cfg.max_bytes}-byte cap")
                return None
            chunks, size = [], 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > self.cfg.max_bytes:
                    _fail(res, "too_large", f"body exceeds the {self.cfg.max_bytes}-byte cap")
                    return None
                chunks.append(chunk)
            self.bytes_downloaded += size
            body = b"".join(chunks)
            reason = self.blocklist.match_body(body)
            if reason:
                _fail(res, "blocklisted", reason)
                return None
            res.body = body
            return None

    async def _fetch_robots(self, url: str) -> tuple[int | None, bytes]:
        """robots.txt and tdmrep.json: no robots/TDM check of their own, no retries. A failure raises
        :class:`FetchFailed` with its cause (:class:`BlockedAddressError` for the address guard)."""
        res = await self._fetch_once(url, None, robots=False, tdm=False)
        if res.error_kind == "blocked":
            raise BlockedAddressError(res.error)
        if res.error_kind in ("http",) or res.ok:
            return res.status, res.body or b""
        raise FetchFailed(res.error or "network error")

    def _classify(self, res: FetchResult, e: BaseException, in_body: bool) -> bool:
        """Fill ``res`` from exception ``e``; True when it counts against the host's breaker."""
        return _classify(res, e, self.cfg.timeout, in_body=in_body, connect=self.connect_timeout,
                         read=self.read_timeout)


def _flat_headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in resp.headers.items():
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def _host_key(u: URL) -> str:
    return f"{(u.host or '').lower()}:{u.explicit_port or u.port}"


def _host_label(u: URL) -> str:
    host = (u.host or "").lower()
    return f"{host}:{u.explicit_port}" if u.explicit_port else host


def _fail(res: FetchResult, kind: str, message: str) -> FetchResult:
    res.error_kind, res.error, res.body = kind, message, None
    return res


# aiohttp rounds every deadline of 5 s or more up to the next whole second of the loop's clock (to batch timer
# handles), so a 10 s timeout fired after 10-11 s: the last URLs of a run waited up to a second past the timeout.
# Deadlines here are what the configuration says.
_EXACT_DEADLINES = ({"timeout_ceil_threshold": float("inf")}
                    if "timeout_ceil_threshold" in inspect.signature(aiohttp.TCPConnector.__init__).parameters else {})
_EXACT_TIMEOUT = {"ceil_threshold": float("inf")} if hasattr(aiohttp.ClientTimeout(), "ceil_threshold") else {}

# aiohttp >= 3.10 tells connect and read timeouts apart (older: () matches nothing)
_CONNECT_TIMEOUT = getattr(aiohttp, "ConnectionTimeoutError", ())
_READ_TIMEOUT = getattr(aiohttp, "SocketTimeoutError", aiohttp.ServerTimeoutError)
_RESET = (ConnectionResetError, *((aiohttp.ClientConnectionResetError,) if hasattr(aiohttp, "ClientConnectionResetError")
                                  else ()))
_CONNECT_ERRNOS = {errno.ECONNREFUSED: "connection refused", errno.ENETUNREACH: "network unreachable",
                   errno.EHOSTUNREACH: "host unreachable", errno.ECONNRESET: "connection reset",
                   errno.ETIMEDOUT: "connect timeout", errno.EADDRNOTAVAIL: "address not available"}


def _classify(res: FetchResult, e: BaseException, timeout: float, in_body: bool = False,
              connect: float | None = None, read: float | None = None) -> bool:
    """Fill ``res`` with the failure ``e`` names; True for a host failure (the breaker counts it):
    DNS SERVFAIL/timeouts, connect errors and timeouts, TLS handshakes, timeouts waiting for the host."""
    os_err = getattr(e, "os_error", None)
    if isinstance(os_err, BlockedAddressError) or isinstance(e, BlockedAddressError):
        _fail(res, "blocked", blocked_message(os_err or e))
        return False
    if isinstance(os_err, DnsError) or isinstance(e, DnsError):
        err = os_err if isinstance(os_err, DnsError) else e
        _fail(res, "dns", str(err))
        return not err.negative  # NXDOMAIN / no address: an answer, cached, fails fast with its own reason
    if isinstance(e, _CONNECT_TIMEOUT):
        _fail(res, "timeout", f"timeout after {min(timeout, connect or timeout):g}s (connect)")
        return True
    if isinstance(e, asyncio.TimeoutError):
        if not in_body:
            what, limit = "first byte", min(timeout, read or timeout)
        elif isinstance(e, _READ_TIMEOUT):
            what, limit = "body stalled", min(timeout, read or timeout)
        else:
            what, limit = "total", timeout
        _fail(res, "timeout", f"timeout after {limit:g}s ({what})")
        return True
    if isinstance(e, (ssl.SSLError, aiohttp.ClientSSLError)):
        _fail(res, "tls", f"TLS error: {e}")
        return not in_body
    if isinstance(e, aiohttp.InvalidURL):
        _fail(res, "invalid", f"invalid URL: {e}")
        return False
    if isinstance(e, aiohttp.ClientPayloadError):
        _fail(res, "connection", f"truncated body: {e}")
        return False
    if isinstance(e, aiohttp.ServerDisconnectedError):
        _fail(res, "connection", "server disconnected")
        return False
    if isinstance(e, aiohttp.ClientConnectorError):
        err = e.os_error
        code = getattr(err, "errno", None)
        if code is None:  # several addresses failed: "Multiple exceptions: [Errno 111] ..., [Errno 101] ..."
            m = re.search(r"\[Errno (\d+)\]", str(err))
            code = int(m.group(1)) if m else None
        what = _CONNECT_ERRNOS.get(code or 0) or f"connect error: {err or e}"
        _fail(res, "connection", f"{what} ({e.host}:{e.port})")
        return True
    if isinstance(e, _RESET) or (
            isinstance(e, OSError) and e.errno == errno.ECONNRESET):
        _fail(res, "connection", "connection reset")
        return False
    if isinstance(e, (aiohttp.ClientError, OSError)):
        msg = str(e) or type(e).__name__
        _fail(res, "connection", f"{type(e).__name__}: {msg}")
        return False
    raise e
