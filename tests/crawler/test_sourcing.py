"""Responsible sourcing against a loopback host: TDMRep, X-Robots-Tag groups, host pauses, blocklists."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDict
from PIL import Image

from clipcrawl.crawler.blocklist import Blocklist
from clipcrawl.crawler.crawl import crawl
from clipcrawl.crawler.fetch import FetchConfig, Fetcher
from clipcrawl.crawler.politeness import HostSlots
from clipcrawl.crawler.robots import robots_directives, robots_tag_disallows
from clipcrawl.crawler.tdmrep import compile_location, header_reservation, match_rules, parse_tdmrep_json
from clipcrawl.schemas.config import NOAI_DIRECTIVES, ConfigError, CrawlConfig
from tests.crawler.site import LoopbackServer, html, page

UA = "clipcrawl/0.1 (+https://example.invalid)"
LOOPBACK = ["127.0.0.0/8"]


def _png(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
BAD_SHA = _png((1, 2, 3))
BAD_MD5 = _png((4, 5, 6))
TDMREP = [
    {"location": "/reserved/*", "tdm-reservation": 1, "tdm-policy": "https://example.invalid/policy.json"},
    {"location": "/img/free$", "tdm-reservation": 0},
    {"location": "/img/*.gif", "tdm-reservation": 1},
]


def sourcing_site(log, srv) -> web.Application:
    state: Counter[str] = Counter()

    def img(body=PNG, headers=None):
        async def h(request):
            return web.Response(body=body, content_type="image/png", headers=headers)
        return h

    async def robots(request):
        return web.Response(text="User-agent: *\nAllow: /\n")

    async def tdmrep(request):
        return web.json_response(TDMREP)

    async def two_lines(request):  # two X-Robots-Tag header lines, the second ours
        h = CIMultiDict([("X-Robots-Tag", "otherbot: noindex"), ("X-Robots-Tag", "clipcrawl: noimageai")])
        return web.Response(body=PNG, content_type="image/png", headers=h)

    async def busy(request):
        state["busy"] += 1
        if state["busy"] == 1:
            return web.Response(status=429, headers={"Retry-After": "2"})
        return web.Response(body=PNG, content_type="image/png")

    async def always429(request):
        return web.Response(status=429)

    r = web.Application()
    r.router.add_get("/robots.txt", robots)
    r.router.add_get("/.well-known/tdmrep.json", tdmrep)
    r.router.add_get("/img/ok", img())
    r.router.add_get("/img/free", img())
    r.router.add_get("/img/a.gif", img())
    r.router.add_get("/img/tdm-header", img(headers={"tdm-reservation": "1", "tdm-policy": "https://p.invalid/"}))
    r.router.add_get("/img/tdm-zero", img(headers={"tdm-reservation": "0"}))
    r.router.add_get("/reserved/x", img())
    r.router.add_get("/img/xrobots-combined", img(headers={"X-Robots-Tag": "otherbot: noindex, clipcrawl: noai"}))
    r.router.add_get("/img/xrobots-other", img(headers={"X-Robots-Tag": "otherbot: noindex, noai"}))
    r.router.add_get("/img/xrobots-lines", two_lines)
    r.router.add_get("/img/bad-sha", img(BAD_SHA))
    r.router.add_get("/img/bad-md5", img(BAD_MD5))
    r.router.add_get("/busy/{n}", busy)
    r.router.add_get("/always429/{n}", always429)
    r.router.add_get("/", _static(html("<a href=/p/tdm-header>a</a><a href=/p/tdm-meta>b</a>"
                                                 "<a href=/p/blocked>c</a><a href=/reserved/page>d</a>"
                                                 "<a href=/p/ok>e</a>")))
    r.router.add_get("/p/ok", _static(html("<img src=/img/ok alt='a fine red square'>")))
    r.router.add_get("/p/blocked", _static(html("<img src=/img/ok alt='never seen'>")))
    r.router.add_get("/reserved/page", _static(html("<img src=/img/ok alt='reserved by file'>")))
    r.router.add_get("/p/tdm-header", _static(html("<img src=/img/ok alt='reserved by header'>"),
                                                      **{"tdm-reservation": "1"}))
    r.router.add_get("/p/tdm-meta", _static(html(
        "<img src=/img/ok alt='reserved by meta'><a href=/p/ok>x</a>",
        head='<meta name="tdm-reservation" content="1"><meta name="tdm-policy" content="https://p.invalid/">')))
    return r


def _static(text: str, **headers: str):
    async def h(request):
        return page(text, **headers)
    return h


def _blocklist_file(tmp_path: Path, base: str) -> Path:
    f = tmp_path / "block.txt"
    f.write_text(
        "# a Re-LAION-style list\n"
        f"{base}/img/ok?x=1   # one URL\n"
        "domain:blocked.invalid\n"
        f"sha256:{hashlib.sha256(BAD_SHA).hexdigest()}\n"
        f"md5:{hashlib.md5(BAD_MD5).hexdigest().upper()}\n"
        f"{base}/p/blocked\n"
    )
    return f


def _cfg(**kw) -> FetchConfig:
    args = dict(user_agent=UA, timeout=5, retries=0, allowed_networks=tuple(LOOPBACK), per_host_concurrency=4)
    args.update(kw)
    return FetchConfig(**args)


# ---------------------------------------------------------------- pure parsers
def test_robots_tag_parser_per_spec():
    ua = "clipcrawl"
    assert robots_tag_disallows(["otherbot: noindex, clipcrawl: noai"], ua, NOAI_DIRECTIVES) == "noai"
    assert robots_tag_disallows(["otherbot: noindex, noai"], ua, NOAI_DIRECTIVES) is None  # all otherbot's
    assert robots_tag_disallows(["otherbot: noindex", "noimageai"], ua, NOAI_DIRECTIVES) == "noimageai"  # 2 lines
    assert robots_tag_disallows(["CLIPCRAWL: NoImageIndex"], ua, NOAI_DIRECTIVES) == "noimageindex"
    assert robots_tag_disallows(["none"], ua, NOAI_DIRECTIVES) == "none"
    assert robots_tag_disallows(["none"], ua, ["nofollow"]) == "none"
    assert robots_tag_disallows(["unavailable_after: 25 Jun 2010 15:00:00 PST"], ua, NOAI_DIRECTIVES)
    assert robots_tag_disallows(["unavailable_after: Friday, 25-Jun-10 15:00:00 PST"], ua, NOAI_DIRECTIVES)
    assert robots_tag_disallows(["unavailable_after: 2010-06-25T15:00:00Z, googlebot: all"], ua, NOAI_DIRECTIVES)
    assert robots_tag_disallows(["unavailable_after: 2999-01-01"], ua, NOAI_DIRECTIVES) is None
    assert robots_tag_disallows(["max-image-preview: large, noarchive"], ua, NOAI_DIRECTIVES) is None
    assert robots_tag_disallows(["googlebot: none"], ua, NOAI_DIRECTIVES) is None
    # the token is the one the run sends
    assert robots_tag_disallows(["mybot: noai"], "mybot", NOAI_DIRECTIVES) == "noai"
    assert [d for d, _ in robots_directives(["a: noindex, mybot: noai, nofollow"], "mybot")] == ["noai", "nofollow"]


def test_tdmrep_parsing_and_location_patterns():
    rules = parse_tdmrep_json(json.dumps(TDMREP).encode())
    assert [r.location for r in rules] == ["/reserved/*", "/img/free$", "/img/*.gif"]
    assert match_rules(rules, "http://h/reserved/deep/a.jpg").reserved
    assert match_rules(rules, "http://h/reservedx") is None
    assert match_rules(rules, "http://h/img/free").reserved is False
    assert match_rules(rules, "http://h/img/free2") is None  # "$" anchors
    assert match_rules(rules, "http://h/img/x/y.gif?v=1").reserved
    assert compile_location("/").match("/anything")
    assert parse_tdmrep_json(b"not json") == [] and parse_tdmrep_json(b'{"a": 1}') == []
    assert header_reservation({"TDM-Reservation": "1"}) and not header_reservation({"tdm-reservation": "0"})


def test_blocklist_rules(tmp_path):
    f = _blocklist_file(tmp_path, "http://Example.com")
    bl = Blocklist.load([f])
    assert bl.match_url("http://example.com/img/ok?x=1") == "blocklist block.txt:2: URL http://example.com/img/ok?x=1"
    assert bl.match_url("http://example.com/img/ok") is None
    assert "domain:blocked.invalid" in bl.match_url("https://a.b.BLOCKED.invalid./x.jpg")
    assert bl.match_url("https://notblocked.invalid/x.jpg") is None
    assert "sha256:" in bl.match_body(BAD_SHA) and "md5:" in bl.match_body(BAD_MD5) and bl.match_body(PNG) is None
    bad = tmp_path / "bad.txt"
    bad.write_text("sha256:xyz\n")
    with pytest.raises(ConfigError, match="bad.txt:1"):
        Blocklist.load([bad])


# ---------------------------------------------------------------- the fetcher on a loopback host
def test_fetcher_honours_tdmrep_xrobots_and_blocklists(tmp_path):
    def directives(resp):
        hit = robots_tag_disallows(resp.headers.getall("X-Robots-Tag", []), "clipcrawl", NOAI_DIRECTIVES)
        return f"X-Robots-Tag {hit}" if hit else None

    with LoopbackServer(sourcing_site) as srv:
        base = srv.base
        bl = _blocklist_file(tmp_path, base)

        async def main():
            async with Fetcher(_cfg(blocklists=(str(bl),))) as f:
                out = {p: await f.fetch(base + p, accept=directives) for p in (
                    "/img/ok", "/img/free", "/img/a.gif", "/img/tdm-header", "/img/tdm-zero", "/reserved/x",
                    "/img/xrobots-combined", "/img/xrobots-other", "/img/xrobots-lines", "/img/bad-sha",
                    "/img/bad-md5", "/img/ok?x=1")}
                return out, f.tdmrep.fetches

        out, tdm_fetches = asyncio.run(main())
        hits = srv.log.counts()
    assert out["/img/ok"].ok and out["/img/free"].ok and out["/img/tdm-zero"].ok
    assert out["/img/a.gif"].error_kind == "tdm" and hits["/img/a.gif"] == 0  # never requested
    assert out["/reserved/x"].error_kind == "tdm" and hits["/reserved/x"] == 0
    assert "/.well-known/tdmrep.json" in out["/reserved/x"].error and "/reserved/*" in out["/reserved/x"].error
    assert tdm_fetches == 1 and hits["/.well-known/tdmrep.json"] == 1  # once per origin
    r = out["/img/tdm-header"]
    assert r.error_kind == "tdm" and r.body is None and "tdm-reservation: 1" in r.error and "p.invalid" in r.error
    assert out["/img/xrobots-combined"].error_kind == "rejected" and "noai" in out["/img/xrobots-combined"].error
    assert out["/img/xrobots-other"].ok
    assert out["/img/xrobots-lines"].error_kind == "rejected" and "noimageai" in out["/img/xrobots-lines"].error
    assert out["/img/bad-sha"].error_kind == "blocklisted" and "sha256:" in out["/img/bad-sha"].error
    assert out["/img/bad-md5"].error_kind == "blocklisted" and "md5:" in out["/img/bad-md5"].error
    r = out["/img/ok?x=1"]
    assert r.error_kind == "blocklisted" and "block.txt:2" in r.error and hits["/img/ok?x=1"] == 0


def test_429_pauses_the_host_for_every_later_request():
    """retries=0: the 429's Retry-After: 2 still holds every later request of the run (server timestamps)."""
    with LoopbackServer(sourcing_site) as srv:
        async def main():
            async with Fetcher(_cfg(per_host_concurrency=1, respect_tdmrep=False)) as f:
                first = await f.fetch(srv.base + "/busy/0")
                rest = await asyncio.gather(*(f.fetch(f"{srv.base}/busy/{i}") for i in range(1, 21)))
                return first, rest, f.slots.pauses
        first, rest, pauses = asyncio.run(main())
        with srv.log.lock:
            hits = [(h.path, h.t) for h in srv.log.hits if h.path.startswith("/busy/")]
    assert first.error_kind == "http" and first.status == 429 and first.attempts == 1
    assert "host paused 2s" in first.error and pauses == 1
    assert all(r.ok for r in rest)
    t429 = hits[0][1]
    gaps = [t - t429 for _, t in hits[1:]]
    assert len(gaps) == 20 and min(gaps) >= 1.9, gaps  # nothing reached the host during the pause


