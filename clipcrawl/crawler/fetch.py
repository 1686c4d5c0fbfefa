"""The polite HTTP client shared by the crawler and the image downloader.

One aiohttp session per worker (connection reuse, DNS cache, TLS verification on), the address
guard on every hop, robots.txt per origin, per-host slots, retries with backoff and
Retry-After, a byte cap on streamed bodies, and a header hook that can refuse a response
before its body is read (X-Robots-Tag, content type). Failures come back as data
(:class:`FetchResult` with ``error`` and ``error_kind``); ``fetch`` never raises for the network.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from clipcrawl.crawler.netguard import (
    BlockedAddressError,
    GuardedResolver,
    blocked_message,
    check_url,
    parse_networks,
)
from clipcrawl.crawler.politeness import RETRYABLE_STATUSES, HostSlots, parse_retry_after, retry_delay
from clipcrawl.crawler.robots import RobotsCache

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: error_kind values; the downloader and crawler map them onto their statuses.
KINDS = ("http", "timeout", "connection", "blocked", "redirect", "too_large", "rejected", "robots", "invalid", "tls",
         "refused")

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
    max_retry_after: float = 120.0  # a longer Retry-After is an error, not a wait
    backoff_base: float = 0.5


class Fetcher:
    """``async with Fetcher(cfg) as f: r = await f.fetch(url)``."""

    def __init__(self, cfg: FetchConfig, headers: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.slots = HostSlots(cfg.per_host_concurrency, cfg.delay)
        self.robots = RobotsCache(self._fetch_robots, cfg.user_agent)
        self._headers = {"User-Agent": cfg.user_agent, **(headers or {})}
        self.session: aiohttp.ClientSession | None = None
        self.bytes_downloaded = 0
        self._networks = parse_networks(cfg.allowed_networks)

    async def __aenter__(self) -> Fetcher:
        connector = aiohttp.TCPConnector(
            limit=self.cfg.total_concurrency + 8,
            limit_per_host=0,  # HostSlots enforces per-host politeness
            ttl_dns_cache=300,
            resolver=GuardedResolver(self.cfg.allow_private, allowed_networks=self._networks),
            enable_cleanup_closed=True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout, sock_connect=min(self.cfg.timeout, 10.0)),
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    # ------------------------------------------------------------------ public
    async def fetch(self, url: str, accept: Accept | None = None, robots: bool | None = None,
                    follow: Follow | None = None) -> FetchResult:
        """GET ``url`` with retries; never raises for network or HTTP failures. ``follow`` vets each
        redirect target before it is requested (the crawler keeps to its allowed domains with it)."""
        robots = self.cfg.respect_robots if robots is None else robots
        t0 = time.monotonic()
        res = FetchResult(url, url)
        for attempt in range(self.cfg.retries + 1):
            res = await self._fetch_once(url, accept, robots, follow)
            res.attempts = attempt + 1
            if not res.retryable or attempt == self.cfg.retries:
                break
            if res.retry_after is not None and res.retry_after > self.cfg.max_retry_after:
                res.error += f" (Retry-After {res.retry_after:.0f}s exceeds {self.cfg.max_retry_after:.0f}s)"
                break
            wait = retry_delay(attempt, res.retry_after, base=self.cfg.backoff_base)
            if res.retry_after is not None:
                self.slots.backoff(_host_key(URL(res.final_url)), wait)
                wait = 0.0  # the slot itself now waits
            await asyncio.sleep(wait)
        res.elapsed = time.monotonic() - t0
        return res

    # ------------------------------------------------------------------ internals
    async def _fetch_once(self, url: str, accept: Accept | None, robots: bool,
                          follow: Follow | None = None) -> FetchResult:
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
            try:
                async with self.slots.acquire(_host_key(u), delay):
                    nxt = await self._request(u, res, accept)
            except Exception as e:  # noqa: BLE001 - every network failure becomes data
                return _classify(res, e, self.cfg.timeout)
            if nxt is None:
                return res
            if nxt in seen:
                return _fail(res, "redirect", f"redirect loop at {nxt}")
            seen.add(nxt)
            current = nxt
        return _fail(res, "redirect", f"too many redirects (> {self.cfg.max_redirects})")

    async def _request(self, u: URL, res: FetchResult, accept: Accept | None) -> str | None:
        """One request. Returns the next URL for a redirect, else fills ``res`` and returns None."""
        assert self.session is not None
        async with self.session.get(u, allow_redirects=False) as resp:
            res.status = resp.status
            res.headers = _flat_headers(resp)
            if resp.status in REDIRECT_STATUSES and "Location" in resp.headers:
                return str(u.join(URL(resp.headers["Location"])))
            if resp.status >= 400:
                res.retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                _fail(res, "http", f"HTTP {resp.status} {resp.reason or ''}".strip())
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
            res.body = b"".join(chunks)
            return None

    async def _fetch_robots(self, url: str) -> tuple[int | None, bytes]:
        res = await self._fetch_once(url, None, robots=False)
        if res.error_kind == "blocked":
            raise BlockedAddressError(res.error)
        if res.error_kind in ("http",) or res.ok:
            return res.status, res.body or b""
        return None, b""


def _flat_headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in resp.headers.items():
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def _host_key(u: URL) -> str:
    return f"{(u.host or '').lower()}:{u.explicit_port or u.port}"


def _fail(res: FetchResult, kind: str, message: str) -> FetchResult:
    res.error_kind, res.error, res.body = kind, message, None
    return res


def _classify(res: FetchResult, e: BaseException, timeout: float) -> FetchResult:
    if isinstance(e, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return _fail(res, "timeout", f"timeout after {timeout:g}s")
    os_err = getattr(e, "os_error", None)
    if isinstance(os_err, BlockedAddressError) or isinstance(e, BlockedAddressError):
        return _fail(res, "blocked", blocked_message(os_err or e))
    if isinstance(e, (ssl.SSLError, aiohttp.ClientSSLError)):
        return _fail(res, "tls", f"TLS error: {e}")
    if isinstance(e, aiohttp.InvalidURL):
        return _fail(res, "invalid", f"invalid URL: {e}")
    if isinstance(e, aiohttp.ClientPayloadError):
        return _fail(res, "connection", f"truncated body: {e}")
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return _fail(res, "connection", "server disconnected")
    if isinstance(e, (aiohttp.ClientError, OSError)):
        msg = str(e) or type(e).__name__
        return _fail(res, "connection", f"{type(e).__name__}: {msg}")
    raise e
