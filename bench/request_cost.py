"""CPU per HTTP request on loopback: clipcrawl's fetcher against leaner clients, same requests, same server.

What the web-shaped download pays per request outside the image work, and how far a leaner HTTP stack could take
it (issue 26's "1.10x its own image floor": bench/RESULTS.md, "Web-shaped download"). One server process
(asyncio, HTTP/1.1 keep-alive, a fixed body) on every loopback address 127.0.x.y; the URLs spread over
``--per-host`` requests per host name (an IP literal: no DNS), ``--concurrency`` in flight, per-host connections
capped at 2 where the client can (clipcrawl's per-host politeness). Server and client pinned to different cores
when there are two, so the client's CPU (user + sys of this process, ``getrusage``) is its own plus the kernel
work its sends cause on loopback. Clients, alternating, ``--repeat`` times each, medians reported:

* ``fetcher``: ``clipcrawl.crawler.fetch.Fetcher.fetch`` (robots.txt/TDMRep off; per-host slots, breaker,
  guard, aiohttp underneath), what ``download`` runs per request.
* ``aiohttp``: a bare ``aiohttp.ClientSession.get`` + ``read``.
* ``asyncio-raw``: the least an asyncio client can do: a Protocol per connection, a hand-written request line,
  the response framed by Content-Length only (no header parsing, no timeouts, no redirects): a floor, not a
  client.
* ``pycurl``: libcurl's multi interface (``CurlMulti``, C does the HTTP and the connection pool), polled from
  Python; only when ``pycurl`` imports (not a dependency: ``pip install --target DIR pycurl`` and
  ``PYTHONPATH=DIR``).

    python bench/request_cost.py --n 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _serve(port: int, size: int) -> None:
    body = os.urandom(size)
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive\r\n\r\n" % size) + body

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:
            self.t, self.buf = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while b"\r\n\r\n" in self.buf:
                _, self.buf = self.buf.split(b"\r\n\r\n", 1)
                self.t.write(resp)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(Server, "0.0.0.0", port, backlog=4096))
    loop.run_forever()


def make_urls(n: int, per_host: int, port: int) -> list[str]:
    out = []
    for i in range(n):
        h = i // per_host
        out.append(f"http://127.{h // 62500 % 250}.{h // 250 % 250}.{h % 250 + 1}:{port}/img/{i}.jpg")
    return out


async def _fetcher(urls: list[str], size: int, conc: int) -> None:
    from clipcrawl.crawler.fetch import FetchConfig, Fetcher

    cfg = FetchConfig(user_agent="request-cost", allow_private=True, respect_robots=False, respect_tdmrep=False,
                      total_concurrency=conc)
    async with Fetcher(cfg) as f:
        sem = asyncio.Semaphore(conc)

        async def one(u: str) -> None:
            async with sem:
                r = await f.fetch(u)
                assert r.ok and len(r.body or b"") == size, r.error

        await asyncio.gather(*(one(u) for u in urls))


async def _aiohttp(urls: list[str], size: int, conc: int) -> None:
    import aiohttp

    conn = aiohttp.TCPConnector(limit=conc, limit_per_host=2)
    async with aiohttp.ClientSession(connector=conn, cookie_jar=aiohttp.DummyCookieJar()) as s:
        sem = asyncio.Semaphore(conc)

        async def one(u: str) -> None:
            async with sem, s.get(u) as r:
                assert len(await r.read()) == size

        await asyncio.gather(*(one(u) for u in urls))


class _Raw(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf, self.need, self.fut = bytearray(), -1, None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            at = self.buf.find(b"Content-Length: ", 0, end) + 16
            self.need = end + 4 + int(self.buf[at:self.buf.find(b"\r\n", at)])
        if len(self.buf) >= self.need:
            body = bytes(self.buf[self.buf.find(b"\r\n\r\n") + 4:self.need])
            del self.buf[:self.need]
            self.need, fut, self.fut = -1, self.fut, None
            fut.set_result(body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("closed"))


async def _raw(urls: list[str], size: int, conc: int) -> None:
    loop = asyncio.get_running_loop()
    idle: dict[tuple[str, int], list] = {}
    sem = asyncio.Semaphore(conc)

    async def one(u: str) -> None:
        async with sem:
            p = urlsplit(u)
            pool = idle.setdefault((p.hostname, p.port), [])
            if pool:
                t, c = pool.pop()
            else:
                t, c = await loop.create_connection(_Raw, p.hostname, p.port)
            c.fut = loop.create_future()
            t.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: request-cost\r\nAccept: */*\r\n\r\n"
                    % (p.path.encode(), p.netloc.encode()))
            assert len(await c.fut) == size
            pool.append((t, c))

    await asyncio.gather(*(one(u) for u in urls))


def _pycurl(urls: list[str], size: int, conc: int) -> None:
    import pycurl

    m = pycurl.CurlMulti()
    m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 2)
    free = [pycurl.Curl() for _ in range(conc)]
    todo, active = list(reversed(urls)), 0
    while todo or active:
        while todo and free:
            c = free.pop()
            c.chunks = []
            c.setopt(pycurl.URL, todo.pop())
            c.setopt(pycurl.WRITEFUNCTION, c.chunks.append)
            c.setopt(pycurl.TIMEOUT, 10)
            c.setopt(pycurl.USERAGENT, "request-cost")
            m.add_handle(c)
            active += 1
        while m.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, ok, bad = m.info_read()
            for c in ok:
                assert sum(map(len, c.chunks)) == size
                m.remove_handle(c)
                free.append(c)
                active -= 1
            if bad:
                raise RuntimeError(bad[0][2])
            if not queued:
                break
        m.select(0.01)


CLIENTS = {"fetcher": _fetcher, "aiohttp": _aiohttp, "asyncio-raw": _raw, "pycurl": _pycurl}


def measure(name: str, urls: list[str], size: int, conc: int) -> tuple[float, float, float]:
    """(user, sys, wall) seconds for the whole batch."""
    fn = CLIENTS[name]
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    if asyncio.iscoroutinefunction(fn):
        asyncio.run(fn(urls, size, conc))
    else:
        fn(urls, size, conc)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
    return r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="requests per client per run")
    ap.add_argument("--per-host", type=int, default=5, help="requests per host name (connections get reused)")
    ap.add_argument("--size", type=int, default=20000, help="response body bytes")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--port", type=int, default=18790)
    ap.add_argument("--clients", default=",".join(CLIENTS))
    args = ap.parse_args()
    names = [c for c in args.clients.split(",") if c]
    if "pycurl" in names:
        try:
            import pycurl  # noqa: F401
        except ImportError:
            print("pycurl not importable: left out", flush=True)
            names.remove("pycurl")
    server = mp.get_context("spawn").Process(target=_serve, args=(args.port, args.size), daemon=True)
    server.start()
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(server.pid, {1})
        os.sched_setaffinity(0, {0})
    time.sleep(1.0)
    urls = make_urls(args.n, args.per_host, args.port)
    got: dict[str, list[tuple[float, float, float]]] = {c: [] for c in names}
    try:
        measure(names[0], urls[: min(1000, len(urls))], args.size, args.concurrency)  # warm-up (imports)
        for r in range(args.repeat):
            for name in names:
                got[name].append(measure(name, urls, args.size, args.concurrency))
                u, s, w = got[name][-1]
                print(f"run {r} {name:12s} {1e6 * (u + s) / args.n:7.1f} us CPU/request "
                      f"(user {1e6 * u / args.n:.1f}, sys {1e6 * s / args.n:.1f}), wall {w:.2f} s", flush=True)
    finally:
        server.terminate()
    print(f"\n{args.n} requests, {args.per_host} per host, {args.size}-byte bodies, {args.concurrency} in flight; "
          f"medians of {args.repeat}")
    print("| client | CPU us/request | user | sys | vs fetcher |")
    print("|---|---:|---:|---:|---:|")
    base = None
    for name in names:
        cpu = statistics.median(u + s for u, s, _ in got[name]) / args.n * 1e6
        base = base or (cpu if name == "fetcher" else None)
        user = statistics.median(u for u, _, _ in got[name]) / args.n * 1e6
        sys_ = statistics.median(s for _, s, _ in got[name]) / args.n * 1e6
        rel = f"{cpu / base:.2f}x" if base else "-"
        print(f"| {name} | {cpu:.1f} | {user:.1f} | {sys_:.1f} | {rel} |")


if __name__ == "__main__":
    main()
