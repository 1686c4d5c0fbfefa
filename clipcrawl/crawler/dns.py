"""The fetcher's DNS: an asyncio caching resolver over c-ares (``aiodns``), for aiohttp's connector.

* c-ares queries on the event loop (no thread per lookup), against ``servers`` (``"9.9.9.9"``,
  ``"127.0.0.1:5353"``) or, when none are named, the servers of ``/etc/resolv.conf`` (so a network
  namespace's resolv.conf applies). Without ``aiodns`` the system's ``getaddrinfo`` (threads) is used.
* Positive answers are cached for their TTL clamped to ``[min_ttl, max_ttl]``; NXDOMAIN and "no address"
  for ``negative_ttl`` (RFC 2308 says the SOA minimum: c-ares does not hand it over on a failed lookup,
  its own query cache underneath honours it); SERVFAIL, timeouts and other failures for ``error_ttl``.
* At most ``concurrency`` lookups in flight; concurrent lookups of one name share one query.
* ``localhost`` (and ``*.localhost``) and IP literals never make a query; ``/etc/hosts`` is read by c-ares.
* Search domains are not applied (crawled URLs hold absolute names).

Failures raise :class:`DnsError` (an ``OSError``: aiohttp passes it on as the ``os_error`` of a
``ClientConnectorDNSError``) whose message is the cause: ``"DNS NXDOMAIN for host x.test"``. The
private-address guard (:class:`clipcrawl.crawler.netguard.GuardedResolver`) wraps this resolver and
checks every answer, cached or not. ``stats`` counts lookups (queries) for benches.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp.abc import AbstractResolver

log = logging.getLogger("clipcrawl.dns")

_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
NEGATIVE_CAUSES = frozenset({"NXDOMAIN", "no address"})
#: c-ares status -> cause (aiodns.error codes: ENODATA 1, EFORMERR 2, ESERVFAIL 3, ENOTFOUND 4,
#: ENOTIMP 5, EREFUSED 6, ETIMEOUT 12, ECONNREFUSED 11)
_ARES_CAUSES = {1: "no address", 2: "FORMERR", 3: "SERVFAIL", 4: "NXDOMAIN", 5: "NOTIMP", 6: "REFUSED",
                11: "server unreachable", 12: "timeout"}


class DnsError(OSError):
    """A lookup without an address; ``str(e)`` is ``"DNS <cause> for host <host>"``."""

    def __init__(self, host: str, cause: str) -> None:
        super().__init__(f"DNS {cause} for host {host}")
        self.host, self.cause = host, cause

    @property
    def negative(self) -> bool:
        """The name has no address (NXDOMAIN, no data): an answer, not a failure to get one."""
        return self.cause in NEGATIVE_CAUSES


@dataclass
class DnsStats:
    resolves: int = 0  # resolve() calls
    lookups: int = 0  # lookups sent to the backend (c-ares: A and AAAA queries of one name)
    hits: int = 0  # answered from the cache (positive or negative)
    coalesced: int = 0  # joined a lookup of the same name already in flight
    local: int = 0  # localhost / IP literals, no query
    failures: dict[str, int] = field(default_factory=dict)  # cause -> lookups that failed so

    def as_dict(self) -> dict[str, Any]:
        return {"resolves": self.resolves, "lookups": self.lookups, "hits": self.hits, "coalesced": self.coalesced,
                "local": self.local, "failures": dict(self.failures)}


@dataclass
class _Entry:
    expires: float
    addrs: tuple[tuple[int, str], ...] = ()  # (family, address)
    cause: str | None = None  # a cached failure


class _AresBackend:
    name = "c-ares"

    def __init__(self, servers: tuple[str, ...], timeout: float, tries: int) -> None:
        import aiodns
        import pycares

        self._error = aiodns.error.DNSError
        try:
            self._r = aiodns.DNSResolver(nameservers=list(servers) or None, timeout=timeout, tries=tries,
                                         flags=pycares.ARES_FLAG_NOSEARCH)
        except pycares.AresError as e:
            raise ValueError(f"DNS servers {', '.join(servers) or '(resolv.conf)'}: {e}") from e

    async def lookup(self, host: str, family: int) -> tuple[list[tuple[int, str]], float | None]:
        try:
            res = await self._r.getaddrinfo(host, family=family, type=socket.SOCK_STREAM)
        except self._error as e:
            code = e.args[0] if e.args else None
            raise DnsError(host, _ARES_CAUSES.get(code, f"error ({e.args[1] if len(e.args) > 1 else e})")) from None
        addrs, ttls = [], []
        for node in res.nodes:
            addr = node.addr[0].decode("ascii")
            if node.family == socket.AF_INET6 and len(node.addr) > 3 and node.addr[3]:
                addr = f"{addr}%{node.addr[3]}"
            addrs.append((int(node.family), addr))
            ttls.append(node.ttl)
        return addrs, (min(ttls) if ttls else None)

    async def close(self) -> None:
        await self._r.close()


class _ThreadedBackend:
    """The system resolver (``getaddrinfo`` on the loop's threads): no TTLs, no servers of our own."""

    name = "getaddrinfo"

    async def lookup(self, host: str, family: int) -> tuple[list[tuple[int, str]], float | None]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, 0, family=family, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            codes = {socket.EAI_NONAME: "NXDOMAIN", getattr(socket, "EAI_NODATA", -9999): "no address",
                     socket.EAI_AGAIN: "SERVFAIL"}
            raise DnsError(host, codes.get(e.errno, f"error ({e.strerror})")) from None
        return [(int(fam), str(sa[0])) for fam, _, _, _, sa in infos], None

    async def close(self) -> None:
        pass


def make_backend(servers: tuple[str, ...] = (), timeout: float = 5.0, tries: int = 2) -> Any:
    """c-ares when ``aiodns`` is installed, else getaddrinfo (which cannot take ``servers``)."""
    try:
        import aiodns  # noqa: F401
    except ImportError:
        if servers:
            raise ValueError("DNS servers need aiodns (pip install aiodns)") from None
        return _ThreadedBackend()
    try:
        return _AresBackend(tuple(servers), timeout / max(1, tries), tries)
    except ValueError:
        if servers:
            raise
        log.warning("c-ares could not read the system's resolver configuration: using getaddrinfo")
        return _ThreadedBackend()


def _literal(host: str) -> tuple[int, str] | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return (int(socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip))


_LOCALHOST = ((int(socket.AF_INET), "127.0.0.1"), (int(socket.AF_INET6), "::1"))


class CachingResolver(AbstractResolver):
    """aiohttp resolver: cached, coalesced, bounded lookups (see the module doc)."""

    def __init__(self, servers: tuple[str, ...] | list[str] = (), *, timeout: float = 5.0, tries: int = 2,
                 concurrency: int = 64, min_ttl: float = 30.0, max_ttl: float = 3600.0,
                 negative_ttl: float = 60.0, error_ttl: float = 5.0, default_ttl: float = 300.0,
                 max_entries: int = 200_000, backend: Any = None) -> None:
        self.servers = tuple(servers)
        self.timeout = timeout
        self.min_ttl, self.max_ttl = min_ttl, max_ttl
        self.negative_ttl, self.error_ttl, self.default_ttl = negative_ttl, error_ttl, default_ttl
        self.max_entries = max_entries
        self._backend = backend if backend is not None else make_backend(self.servers, timeout, tries)
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._cache: dict[tuple[str, int], _Entry] = {}
        self._pending: dict[tuple[str, int], asyncio.Future[_Entry]] = {}
        self.stats = DnsStats()

    @property
    def backend(self) -> str:
        return getattr(self._backend, "name", type(self._backend).__name__)

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        self.stats.resolves += 1
        name = host.rstrip(".").lower()
        lit = _literal(name)
        if lit is not None or name == "localhost" or name.endswith(".localhost"):
            self.stats.local += 1
            return self._results(host, port, family, (lit,) if lit else _LOCALHOST)
        key = (name, int(family))
        entry = self._cache.get(key)
        if entry is not None and entry.expires > time.monotonic():
            self.stats.hits += 1
        else:
            fut = self._pending.get(key)
            if fut is not None:
                self.stats.coalesced += 1
            else:
                fut = self._pending[key] = asyncio.ensure_future(self._lookup(key))
                fut.add_done_callback(lambda f, key=key: (self._pending.pop(key, None),
                                                          f.cancelled() or f.exception()))
            entry = await asyncio.shield(fut)  # a waiter that gives up does not cancel the others' lookup
        if entry.cause is not None:
            raise DnsError(name, entry.cause)
        return self._results(host, port, family, entry.addrs)

    async def _lookup(self, key: tuple[str, int]) -> _Entry:
        name, family = key
        async with self._sem:
            self.stats.lookups += 1
            try:
                addrs, ttl = await asyncio.wait_for(self._backend.lookup(name, family), self.timeout)
            except asyncio.TimeoutError:
                cause: str | None = "timeout"
            except DnsError as e:
                cause = e.cause
            except (OSError, UnicodeError, ValueError) as e:  # a malformed name, a broken channel
                cause = f"error ({type(e).__name__}: {e})"
            else:
                cause = None if addrs else "no address"
        now = time.monotonic()
        if cause is not None:
            self.stats.failures[cause] = self.stats.failures.get(cause, 0) + 1
            ttl_s = self.negative_ttl if cause in NEGATIVE_CAUSES else self.error_ttl
            entry = _Entry(now + ttl_s, (), cause)
        else:
            ttl_s = min(self.max_ttl, max(self.min_ttl, self.default_ttl if ttl is None else float(ttl)))
            entry = _Entry(now + ttl_s, tuple(addrs))
        self._store(key, entry, now)
        return entry

    def _store(self, key: tuple[str, int], entry: _Entry, now: float) -> None:
        cache = self._cache
        cache.pop(key, None)  # re-insert: dict order is insertion order, oldest first
        cache[key] = entry
        if len(cache) > self.max_entries:
            for k in [k for k, e in cache.items() if e.expires <= now]:
                del cache[k]
            for k in list(cache)[: max(0, len(cache) - self.max_entries * 9 // 10)]:
                del cache[k]

    @staticmethod
    def _results(host: str, port: int, family: int, addrs: tuple[tuple[int, str], ...] | list) -> list[Any]:
        out = [{"hostname": host, "host": a, "port": port, "family": fam, "proto": 0, "flags": _NUMERIC_FLAGS}
               for fam, a in addrs if not family or fam == family]
        if not out:
            raise DnsError(host.rstrip(".").lower(), "no address")
        return out

    def forget(self, host: str | None = None) -> None:
        """Drop cached answers (of ``host``, or all)."""
        if host is None:
            self._cache.clear()
            return
        name = host.rstrip(".").lower()
        for k in [k for k in self._cache if k[0] == name]:
            del self._cache[k]

    async def close(self) -> None:
        for fut in list(self._pending.values()):
            fut.cancel()
        await self._backend.close()
