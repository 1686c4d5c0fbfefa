"""DNS queries per host and wall time of the fetcher, new resolver + breaker vs the old setup, on loopback.

A dnslib DNS server on 127.0.0.1 (ephemeral UDP port) answers ``hosts`` names: A 127.0.0.1 for most,
NXDOMAIN for 3 %, SERVFAIL for 1 %; 2 % of the hosts are "dead" (their URLs point at a port that accepts
connections and never answers). Each host has ``per_host`` image URLs, fetched with robots.txt and TDMRep
on (as ``clipcrawl download``) or off (``--no-robots --ignore-tdmrep``).

* new: :class:`clipcrawl.crawler.dns.CachingResolver` (c-ares, TTL + negative cache, coalescing) and the
  per-host breaker (5 failures);
* old: aiohttp's resolver (``AsyncResolver`` over the same server: what ``DefaultResolver`` is with aiodns
  installed) behind the connector's 10 s positive-only cache, no breaker.

    python bench/dns_bench.py --hosts 200 --per-host 20 --dns-ms 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from clipcrawl.crawler.fetch import FetchConfig, Fetcher  # noqa: E402
from clipcrawl.crawler.netguard import GuardedResolver  # noqa: E402
from tests.crawler.dnsserver import LoopbackDNS  # noqa: E402


class OldFetcher(Fetcher):
    """The fetcher's connector before issue 26: aiohttp's resolver, its 10 s cache, no negative cache."""

    async def __aenter__(self) -> Fetcher:
        await super().__aenter__()
        await self.session.close()
        self.resolver.stats.resolves = 0
        inner = aiohttp.AsyncResolver(nameservers=list(self.cfg.dns_servers), timeout=self.cfg.dns_timeout / 2,
                                      tries=2)
        calls = self.old_calls = [0]
        orig = inner.resolve

        async def counted(host, port=0, family=0):  # noqa: ANN001
            calls[0] += 1
            return await orig(host, port, family)

        inner.resolve = counted
        connector = aiohttp.TCPConnector(limit=self.cfg.total_concurrency + 8, limit_per_host=0, ttl_dns_cache=10,
                                         resolver=GuardedResolver(True, resolver=inner))
        self.session = aiohttp.ClientSession(
            connector=connector, headers=self._headers, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout, sock_connect=min(self.cfg.timeout, 10.0)))
        return self


async def _servers():
    async def handle(request):
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        if request.path.startswith("/.well-known"):
            return web.Response(status=404)
        return web.Response(body=b"\xff\xd8" + b"x" * 2000, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{p:.*}", handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()

    async def never(reader, writer):  # accept, read, never answer
        try:
            await reader.read(1 << 16)
            await asyncio.sleep(3600)
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()

    dead = await asyncio.start_server(never, "127.0.0.1", 0)
    return runner, site._server.sockets[0].getsockname()[1], dead, dead.sockets[0].getsockname()[1]


async def _run(fetcher_cls, cfg, urls, concurrency):
    sem = asyncio.Semaphore(concurrency)
    async with fetcher_cls(cfg) as f:
        async def one(u):
            async with sem:
                return await f.fetch(u)

        t0 = time.monotonic()
        res = await asyncio.gather(*(one(u) for u in urls))
        wall = time.monotonic() - t0
        calls = f.old_calls[0] if hasattr(f, "old_calls") else f.resolver.stats.lookups
        return wall, res, calls, f.breaker.fast_failures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=300)
    ap.add_argument("--per-host", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dns-ms", type=float, default=0.0, help="every DNS answer waits this long (a slow server)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    kinds = rng.choices(["ok", "nxdomain", "servfail", "dead"], [94, 3, 1, 2], k=args.hosts)
    zone = {f"h{i}.bench.test": {"nxdomain": "NXDOMAIN", "servfail": "SERVFAIL"}.get(k, "127.0.0.1")
            for i, k in enumerate(kinds)}
    if args.dns_ms:
        zone = {name: ("delay", args.dns_ms / 1000, how) for name, how in zone.items()}
    out = []

    async def go():
        runner, port, dead, dead_port = await _servers()
        try:
            urls = [f"http://h{i}.bench.test:{dead_port if k == 'dead' else port}/img/{j}.jpg"
                    for i, k in enumerate(kinds) for j in range(args.per_host)]
            rng.shuffle(urls)
            for robots in (True, False):
                for name, cls in (("old", OldFetcher), ("new", Fetcher)):
                    with LoopbackDNS(zone, ttl=300, neg_ttl=60) as dns:
                        cfg = FetchConfig(user_agent="clipcrawl/0.1", timeout=args.timeout, allow_private=True,
                                          per_host_concurrency=4, total_concurrency=args.concurrency,
                                          respect_robots=robots, respect_tdmrep=robots,
                                          dns_servers=(dns.address,), dns_timeout=2.0,
                                          breaker_threshold=5 if name == "new" else 0)
                        wall, res, calls, fast = await _run(cls, cfg, urls, args.concurrency)
                        queries = sum(dns.queries.values())
                    causes: dict[str, int] = {}
                    for r in res:
                        if not r.ok:
                            c = re.sub(r"h\d+\.bench\.test(:\d+)?|127\.0\.0\.1:\d+", "H", r.error)
                            causes[c] = causes.get(c, 0) + 1
                    out.append({"resolver": name, "robots_tdmrep": robots, "urls": len(urls), "hosts": args.hosts,
                                "wall_s": round(wall, 2), "ok": sum(r.ok for r in res),
                                "resolver_lookups_per_host": round(calls / args.hosts, 2),
                                "dns_queries_per_host": round(queries / args.hosts, 2),
                                "breaker_fast_failures": fast, "failure_causes": causes})
                    print(json.dumps(out[-1]), flush=True)
        finally:
            await runner.cleanup()
            dead.close()

    asyncio.run(go())


if __name__ == "__main__":
    main()