def test_repeated_429_backs_off_exponentially_and_is_capped():
    slots = HostSlots(2, 0.0, max_pause=5.0, backoff_base=1.0)
    assert [slots.pause("h", 429, None) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert slots.pause("h", 200, None) == 0.0 and slots.pause("h", 429, None) == 1.0  # a success resets
    assert slots.pause("h", 503, None) == 0.0 and slots.pause("h", 503, 3.0) == 3.0
    assert slots.pause("h", 429, 600.0) == 5.0  # Retry-After above the cap: capped

    with LoopbackServer(sourcing_site) as srv:
        async def main():
            async with Fetcher(_cfg(per_host_concurrency=1, respect_tdmrep=False, respect_robots=False,
                                    backoff_429=0.2, max_retry_after=1.0)) as f:
                return [await f.fetch(f"{srv.base}/always429/{i}") for i in range(4)]
        asyncio.run(main())
        times = [h.t for h in srv.log.hits if h.path.startswith("/always429/")]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.38 and gaps[2] >= 0.78, gaps  # 0.2, 0.4, 0.8 s


def test_per_host_concurrency_is_honoured():
    state = {"now": 0, "peak": 0}

    def app(log, srv):
        async def slow(request):
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            await asyncio.sleep(0.05)
            state["now"] -= 1
            return web.Response(body=PNG, content_type="image/png")
        a = web.Application()
        a.router.add_get("/s/{n}", slow)
        return a

    with LoopbackServer(app) as srv:
        async def main():
            async with Fetcher(_cfg(per_host_concurrency=3, respect_robots=False, respect_tdmrep=False)) as f:
                return await asyncio.gather(*(f.fetch(f"{srv.base}/s/{i}") for i in range(30)))
        assert all(r.ok for r in asyncio.run(main()))
    assert state["peak"] == 3


# ---------------------------------------------------------------- the crawler
def test_crawl_honours_tdmrep_and_blocklists(tmp_path):
    import pyarrow.parquet as pq

    with LoopbackServer(sourcing_site) as srv:
        bl = _blocklist_file(tmp_path, srv.base)
        cfg = CrawlConfig(seeds=[srv.base + "/"], allowed_networks=LOOPBACK, blocklists=[str(bl)], retries=0)
        crawl(cfg, tmp_path / "out", progress=False)
        hits = srv.log.counts()
    pages = {r["url"].split("/", 3)[3]: r for f in sorted((tmp_path / "out/pages").glob("*.parquet"))
             for r in pq.read_table(f).to_pylist()}
    pairs = [r for f in sorted((tmp_path / "out/pairs").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert pages["p/blocked"]["status"] == "blocked" and hits["/p/blocked"] == 0
    assert "block.txt:6" in pages["p/blocked"]["error_message"]
    assert pages["reserved/page"]["status"] == "tdm_reserved" and hits["/reserved/page"] == 0
    assert pages["p/tdm-header"]["status"] == "tdm_reserved" and "header" in pages["p/tdm-header"]["error_message"]
    assert pages["p/tdm-meta"]["status"] == "tdm_reserved" and "meta" in pages["p/tdm-meta"]["error_message"]
    assert {p["caption"] for p in pairs} == {"a fine red square"}
    assert hits["/.well-known/tdmrep.json"] == 1


# ---------------------------------------------------------------- Common Crawl
def test_commoncrawl_drops_blocklisted_and_tdm_reserved_pairs(tmp_path):
    from clipcrawl.crawler.commoncrawl import read_commoncrawl
    from clipcrawl.schemas.config import CommonCrawlConfig
    from tests.crawler.test_commoncrawl_records import http_response, write_warc

    def pg(i):
        return f'<html><body><img src="/a{i}.jpg" alt="Photo {i}"><img src="https://cdn.bad.example/b{i}.jpg" ' \
               f'alt="Bad {i}"></body></html>'.encode()

    warc = write_warc(tmp_path / "in.warc.gz", [
        {"uri": "https://ok.example/p1", "body": pg(1), "http": http_response(b"")},
        {"uri": "https://www.bad.example/p2", "body": pg(2), "http": http_response(b"")},
        {"uri": "https://ok.example/p3", "body": pg(3), "http": http_response(b"", extra=[("tdm-reservation", "1")])},
        {"uri": "https://ok.example/p4", "body": pg(4).replace(b"<body>", b'<head><meta name="tdm-reservation" '
                                                               b'content="1"></head><body>'), "http": http_response(b"")},
        {"uri": "https://ok.example/p5", "body": pg(5),
         "http": http_response(b"", extra=[("X-Robots-Tag", "otherbot: noindex, clipcrawl: noai")])},
    ])
    bl = tmp_path / "bl.txt"
    bl.write_text("domain:bad.example\n")
    summary = read_commoncrawl(CommonCrawlConfig(paths=[str(warc)], blocklists=[str(bl)]), tmp_path / "out")
    import pyarrow.parquet as pq

    pairs = [r for f in sorted((tmp_path / "out/pairs").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert [p["caption"] for p in pairs] == ["Photo 1"]
    assert summary.noai_pages == 3 and summary.dropped.get("blocklist") == 3
