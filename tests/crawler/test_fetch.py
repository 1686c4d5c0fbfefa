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


# ------------------------------------------------------------------ failure causes, deadlines, breaker
async def _deadline_app():
    async def first_byte(request):
        await asyncio.sleep(5)
        return web.Response(body=b"late")

    async def trickle(request):  # 1 byte every 0.1 s for far longer than any deadline
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg", "Content-Length": "1000"})
        await resp.prepare(request)
        for _ in range(1000):
            await resp.write(b"x")
            await asyncio.sleep(0.1)
        return resp

    async def stall(request):  # headers and one byte, then nothing
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg", "Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b"x")
        await asyncio.sleep(5)
        return resp

    async def ok(request):
        return web.Response(body=b"ok", content_type="image/jpeg")

    async def missing(request):
        return web.Response(status=404)

    app = web.Application()
    for path, h in (("/first-byte", first_byte), ("/trickle", trickle), ("/stall", stall), ("/ok", ok),
                    ("/missing", missing), ("/robots.txt", missing)):
        app.router.add_get(path, h)
    return app


async def _site(app, port=0):
    runner = web.AppRunner(app, handler_cancellation=True)  # a handler ends when its client goes away
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def test_deadlines_name_the_phase():
    async def main():
        runner, port = await _site(await _deadline_app())
        base = f"http://127.0.0.1:{port}"
        try:
            async with Fetcher(_cfg(timeout=1.2, read_timeout=0.3, respect_robots=False,
                                    respect_tdmrep=False)) as f:
                t0 = time.monotonic()
                r = await f.fetch(base + "/first-byte")
                assert r.error_kind == "timeout" and r.error == "timeout after 0.3s (first byte)", r.error
                r = await f.fetch(base + "/stall")
                assert r.error_kind == "timeout" and r.error == "timeout after 0.3s (body stalled)", r.error
                assert time.monotonic() - t0 < 1.2
                # two timeouts in a row (breaker_timeouts=2) open the host's breaker: its next URL fails at once
                t0 = time.monotonic()
                r = await f.fetch(base + "/ok")
                assert r.error == f"breaker open: 127.0.0.1:{port}: timeout after 0.3s (body stalled)", r.error
                assert time.monotonic() - t0 < 0.1
            async with Fetcher(_cfg(timeout=1.2, read_timeout=0.3, respect_robots=False,
                                    respect_tdmrep=False)) as f:
                t0 = time.monotonic()
                r = await f.fetch(base + "/trickle")  # bytes keep coming: only the total deadline cuts it
                took = time.monotonic() - t0
                assert r.error_kind == "timeout" and r.error == "timeout after 1.2s (total)", r.error
                assert 1.1 < took < 1.8 and r.body is None
        finally:
            await runner.cleanup()

    _run(main())


def test_deadlines_are_exact_above_five_seconds():
    """aiohttp rounds its total deadline up to the loop clock's next whole second when it is 5 s or more; ours is
    not rounded: a request started at a loop time of x.05-x.35 s fails 5 s later, not at the next whole second
    (>= 5.65 s). The last URLs of a run (trickling hosts) waited up to a second past the timeout so."""
    async def main():
        runner, port = await _site(await _deadline_app())
        loop = asyncio.get_running_loop()
        try:
            async with Fetcher(_cfg(timeout=5, respect_robots=False, respect_tdmrep=False)) as f:
                while not 0.05 <= loop.time() % 1 <= 0.35:
                    await asyncio.sleep(0.01)
                t0 = time.monotonic()
                r = await f.fetch(f"http://127.0.0.1:{port}/trickle")  # bytes keep coming: the total deadline cuts it
                took = time.monotonic() - t0
                assert r.error == "timeout after 5s (total)", r.error
                assert 5.0 <= took < 5.4, took
        finally:
            await runner.cleanup()

    _run(main())


