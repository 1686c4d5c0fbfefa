"""The caching c-ares resolver and the fetcher's DNS failures, against a real DNS server on loopback.

Every lookup goes to the dnslib server these tests start on 127.0.0.1 (an ephemeral UDP port); HTTP goes
to aiohttp servers on 127.0.0.1. Nothing else is contacted.
"""

from __future__ import annotations

import asyncio
import time

import pyarrow as pa
import pytest
from aiohttp import web

from clipcrawl.crawler.dns import CachingResolver, DnsError
from clipcrawl.crawler.fetch import FetchConfig, Fetcher

from .dnsserver import LoopbackDNS

pytest.importorskip("aiodns")
pytest.importorskip("dnslib")

UA = "clipcrawl/0.1 (+https://example.invalid)"
ZONE = {"h1.test": "127.0.0.1", "h2.test": "127.0.0.1", "sf.test": "SERVFAIL", "nd.test": "NODATA",
        "drop.test": "DROP", **{f"slow{i}.test": ("delay", 0.2, "127.0.0.1") for i in range(6)}}


@pytest.fixture
def dns():
    with LoopbackDNS(ZONE, neg_ttl=0) as srv:  # SOA minimum 0: c-ares' own cache keeps no negative answer
        yield srv


def _resolver(srv: LoopbackDNS, **kw) -> CachingResolver:
    return CachingResolver([srv.address], **{"timeout": 1.0, **kw})


async def _try(r: CachingResolver, name: str) -> str:
    try:
        infos = await r.resolve(name, 80, 0)
    except DnsError as e:
        return str(e)
    return ",".join(sorted(i["host"] for i in infos))


def test_positive_cache_and_coalescing(dns):
    async def main():
        r = _resolver(dns)
        try:
            got = await asyncio.gather(*(r.resolve("h1.test", 80, 0) for _ in range(20)))
            assert all(g[0]["host"] == "127.0.0.1" and g[0]["port"] == 80 for g in got)
            assert r.stats.lookups == 1 and r.stats.coalesced == 19
            assert dns.count("h1.test", "A") == 1
            again = await r.resolve("H1.test.", 443, 0)  # case and trailing dot: the same name
            assert again[0]["host"] == "127.0.0.1" and again[0]["port"] == 443 and again[0]["hostname"] == "H1.test."
            assert r.stats.lookups == 1 and r.stats.hits == 1 and dns.count("h1.test", "A") == 1
        finally:
            await r.close()

    asyncio.run(main())


def test_negative_answers_are_cached(dns):
    async def main():
        r = _resolver(dns, negative_ttl=0.3)
        try:
            assert await _try(r, "nx.test") == "DNS NXDOMAIN for host nx.test"
            assert await _try(r, "nd.test") == "DNS no address for host nd.test"
            sent = dict(dns.queries)
            assert await _try(r, "nx.test") == "DNS NXDOMAIN for host nx.test"
            assert await _try(r, "nd.test") == "DNS no address for host nd.test"
            assert dict(dns.queries) == sent and r.stats.lookups == 2 and r.stats.hits == 2  # no query
            await asyncio.sleep(0.35)  # negative_ttl over: asked again
            assert await _try(r, "nx.test") == "DNS NXDOMAIN for host nx.test"
            assert dns.count("nx.test", "A") == 2 and r.stats.failures == {"NXDOMAIN": 2, "no address": 1}
        finally:
            await r.close()

    asyncio.run(main())


def test_servfail_cached_briefly_and_timeout(dns):
    async def main():
        r = _resolver(dns, error_ttl=0.3, timeout=0.4)
        try:
            assert await _try(r, "sf.test") == "DNS SERVFAIL for host sf.test"
            n = dns.count("sf.test")
            assert await _try(r, "sf.test") == "DNS SERVFAIL for host sf.test" and dns.count("sf.test") == n
            await asyncio.sleep(0.35)
            assert await _try(r, "sf.test") == "DNS SERVFAIL for host sf.test" and dns.count("sf.test") > n
            t0 = time.monotonic()
            assert await _try(r, "drop.test") == "DNS timeout for host drop.test"
            assert time.monotonic() - t0 < 1.0
            t0 = time.monotonic()
            assert await _try(r, "drop.test") == "DNS timeout for host drop.test"  # cached: no second wait
            assert time.monotonic() - t0 < 0.05
        finally:
            await r.close()

    asyncio.run(main())


def test_concurrent_lookups_are_bounded(dns):
    async def main():
        r = _resolver(dns, concurrency=2)
        try:
            t0 = time.monotonic()
            out = await asyncio.gather(*(_try(r, f"slow{i}.test") for i in range(6)))
            assert out == ["127.0.0.1"] * 6
            assert time.monotonic() - t0 >= 0.55  # 6 lookups of 0.2 s, 2 at a time
            assert dns.max_inflight <= 4  # 2 lookups, each an A and an AAAA query
        finally:
            await r.close()

    asyncio.run(main())


