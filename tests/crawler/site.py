"""Loopback test sites for the crawler: a threaded aiohttp server on 127.0.0.1:<ephemeral port>
that records every request it gets (path, time, user agent).

``rules_site`` exercises one crawler rule per page; ``generated_site`` is a deterministic web of N
pages (links + captioned images) for resume tests and the crawl benchmark.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Hit:
    path: str
    t: float
    user_agent: str


@dataclass
class RequestLog:
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: web.Request) -> None:
        with self.lock:
            self.hits.append(Hit(request.path_qs, time.monotonic(), request.headers.get("User-Agent", "")))

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(h.path for h in self.hits)

    def times(self, path: str) -> list[float]:
        with self.lock:
            return [h.t for h in self.hits if h.path == path]

    def __len__(self) -> int:
        with self.lock:
            return len(self.hits)


class LoopbackServer:
    """``with LoopbackServer(make_app) as srv: srv.base`` -- ``make_app(log, srv)`` builds the app."""

    def __init__(self, make_app: Callable[[RequestLog, LoopbackServer], web.Application]) -> None:
        self.make_app = make_app
        self.log = RequestLog()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()

        @web.middleware
        async def record(request: web.Request, handler):
            self.log.add(request)
            return await handler(request)

        app = self.make_app(self.log, self)
        app.middlewares.append(record)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def html(body: str, head: str = "", title: str = "t", lang: str = "en") -> str:
    return f"<!doctype html><html lang={lang}><head><title>{title}</title>{head}</head><body>{body}</body></html>"


def page(text: str, **headers: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", headers=headers)


# ---------------------------------------------------------------- charset pages
CHARSET_LANGS = {"latin1": "fr", "cp1251": "ru", "sjis": "ja"}  # <html lang>: the detector's hint
CHARSET_TEXTS = {
    "latin1": ("iso-8859-1", "Crème brûlée à la française, déjà dorée",
               "Voilà une recette très simple: la crème brûlée, déjà célèbre. Où est le garçon? Ça coûte cinq "
               "francs à côté du château, près de la forêt où l'été dure."),
    "cp1251": ("windows-1251", "Красная площадь зимой",
               "Это простая страница на русском языке. Мы проверяем, правильно ли определяется кодировка "
               "документа без объявления."),
    "sjis": ("shift_jis", "富士山と桜の写真",
             "これは日本語で書かれた簡単なページです。文字コードの自動判定が正しく動作するかを確認します。"),
}
CHARSET_MODES = ("header", "meta", "neither")


def charset_page(name: str, mode: str) -> web.Response:
    label, alt, text = CHARSET_TEXTS[name]
    head = f'<meta charset="{label}">' if mode == "meta" else ""
    body = html(f"<p>{text}</p><img src=/img/{name}-{mode}.jpg alt='{alt}'>", head=head, title=alt,
                lang=CHARSET_LANGS[name]).encode(label)
    ctype = f"text/html; charset={label}" if mode == "header" else "text/html"
    return web.Response(body=body, headers={"Content-Type": ctype})


# ---------------------------------------------------------------- the rules site
def rules_site(log: RequestLog, srv: LoopbackServer, crawl_delay: float | None = None) -> web.Application:
    state: Counter[str] = Counter()
    port = lambda: srv.port  # noqa: E731 - known only once the server listens

    async def robots(request):
        delay = f"Crawl-delay: {crawl_delay}\n" if crawl_delay else ""
        return web.Response(text=f"User-agent: *\nDisallow: /private/\n{delay}")

    async def index(request):
        p = port()
        links = [f"HTTP://127.0.0.1:{p}/a", f"http://127.0.0.1:{p}/a#top", "/a#x", "./a", "/b/../a",
                 f"//127.0.0.1:{p}/a", "/private/secret", "/nofollow-rel", "/meta-nofollow", "/noai", "/noai-ua",
                 "/noai-other", "/xrobots-noai", "/deep/1", "/redirect-off", "/redirect-private", "/redirect-in",
                 "/busy", "/unavailable", "/doc", "/photo.jpg", "/missing", "mailto:someone@example.invalid",
                 "javascript:void(0)", f"http://localhost:{p}/offsite-link"]
        links += [f"/charset/{n}-{m}" for n in CHARSET_TEXTS for m in CHARSET_MODES]
        return page(html("".join(f'<a href="{u}">l</a>' for u in links), title="Index"))

    async def a(request):
        return page(html(
            "<img src=/img/plain.jpg alt='A plain &amp; simple photo'>"
            "<img src=/img/pixel.gif width=1 height=1 alt=pixel>"
            "<img src='data:image/gif;base64,R0lGOD' data-src=/img/lazy.jpg alt='Lazy loaded'>"
            "<img src=/img/s.jpg srcset='/img/s.jpg 300w, /img/l.jpg 1200w' alt='Responsive'>"
            "<picture><source type=image/svg+xml srcset=/img/v.svg><source srcset='/img/p2.webp 2x, /img/p1.webp 1x'"
            " type=image/webp><img src=/img/p.jpg alt='In a picture'></picture>"
            "<figure><img src=/img/f.jpg alt='alt text'><figcaption>  The <em>figure</em> caption </figcaption></figure>"
            "<img src=/img/logo.svg alt='A logo'><img src=/img/nocaption.jpg>"
            "<noscript><img src=/img/ns.jpg alt='No script'></noscript>"
            "<a href=/b>b</a>", title="Page A", lang="en-gb"))

    async def b(request):
        return page(html("<img src=/img/b.jpg title='Title only' width=640 height=480><a href=/>home</a>"))

    async def nofollow_rel(request):
        return page(html('<a rel="nofollow" href=/nf-target>x</a><a href=/f-target>y</a>'))

    async def meta_nofollow(request):
        return page(html("<img src=/img/mnf.jpg alt='Kept despite nofollow'><a href=/mnf-target>x</a>",
                         head='<meta name="robots" content="index, nofollow">'))

    def noai_page(meta: str, alt: str, link: str = "") -> Callable:
        async def handler(request):
            return page(html(f"<img src=/img/{alt}.jpg alt='{alt}'>{link}", head=meta))
        return handler

    async def xrobots(request):
        return page(html("<img src=/img/xr.jpg alt='xrobots'>"), **{"X-Robots-Tag": "noai"})

    async def deep(request):
        n = int(request.match_info["n"])
        return page(html(f"<img src=/img/deep{n}.jpg alt='Deep {n}'><a href=/deep/{n + 1}>next</a>"))

    async def redirect_off(request):
        raise web.HTTPFound(f"http://localhost:{port()}/landing")

    async def redirect_private(request):
        raise web.HTTPFound("http://10.1.2.3/secret")

    async def redirect_in(request):
        raise web.HTTPMovedPermanently("/redirected-target")

    async def redirected_target(request):
        return page(html("<img src=/img/rt.jpg alt='Redirect target'>"))

    def flaky(name: str, status: int) -> Callable:
        async def handler(request):
            state[name] += 1
            if state[name] == 1:
                return web.Response(status=status, headers={"Retry-After": "1"})
            return page(html(f"<img src=/img/{name}.jpg alt='{name} later'>"))
        return handler

    async def doc(request):
        return web.Response(body=b"%PDF-1.4", content_type="application/pdf")

    async def charset(request):
        name, mode = request.match_info["name"].split("-")
        return charset_page(name, mode)

    async def leaf(request):
        return page(html("<p>leaf</p>"))

    app = web.Application()
    r = app.router
    r.add_get("/robots.txt", robots)
    r.add_get("/", index)
    r.add_get("/a", a)
    r.add_get("/b", b)
    r.add_get("/nofollow-rel", nofollow_rel)
    r.add_get("/meta-nofollow", meta_nofollow)
    r.add_get("/noai", noai_page('<meta name="robots" content="noai, noimageai">', "noai", "<a href=/after-noai>n</a>"))
    r.add_get("/noai-ua", noai_page('<meta name="clipcrawl" content="noimageai">', "noai-ua"))
    r.add_get("/noai-other", noai_page('<meta name="otherbot" content="noai">', "noai-other"))
    r.add_get("/xrobots-noai", xrobots)
    r.add_get("/deep/{n}", deep)
    r.add_get("/redirect-off", redirect_off)
    r.add_get("/redirect-private", redirect_private)
    r.add_get("/redirect-in", redirect_in)
    r.add_get("/redirected-target", redirected_target)
    r.add_get("/busy", flaky("busy", 429))
    r.add_get("/unavailable", flaky("unavailable", 503))
    r.add_get("/doc", doc)
    r.add_get("/charset/{name}", charset)
    for path in ("/f-target", "/after-noai", "/private/secret", "/nf-target", "/mnf-target", "/photo.jpg"):
        r.add_get(path, leaf)
    return app


# ---------------------------------------------------------------- a generated web
def generated_site(n_pages: int = 100, fanout: int = 5, images: int = 3, latency: float = 0.0,
                   crawl_delay: float | None = None) -> Callable[[RequestLog, LoopbackServer], web.Application]:
    """Page i links to pages (i*7 + k) % n for k < fanout and to i+1, and shows ``images`` captioned
    images (one shared by every page: a pair found on many pages)."""

    def make(log: RequestLog, srv: LoopbackServer) -> web.Application:
        async def robots(request):
            return web.Response(text="User-agent: *\nDisallow: /nowhere/\n"
                                + (f"Crawl-delay: {crawl_delay}\n" if crawl_delay else ""))

        async def gen(request):
            i = int(request.match_info["i"])
            if i >= n_pages:
                raise web.HTTPNotFound()
            if latency:
                await asyncio.sleep(latency)
            targets = sorted({(i * 7 + k) % n_pages for k in range(fanout)} | {min(i + 1, n_pages - 1)})
            links = "".join(f'<li><a href="/p/{t}">Page {t}</a></li>' for t in targets)
            imgs = "".join(f'<figure><img src="/img/{i}-{k}.jpg" alt="Photo {k} of page {i}" width=640 height=480>'
                           f"<figcaption>Caption {k} for page {i}</figcaption></figure>" if k % 2 else
                           f'<img src="/img/{i}-{k}.jpg" srcset="/img/{i}-{k}-big.jpg 1600w, /img/{i}-{k}.jpg 800w"'
                           f' alt="Photo {k} of page {i}">' for k in range(images))
            shared = '<img src="/img/logo.png" alt="Site logo">'
            filler = "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20 + "</p>"
            return page(html(f"<nav><ul>{links}</ul></nav><main>{shared}{imgs}{filler}</main>", title=f"Page {i}"))

        app = web.Application()
        app.router.add_get("/robots.txt", robots)
        app.router.add_get("/p/{i}", gen)
        return app

    return make