def test_network_causes_and_robots_cause():
    async def main():
        runner, port = await _site(await _deadline_app())
        await runner.cleanup()  # nothing listens on the port any more: connection refused
        dead = f"http://127.0.0.1:{port}"
        async with Fetcher(_cfg(breaker_threshold=0)) as f:
            r = await f.fetch(dead + "/a.jpg")
            assert r.error_kind == "robots" and r.error == f"robots.txt unreachable: connection refused (127.0.0.1:{port})"
        async with Fetcher(_cfg(respect_robots=False, respect_tdmrep=False)) as f:
            r = await f.fetch(dead + "/a.jpg")
            assert r.error_kind == "connection" and r.error == f"connection refused (127.0.0.1:{port})"
            assert r.retryable
        runner, port = await _site(await _deadline_app())
        try:
            async with Fetcher(_cfg(respect_robots=False, respect_tdmrep=False)) as f:
                r = await f.fetch(f"https://127.0.0.1:{port}/ok")  # TLS to a plain-HTTP port
                assert r.error_kind == "tls" and r.error.startswith("TLS error"), (r.error_kind, r.error)
        finally:
            await runner.cleanup()

    _run(main())


def test_breaker_opens_fails_fast_and_half_opens():
    async def main():
        app = await _deadline_app()
        runner, port = await _site(app)
        await runner.cleanup()
        url = f"http://127.0.0.1:{port}/ok"
        cfg = _cfg(respect_robots=False, respect_tdmrep=False, breaker_threshold=3, breaker_cooldown=0.3)
        async with Fetcher(cfg) as f:
            for _ in range(3):
                r = await f.fetch(url)
                assert r.error == f"connection refused (127.0.0.1:{port})"
            runner, _ = await _site(app, port)  # the host is back, but the breaker is open
            try:
                r = await f.fetch(url)
                assert r.error_kind == "breaker" and not r.retryable
                assert r.error == f"breaker open: 127.0.0.1:{port}: connection refused (127.0.0.1:{port})"
                assert f.breaker.state(f"127.0.0.1:{port}") == "open" and f.breaker.fast_failures == 1
                await asyncio.sleep(0.35)  # cool-down over: one trial, it succeeds and closes the breaker
                r = await f.fetch(url)
                assert r.ok and f.breaker.state(f"127.0.0.1:{port}") == "closed"
            finally:
                await runner.cleanup()
            for _ in range(3):  # down again: opens again
                await f.fetch(url)
            assert (await f.fetch(url)).error_kind == "breaker"
            await asyncio.sleep(0.35)
            r = await f.fetch(url)  # the trial fails: open again at once, no threshold to reach
            assert r.error_kind == "connection"
            r = await f.fetch(url)
            assert r.error_kind == "breaker" and f.breaker.opened == 3
        runner, port = await _site(app)
        try:
            async with Fetcher(cfg) as f:  # HTTP errors are answers: they never open the breaker
                for _ in range(6):
                    r = await f.fetch(f"http://127.0.0.1:{port}/missing")
                    assert r.error_kind == "http" and r.status == 404
                assert f.breaker.state(f"127.0.0.1:{port}") == "closed"
            async with Fetcher(_cfg(respect_robots=False, respect_tdmrep=False, breaker_threshold=2,
                                    breaker_statuses=(404,))) as f:  # unless configured to count
                await f.fetch(f"http://127.0.0.1:{port}/missing")
                await f.fetch(f"http://127.0.0.1:{port}/missing")
                r = await f.fetch(f"http://127.0.0.1:{port}/missing")
                assert r.error_kind == "breaker" and r.error.endswith("HTTP 404 Not Found")
        finally:
            await runner.cleanup()

    _run(main())