def test_localhost_and_literals_make_no_query(dns):
    async def main():
        r = _resolver(dns)
        try:
            assert await _try(r, "localhost") == "127.0.0.1,::1"
            assert await _try(r, "a.localhost") == "127.0.0.1,::1"
            assert await _try(r, "10.1.2.3") == "10.1.2.3"
            assert await _try(r, "[::1]") == "::1"
            v4 = await r.resolve("localhost", 80, 2)  # AF_INET only
            assert [i["host"] for i in v4] == ["127.0.0.1"]
            assert r.stats.lookups == 0 and not dns.queries
        finally:
            await r.close()

    asyncio.run(main())


# ------------------------------------------------------------------ through the fetcher
async def _serve():
    hits: dict[str, int] = {}

    async def handle(request):
        hits[request.path] = hits.get(request.path, 0) + 1
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        return web.Response(body=b"x" * 10, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{p:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1], hits


def _cfg(dns: LoopbackDNS, **kw) -> FetchConfig:
    base = dict(user_agent=UA, timeout=2.0, dns_servers=(dns.address,), dns_timeout=0.5, allow_private=True)
    base.update(kw)
    return FetchConfig(**base)


def test_private_guard_applies_to_every_answer(dns):
    async def main():
        runner, port, hits = await _serve()
        try:
            async with Fetcher(_cfg(dns, allow_private=False)) as f:
                for _ in range(2):  # the second answer comes from the cache: still refused
                    r = await f.fetch(f"http://h1.test:{port}/a.jpg")
                    assert r.error_kind == "blocked" and "127.0.0.1" in r.error and r.error.count("blocked") == 1
                assert f.resolver.stats.lookups == 1 and not hits
            async with Fetcher(_cfg(dns, allow_private=False, allowed_networks=("127.0.0.0/8",))) as f:
                r = await f.fetch(f"http://h1.test:{port}/a.jpg")
                assert r.ok, r.error
            async with Fetcher(_cfg(dns)) as f:
                r = await f.fetch(f"http://h2.test:{port}/a.jpg")
                assert r.ok and r.body == b"x" * 10
                r = await f.fetch(f"http://h2.test:{port}/b.jpg")  # robots.txt, a.jpg, b.jpg: one lookup
                assert r.ok and f.resolver.stats.lookups == 1 and dns.count("h2.test", "A") == 1
        finally:
            await runner.cleanup()

    asyncio.run(main())


@pytest.mark.parametrize("name,cause", [("nx.test", "NXDOMAIN"), ("sf.test", "SERVFAIL"), ("drop.test", "timeout")])
def test_dns_causes_reach_error_messages(dns, name, cause):
    want = f"DNS {cause} for host {name}"

    async def main():
        async with Fetcher(_cfg(dns)) as f:  # robots.txt first: its failure names the cause
            r = await f.fetch(f"http://{name}/a.jpg")
            assert r.error_kind == "robots" and r.error == f"robots.txt unreachable: {want}", r.error
        async with Fetcher(_cfg(dns, respect_robots=False)) as f:  # tdmrep.json, then the image itself
            r = await f.fetch(f"http://{name}/a.jpg")
            assert r.error_kind == "dns" and r.error == want, r.error
            verdict = await f.tdmrep.check(f"http://{name}/a.jpg")
            assert verdict.unreachable == f"tdmrep.json unreachable: {want}" and not verdict.reserved
        async with Fetcher(_cfg(dns, respect_robots=False, respect_tdmrep=False)) as f:
            t0 = time.monotonic()
            r = await f.fetch(f"http://{name}/a.jpg")
            assert r.error_kind == "dns" and r.error == want and r.attempts == 1
            assert time.monotonic() - t0 < 1.5

    asyncio.run(main())


def test_download_stage_takes_dns_servers(dns):
    from clipcrawl.pipelines.fetch_images import FetchImages, fetch_config
    from clipcrawl.schemas.config import DownloadConfig

    cfg = DownloadConfig(dns_servers=[dns.address], allow_private_networks=True, timeout=2.0, workers=1,
                         concurrency=4, image_size=64)
    assert fetch_config(cfg).dns_servers == (dns.address,)
    stage = FetchImages(cfg)
    stage.setup()
    try:
        out = stage(pa.table({"url": ["http://nx.test/a.jpg", "http://sf.test/b.jpg"], "key": ["0", "1"]}))
    finally:
        stage.teardown()
    assert out.column("error_message").to_pylist() == [
        "download: robots.txt unreachable: DNS NXDOMAIN for host nx.test",
        "download: robots.txt unreachable: DNS SERVFAIL for host sf.test"]


def test_dns_server_options():
    from clipcrawl.pipelines.commands.img2dataset import parse_args

    assert parse_args(["--url_list=u.txt", "--dns_servers=127.0.0.1:5353,127.0.0.2"])["dns_servers"] == [
        "127.0.0.1:5353", "127.0.0.2"]

    async def bad():
        CachingResolver(["not an address"])

    with pytest.raises(ValueError, match="DNS servers"):
        asyncio.run(bad())
