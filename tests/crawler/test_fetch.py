"""The shared polite fetcher against a real loopback aiohttp server."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from clipcrawl.crawler.fetch import FetchConfig, Fetcher
from clipcrawl.crawler.netguard import address_allowed, check_url
from clipcrawl.crawler.politeness import parse_retry_after, retry_delay
from clipcrawl.crawler.robots import robots_tag_disallows, user_agent_token

UA = "clipcrawl/0.1 (+https://example.invalid)"


def _app(hits: dict) -> web.Application:
    state = {"flaky": 0, "busy": 0}

    async def record(request, resp):
        hits.setdefault(request.path, []).append(time.monotonic())
        return resp

    async def robots(request):
        return await record(request, web.Response(text="User-agent: *\nDisallow: /private/\nCrawl-delay: 0\n"))

    async def ok(request):
        return await record(request, web.Response(body=b"x" * 100, content_type="image/jpeg"))

    async def big(request):
        return await record(request, web.Response(body=b"x" * 5000, content_type="image/jpeg"))

    async def redirect(request):
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/redirect/{n + 1}" if n < 10 else "/ok")

    async def loop(request):
        raise web.HTTPFound("/loop")

    async def to_private(request):
        raise web.HTTPFound("http://10.1.2.3/secret")

    async def flaky(request):
        state["flaky"] += 1
        if state["flaky"] < 3:
            return await record(request, web.Response(status=503))
        return await ok(request)

    async def busy(request):
        state["busy"] += 1
        if state["busy"] == 1:
            return await record(request, web.Response(status=429, headers={"Retry-After": "1"}))
        return await ok(request)

    async def slow(request):
        await asyncio.sleep(3)
        return await ok(request)

    async def noai(request):
        return await record(request, web.Response(body=b"x", headers={"X-Robots-Tag": "otherbot: noindex, noai"}))

    async def noai_us(request):
        return await record(request, web.Response(body=b"x", headers={"X-Robots-Tag": "clipcrawl: noimageai"}))

    app = web.Application()
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/ok", ok)
    app.router.add_get("/private/x", ok)
    app.router.add_get("/big", big)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/to-private", to_private)
    app.router.add_get("/flaky", flaky)
    app.router.add_get("/busy", busy)
    app.router.add_get("/slow", slow)
    app.router.add_get("/noai", noai)
    app.router.add_get("/noai-us", noai_us)
    return app


async def _serve(hits):
    runner = web.AppRunner(_app(hits))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def _run(coro):
    return asyncio.run(coro)


def _cfg(**kw):
    base = dict(user_agent=UA, timeout=2, max_bytes=1000, retries=0, allow_private=True, max_redirects=5)
    base.update(kw)
    return FetchConfig(**base)


def _disallow_noai(resp):
    return robots_tag_disallows(resp.headers.getall("X-Robots-Tag", []), "clipcrawl", ["noai", "noimageai"])


def test_fetch_behaviours():
    async def main():
        hits: dict = {}
        runner, base = await _serve(hits)
        try:
            async with Fetcher(_cfg(retries=3, backoff_base=0.01)) as f:
                r = await f.fetch(base + "/ok")
                assert r.ok and r.body == b"x" * 100 and r.status == 200
                r = await f.fetch(base + "/private/x")
                assert r.error_kind == "robots" and "/private/x" not in hits
                r = await f.fetch(base + "/big")
                assert r.error_kind == "too_large"
                r = await f.fetch(base + "/redirect/0")
                assert r.error_kind == "redirect" and "too many" in r.error
                r = await f.fetch(base + "/loop")
                assert r.error_kind == "redirect" and "loop" in r.error
                r = await f.fetch(base + "/nope")
                assert r.error_kind == "http" and r.status == 404 and r.error.startswith("HTTP 404")
                r = await f.fetch(base + "/flaky")
                assert r.ok and r.attempts == 3
                t0 = time.monotonic()
                r = await f.fetch(base + "/busy")
                assert r.ok and r.attempts == 2 and time.monotonic() - t0 >= 0.9  # honoured Retry-After: 1
                r = await f.fetch(base + "/noai", accept=_disallow_noai)
                assert r.ok  # scoped to another bot
                r = await f.fetch(base + "/noai-us", accept=_disallow_noai)
                assert r.error_kind == "rejected" and r.error == "noimageai"
                assert f.robots.fetches == 1  # robots.txt fetched once for the host
            async with Fetcher(_cfg(timeout=0.5)) as f:
                r = await f.fetch(base + "/slow")
                assert r.error_kind == "timeout"
            # private addresses refused unless allowed: loopback, and a redirect hop to 10.x
            async with Fetcher(_cfg(allow_private=False)) as f:
                r = await f.fetch(base + "/ok")
                assert r.error_kind == "blocked" and "/ok" not in hits.get("/ok", [None])[1:]
                r = await f.fetch("http://localhost:1/x")
                assert r.error_kind == "blocked"
            # loopback allowed as an explicit exception, everything else private refused: the redirect
            # hop to 10.1.2.3 is refused before any connection is attempted
            async with Fetcher(_cfg(allow_private=False, allowed_networks=("127.0.0.0/8",))) as f:
                r = await f.fetch(base + "/ok")
                assert r.ok
                r = await f.fetch(base + "/to-private")
                assert r.error_kind == "blocked" and "10.1.2.3" in r.error and r.redirects == 1
        finally:
            await runner.cleanup()

    _run(main())


def test_check_url():
    assert check_url("http://10.1.2.3/secret", allow_private=False)
    assert check_url("http://10.1.2.3/secret", allow_private=True) is None
    assert check_url("http://example.com/x") is None  # names are checked by the resolver


def test_per_host_delay_spaces_requests():
    async def main():
        hits: dict = {}
        runner, base = await _serve(hits)
        try:
            async with Fetcher(_cfg(delay=0.2, per_host_concurrency=4)) as f:
                await asyncio.gather(*(f.fetch(base + "/ok") for _ in range(4)))
            times = sorted(hits["/ok"])
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert min(gaps) >= 0.18
        finally:
            await runner.cleanup()

    _run(main())


@pytest.mark.parametrize(
    "ip,ok",
    [("8.8.8.8", True), ("127.0.0.1", False), ("10.0.0.1", False), ("192.168.1.1", False), ("169.254.1.1", False),
     ("224.0.0.1", False), ("0.0.0.0", False), ("::1", False), ("::ffff:127.0.0.1", False), ("fe80::1", False),
     ("2606:4700::1111", True), ("100.64.0.1", False), ("240.0.0.1", False)],
)
def test_address_allowed(ip, ok):
    assert address_allowed(ip) is ok


def test_pure_helpers():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None
    assert retry_delay(0, 3.0) == 3.0
    assert 0.25 <= retry_delay(0, base=0.5) < 0.75
    assert retry_delay(20, base=0.5, cap=30) == 30
    assert user_agent_token(UA) == "clipcrawl"
    assert robots_tag_disallows(["noindex, nofollow"], "clipcrawl", ["noindex"]) == "noindex"
    assert robots_tag_disallows(["googlebot: noai"], "clipcrawl", ["noai"]) is None
    assert robots_tag_disallows(["clipcrawl: noai"], "clipcrawl", ["noai"]) == "noai"
    assert robots_tag_disallows(["all"], "clipcrawl", ["noai"]) is None
    assert check_url("ftp://x/y") and check_url("file:///etc/passwd")


def test_follow_hook_vets_redirect_targets():
    async def main():
        hits: dict = {}
        runner, base = await _serve(hits)
        try:
            async with Fetcher(_cfg()) as f:
                refuse = lambda u: "not there" if u.endswith("/redirect/2") else None  # noqa: E731
                r = await f.fetch(base + "/redirect/1", follow=refuse)
                assert r.error_kind == "refused" and r.error == "not there" and r.redirects == 1
                assert r.final_url.endswith("/redirect/2")
                r = await f.fetch(base + "/redirect/9", follow=refuse)  # 9 -> 10 -> /ok: allowed
                assert r.ok and r.final_url.endswith("/ok") and r.redirects == 2
        finally:
            await runner.cleanup()

    _run(main())


@pytest.mark.parametrize("robots", [True, False])
@pytest.mark.parametrize("url", ["http://localhost:1/x.jpg", "http://127.0.0.1:1/x.jpg", "http://10.1.2.3/x.jpg"])
def test_blocked_message_says_blocked_once(url, robots):
    """The robots.txt fetch passed its refusal on with a second prefix: 'blocked: blocked: ...'."""
    async def go():
        async with Fetcher(_cfg(allow_private=False, respect_robots=robots)) as f:
            return await f.fetch(url)

    r = asyncio.run(go())
    assert r.error_kind == "blocked" and r.error.startswith("blocked: ") and r.error.count("blocked") == 1, r.error