def test_breaker_opens_sooner_on_timeouts():
    """A timeout holds a host slot for a whole timeout: two in a row open the breaker (``breaker_timeouts``), while
    other failures need ``breaker_threshold`` (5); an answer in between starts both counts again."""
    from clipcrawl.crawler.breaker import HostBreaker

    b = HostBreaker(threshold=5, cooldown=10, clock=lambda: 0.0)  # timeout_threshold=2 by default
    for _ in range(4):
        b.failure("a", "connection refused (a:80)")
    assert b.state("a") == "closed"
    b.failure("a", "timeout after 10s (first byte)", timeout=True)  # the fifth failure: open
    assert b.state("a") == "open"
    b.failure("t", "timeout after 10s (total)", timeout=True)
    b.success("t")  # an answer: counts start again
    b.failure("t", "timeout after 10s (total)", timeout=True)
    assert b.state("t") == "closed"
    b.failure("t", "connection reset", timeout=False)
    b.failure("t", "timeout after 10s (body stalled)", timeout=True)  # two timeouts in one streak
    assert b.admit("t") == (False, "breaker open: t: timeout after 10s (body stalled)")
    off = HostBreaker(threshold=5, cooldown=10, timeout_threshold=0)
    for _ in range(4):
        off.failure("h", "timeout after 10s (total)", timeout=True)
    assert off.state("h") == "closed"


def test_breaker_concurrent_requests_share_one_trial():
    from clipcrawl.crawler.breaker import HostBreaker

    now = [0.0]
    b = HostBreaker(threshold=2, cooldown=10, clock=lambda: now[0])
    b.failure("h", "x")
    assert b.admit("h") == (False, None)
    b.failure("h", "timeout after 1s (first byte)", label="h.test")
    assert b.admit("h") == (False, "breaker open: h: timeout after 1s (first byte)")
    now[0] = 10.0
    assert b.admit("h") == (True, None)  # the one trial
    assert b.admit("h")[1] is not None  # the others still fail fast
    b.release("h", True)  # the trial never reached the host: the next caller gets it
    assert b.admit("h") == (True, None)
    b.success("h")
    assert b.admit("h") == (False, None) and b.state("h") == "closed"


def test_error_rate_watch_warns_once(caplog):
    from clipcrawl.crawler.breaker import ErrorRateWatch

    w = ErrorRateWatch(window=100)
    with caplog.at_level("WARNING", logger="clipcrawl.breaker"):
        for i in range(300):
            w.add(i % 10 == 0, "HTTP 404")
        assert w.warned is None
        for _ in range(300):
            w.add(True, "download: DNS timeout for host x.test")
    assert w.warned and "51% of the last 100 results failed (was 10% before)" in w.warned  # as it crossed 50%
    assert "DNS timeout for host x.test" in w.warned
    assert [r.message for r in caplog.records].count(w.warned) == 1


def test_a_host_paused_longer_than_the_timeout_fails_fast_without_a_request():
    """A 429 with Retry-After 60 pauses the host; an image fetch that would wait longer than its timeout for
    that pause fails at once with the reason (no request is sent: politeness holds), so a rate-limited host
    cannot stall a download's tail for minutes (issue 26). Without ``max_pause_wait`` (the crawl) it waits."""
    hits: list[str] = []

    async def limited(request):
        hits.append(request.path)
        return web.Response(status=429, headers={"Retry-After": "60"})

    async def main():
        app = web.Application()
        app.router.add_get("/{name}", limited)
        runner, port = await _site(app)
        base = f"http://127.0.0.1:{port}"
        try:
            async with Fetcher(_cfg(timeout=2, respect_robots=False, respect_tdmrep=False,
                                    max_pause_wait=2)) as f:
                r = await f.fetch(base + "/a.jpg")
                assert r.status == 429 and r.host_pause == 60
                t0 = time.monotonic()
                r = await f.fetch(base + "/b.jpg")
                assert time.monotonic() - t0 < 0.5
                assert r.error_kind == "paused" and "host paused after HTTP 429" in r.error, r.error
                assert "longer than the 2s timeout" in r.error
            assert hits == ["/a.jpg"]
            async with Fetcher(_cfg(timeout=2, respect_robots=False, respect_tdmrep=False, max_retry_after=1,
                                    )) as f:  # no max_pause_wait: the slot waits out the (capped) pause
                await f.fetch(base + "/c.jpg")
                t0 = time.monotonic()
                await f.fetch(base + "/d.jpg")
                assert time.monotonic() - t0 >= 0.9
        finally:
            await runner.cleanup()

    _run(main())
