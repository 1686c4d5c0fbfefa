"""A simulated image web for ``bench/web_bench.py``: the world (URLs, hosts, what each host does), the images
behind it, and one server process holding a DNS server (UDP 127.0.0.1:53) and an HTTP server (TCP :80) for
every host. Meant to run inside a private network namespace (``unshare -nm``), where ports 53 and 80 are free
and nothing but loopback exists.

The world, drawn from ``seed``:

* ``n`` URLs over ``hosts`` host names ``hNNNNN.web-bench.test``; each URL's host is drawn from a Zipf law of
  exponent 0.7 over the hosts (at 3,000 hosts the largest holds ~2.7 % of the URLs, half hold <= 2), URLs in
  random order. DNS answers A ``127.0.x.y`` (AAAA: no data), each after ``dns_ms`` (uniform 20-200 ms).
* Host behaviours, chosen among hosts outside the largest 1 % until each reaches its share of URLs:
  ``nxdomain`` (3 %), ``dead`` (2 %: the TCP connection is accepted, the request read, nothing ever answered),
  ``trickle`` (1 %: headers on time, then the body in 60 pieces spread over ``trickle_s`` = 30 s),
  ``ratelimit`` (3 %, hosts with >= after + 2 URLs: after ``ratelimit_after`` = 3 requests, half of them answer
  429 without Retry-After, half 503 with ``Retry-After: 2``); the others are ``ok``. Every host answers after
  its own time to first byte (lognormal, median 50 ms, clamped to 5-1000 ms), and 4 % of the URLs of ``ok``
  hosts are 404 (link rot). robots.txt: 404 on half the hosts, ``Allow: /`` on the others.
* Images: a pool of ``unique`` pictures, each URL pointing at one. Formats in the shares of HTTP Archive's Web
  Almanac 2022, Media chapter ("Image format adoption": JPEG 40.3 %, PNG 28.2 %, GIF 15.9 %, WebP 8.9 % of image
  requests; SVG, ICO, AVIF left out) renormalised to the four raster formats: JPEG 43 %, PNG 30 %, GIF 17 %,
  WebP 10 %; 29 % of the GIFs animated (same chapter), 6 frames. Orientation as the chapter's: 54 % landscape
  (4:3, 3:2, 16:9, 2:1), 33 % square, 13 % portrait (3:4, 2:3). Longest side lognormal, median 480 px,
  sigma 0.65, clamped to 100-3000 px (78 % under 800 px). JPEG/WebP: photo-like (quality 75-90 / 75-85); PNG:
  60 % flat graphics, 40 % photo-like (half of those with alpha); GIF: flat graphics, 64-colour palette.

The server records, per URL index, when the request arrived and when it was done (response written, or the
client gone: the tool gave up), and per host when its robots.txt request was done, for the tail figures; and
counts DNS queries and robots.txt requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import multiprocessing as mp
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FORMATS = {"jpeg": 0.43, "png": 0.30, "gif": 0.17, "webp": 0.10}
EXT = {"jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp"}
MIME = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}
ORIENT = [("landscape", 0.54), ("square", 0.33), ("portrait", 0.13)]
LANDSCAPE = [((4, 3), 0.4), ((3, 2), 0.3), ((16, 9), 0.2), ((2, 1), 0.1)]
PORTRAIT = [((3, 4), 0.6), ((2, 3), 0.4)]
DOMAIN = "web-bench.test"


# ------------------------------------------------------------------ the world
@dataclass
class World:
    n: int
    hosts: int
    seed: int = 0
    unique: int = 300
    share_nxdomain: float = 0.03
    share_dead: float = 0.02
    share_trickle: float = 0.01
    share_ratelimit: float = 0.03
    share_404: float = 0.04
    ratelimit_after: int = 3
    trickle_s: float = 30.0
    dns_ms: tuple[float, float] = (20.0, 200.0)
    ttfb_median_ms: float = 50.0
    url_host: list[int] = field(default_factory=list)  # per URL: host number
    url_image: list[int] = field(default_factory=list)  # per URL: image of the pool
    url_404: list[bool] = field(default_factory=list)
    host_kind: dict[int, str] = field(default_factory=dict)  # hosts not listed are "ok"
    host_ttfb: dict[int, float] = field(default_factory=dict)  # seconds
    host_robots: dict[int, bool] = field(default_factory=dict)  # True: Allow: /, else 404
    images: list[dict] = field(default_factory=list)  # the pool: format, width, height, animated, seed

    @staticmethod
    def host_name(h: int) -> str:
        return f"h{h:05d}.{DOMAIN}"

    @staticmethod
    def host_ip(h: int) -> str:
        return f"127.0.{1 + h // 250}.{2 + h % 250}"

    def url(self, i: int) -> str:
        return f"http://{self.host_name(self.url_host[i])}/p/{i}.{EXT[self.images[self.url_image[i]]['format']]}"

    def kind(self, i: int) -> str:
        k = self.host_kind.get(self.url_host[i], "ok")
        return "404" if k == "ok" and self.url_404[i] else k

    def build(self) -> World:
        rng = np.random.default_rng(self.seed)
        weights = 1.0 / np.arange(1, self.hosts + 1) ** 0.7
        self.url_host = rng.choice(self.hosts, size=self.n, p=weights / weights.sum()).tolist()
        per_host = np.bincount(self.url_host, minlength=self.hosts)
        self.url_image = rng.integers(0, self.unique, self.n).tolist()
        self.url_404 = (rng.random(self.n) < self.share_404).tolist()
        order = rng.permutation(np.arange(max(1, self.hosts // 100), self.hosts)).tolist()
        order = [h for h in order if per_host[h] > 0]
        for kind, share, min_urls in (("nxdomain", self.share_nxdomain, 1), ("dead", self.share_dead, 1),
                                      ("trickle", self.share_trickle, 1),
                                      ("ratelimit", self.share_ratelimit, self.ratelimit_after + 2)):
            got, want, left = 0, share * self.n, []
            for h in order:
                if got < want and min_urls <= per_host[h] and got + per_host[h] <= 1.2 * want + 1:
                    self.host_kind[h] = kind
                    got += int(per_host[h])
                else:
                    left.append(h)  # stays available for the kinds after this one
            order = left
        ttfb = np.clip(rng.lognormal(math.log(self.ttfb_median_ms / 1000), 0.8, self.hosts), 0.005, 1.0)
        self.host_ttfb = {h: float(ttfb[h]) for h in range(self.hosts)}
        self.host_robots = {h: bool(rng.random() < 0.5) for h in range(self.hosts)}
        irng = np.random.default_rng([self.seed, 1])  # the pool depends on seed and unique only (cached)
        self.images = [_draw_image(irng, k) for k in range(self.unique)]
        return self

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> World:
        d = json.loads(Path(path).read_text())
        d["host_kind"] = {int(k): v for k, v in d["host_kind"].items()}
        d["host_ttfb"] = {int(k): v for k, v in d["host_ttfb"].items()}
        d["host_robots"] = {int(k): v for k, v in d["host_robots"].items()}
        d["dns_ms"] = tuple(d["dns_ms"])
        return cls(**d)

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(self.n):
            k = self.kind(i)
            out[k] = out.get(k, 0) + 1
        return out


def _pick(rng: np.random.Generator, items: list) -> object:
    p = np.array([w for _, w in items], dtype=float)
    return items[int(rng.choice(len(items), p=p / p.sum()))][0]


def _draw_image(rng: np.random.Generator, k: int) -> dict:
    fmt = str(_pick(rng, list(FORMATS.items())))
    longest = int(np.clip(rng.lognormal(math.log(480), 0.65), 100, 3000))
    orient = _pick(rng, ORIENT)
    if orient == "square":
        w = h = longest
    else:
        a, b = _pick(rng, LANDSCAPE if orient == "landscape" else PORTRAIT)  # type: ignore[misc]
        if a >= b:
            w, h = longest, max(1, round(longest * b / a))
        else:
            w, h = max(1, round(longest * a / b)), longest
    kind = "photo" if fmt in ("jpeg", "webp") else "graphic"
    if fmt == "png" and rng.random() < 0.4:
        kind = "photo_alpha" if rng.random() < 0.5 else "photo"
    return {"format": fmt, "width": int(w), "height": int(h), "kind": kind,
            "animated": bool(fmt == "gif" and rng.random() < 0.29),
            "quality": int(rng.integers(75, 91) if fmt == "jpeg" else rng.integers(75, 86)), "seed": k}


# ------------------------------------------------------------------ the images
def _photo(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    low = rng.integers(0, 256, (max(2, h // 160), max(2, w // 160), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    mid = rng.integers(0, 256, (max(2, h // 24), max(2, w // 24), 3), dtype=np.uint8)
    tex = np.asarray(Image.fromarray(mid).resize((w, h), Image.Resampling.BILINEAR), np.float32)
    grain = rng.normal(0, 4, (h, w, 1)).astype(np.float32)
    return np.clip(0.65 * base + 0.35 * tex + grain, 0, 255).astype(np.uint8)


def _graphic(w: int, h: int, rng: np.random.Generator, shift: int = 0):
    from PIL import Image, ImageDraw

    palette = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(6)]
    im = Image.new("RGB", (w, h), palette[0])
    d = ImageDraw.Draw(im)
    for j in range(int(rng.integers(6, 24))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 20 + 1, w // 2 + 2)), y0 + int(rng.integers(h // 20 + 1, h // 2 + 2))
        box = (x0 + shift * (j % 3), y0, x1 + shift * (j % 3), y1)
        (d.rectangle if j % 2 else d.ellipse)(box, fill=palette[1 + j % 5])
    for j in range(int(rng.integers(0, 12))):  # text-like strokes
        y = int(rng.integers(0, h))
        d.line((int(rng.integers(0, w // 2)), y, int(rng.integers(w // 2, w)), y), fill=palette[j % 6], width=2)
    return im


def render(spec: dict) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(10_000 + spec["seed"])
    w, h, fmt, buf = spec["width"], spec["height"], spec["format"], io.BytesIO()
    if fmt in ("jpeg", "webp"):
        Image.fromarray(_photo(w, h, rng)).save(buf, "JPEG" if fmt == "jpeg" else "WEBP", quality=spec["quality"])
    elif fmt == "png":
        if spec["kind"] == "graphic":
            _graphic(w, h, rng).save(buf, "PNG", optimize=False)
        else:
            im = Image.fromarray(_photo(w, h, rng))
            if spec["kind"] == "photo_alpha":
                alpha = np.clip(np.linspace(80, 255, w)[None, :].repeat(h, 0), 0, 255).astype(np.uint8)
                im.putalpha(Image.fromarray(alpha))
            im.save(buf, "PNG")
    else:  # gif
        frames = [_graphic(w, h, np.random.default_rng(10_000 + spec["seed"]), shift=4 * f)
                  for f in range(6 if spec["animated"] else 1)]
        frames = [f.quantize(64) for f in frames]
        frames[0].save(buf, "GIF", save_all=len(frames) > 1, append_images=frames[1:], duration=80, loop=0)
    return buf.getvalue()


def image_pool(world: World, cache_root: Path) -> Path:
    """Render (or reuse) the pool's files under a folder named by their specs; returns the folder."""
    key = hashlib.sha256(json.dumps(world.images, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root / f"clipcrawl-webbench-images-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    for k, spec in enumerate(world.images):
        f = folder / f"{k:05d}.{EXT[spec['format']]}"
        if not f.exists():
            tmp = f.with_suffix(".tmp")
            tmp.write_bytes(render(spec))
            tmp.replace(f)
    return folder


def load_pool(world: World, folder: Path) -> list[bytes]:
    return [(folder / f"{k:05d}.{EXT[s['format']]}").read_bytes() for k, s in enumerate(world.images)]


# ------------------------------------------------------------------ the server process
class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.arrived: dict[int, float] = {}
        self.done: dict[int, tuple[float, str]] = {}
        self.requests = 0
        self.robots = 0
        self.http_total = 0  # every HTTP request, routed or not (tdmrep.json, ai.txt ... are 404s outside behave)
        self.per_host: dict[int, int] = {}
        self.dns_queries = 0
        self.dns_nxdomain = 0
        self.robots_done: dict[int, float] = {}  # host -> when its (last) robots.txt request was done
        self.limited_log: list[tuple[int, str, str, float]] = []  # ratelimit hosts: (host, method, path, time)


def _serve(world_path: str, pool_dir: str, conn, seed: int) -> None:  # noqa: ANN001 - a Pipe end
    from aiohttp import web
    from dnslib import QTYPE, RCODE, RR, SOA, A, DNSLabel, DNSRecord

    world = World.load(Path(world_path))
    bodies = load_pool(world, Path(pool_dir))
    by_name = {world.host_name(h): h for h in range(world.hosts)}
    st = _State()
    rng = random.Random(seed)

    class Dns(asyncio.DatagramProtocol):
        def connection_made(self, transport) -> None:  # noqa: ANN001
            self.t = transport

        def datagram_received(self, data: bytes, addr) -> None:  # noqa: ANN001
            try:
                q = DNSRecord.parse(data)
            except Exception:  # noqa: BLE001 - not DNS
                return
            st.dns_queries += 1
            name = str(q.q.qname).rstrip(".").lower()
            h = by_name.get(name)
            reply = q.reply()
            soa = RR(DNSLabel(DOMAIN + "."), QTYPE.SOA, ttl=60,
                     rdata=SOA("ns." + DOMAIN + ".", "admin." + DOMAIN + ".", (1, 3600, 600, 86400, 60)))
            if h is None or world.host_kind.get(h) == "nxdomain":
                reply.header.rcode = RCODE.NXDOMAIN
                reply.add_auth(soa)
                st.dns_nxdomain += 1
            elif QTYPE[q.q.qtype] == "A":
                reply.add_answer(RR(q.q.qname, QTYPE.A, ttl=300, rdata=A(world.host_ip(h))))
            else:
                reply.add_auth(soa)  # no AAAA
            delay = rng.uniform(*world.dns_ms) / 1000
            asyncio.get_running_loop().call_later(delay, self.t.sendto, reply.pack(), addr)

    def host_of(request: web.Request) -> int | None:
        return by_name.get((request.host or "").split(":")[0].lower())

    async def robots(request: web.Request) -> web.StreamResponse:
        h = host_of(request)
        st.robots += 1
        if h is None:
            raise web.HTTPNotFound()
        return await behave(request, h, None)

    async def image(request: web.Request) -> web.StreamResponse:
        h = host_of(request)
        i = int(request.match_info["i"])
        if h is None or i >= world.n or world.url_host[i] != h:
            raise web.HTTPNotFound()
        st.arrived.setdefault(i, time.monotonic())
        return await behave(request, h, i)

    async def behave(request: web.Request, h: int, i: int | None) -> web.StreamResponse:
        st.requests += 1
        st.per_host[h] = nth = st.per_host.get(h, 0) + 1  # this request's rank at its host, on arrival
        kind = world.host_kind.get(h, "ok")
        if kind == "ratelimit":
            st.limited_log.append((h, request.method, request.path, time.monotonic()))
        outcome = "?"
        try:
            if kind == "dead":
                outcome = "gave up"
                await asyncio.sleep(3600)
            await asyncio.sleep(world.host_ttfb[h])
            if kind == "ratelimit" and nth > world.ratelimit_after:
                outcome = "limited"
                if h % 2:
                    return web.Response(status=429, text="Too Many Requests")
                return web.Response(status=503, text="Service Unavailable", headers={"Retry-After": "2"})
            if i is None:  # robots.txt
                outcome = "robots"
                if world.host_robots[h]:
                    return web.Response(text="User-agent: *\nAllow: /\n")
                return web.Response(status=404, text="Not Found")
            if kind == "ok" and world.url_404[i]:
                outcome = "404"
                return web.Response(status=404, text="Not Found")
            spec = world.images[world.url_image[i]]
            body = bodies[world.url_image[i]]
            if kind == "trickle":
                outcome = "gave up"
                resp = web.StreamResponse(headers={"Content-Type": MIME[spec["format"]],
                                                   "Content-Length": str(len(body))})
                await resp.prepare(request)
                pieces = 60
                step = -(-len(body) // pieces)
                for k in range(0, len(body), step):
                    await resp.write(body[k:k + step])
                    await asyncio.sleep(world.trickle_s / pieces)
                outcome = "trickled"
                return resp
            outcome = "200"
            return web.Response(body=body, content_type=MIME[spec["format"]])
        except (asyncio.CancelledError, ConnectionError):
            outcome = "gave up" if outcome != "200" else outcome
            raise
        finally:
            if i is not None:
                st.done[i] = (time.monotonic(), outcome)
            else:
                st.robots_done[h] = time.monotonic()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Dns, local_addr=("127.0.0.1", 53))
        @web.middleware
        async def count(request: web.Request, handler):  # noqa: ANN001, ANN202
            st.http_total += 1
            return await handler(request)

        app = web.Application(middlewares=[count])
        app.add_routes([web.get("/robots.txt", robots), web.get("/p/{i:\\d+}.{ext}", image)])
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "0.0.0.0", 80, backlog=4096)
        await site.start()

        def control() -> None:
            while True:
                try:
                    cmd = conn.recv()
                except EOFError:
                    return
                done = threading.Event()
                box: dict = {}

                def run(cmd=cmd, box=box, done=done) -> None:
                    if cmd == "reset":
                        st.reset()
                        box["r"] = "ok"
                    elif cmd == "dump":
                        box["r"] = {"arrived": st.arrived, "done": st.done, "requests": st.requests,
                                    "robots": st.robots, "dns_queries": st.dns_queries,
                                    "dns_nxdomain": st.dns_nxdomain, "limited_log": st.limited_log,
                                    "robots_done": st.robots_done, "http_total": st.http_total}
                    done.set()

                loop.call_soon_threadsafe(run)
                done.wait()
                conn.send(box["r"])

        threading.Thread(target=control, daemon=True).start()
        conn.send("ready")
        await asyncio.Event().wait()

    asyncio.run(main())


class SimServer:
    """The world's DNS + HTTP server in a process of its own."""

    def __init__(self, world_path: Path, pool_dir: Path, seed: int = 0) -> None:
        self.conn, child = mp.Pipe()
        self.proc = mp.get_context("spawn").Process(target=_serve, args=(str(world_path), str(pool_dir), child, seed),
                                                    daemon=True)
        self.proc.start()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("the simulated web's server did not start")

    def call(self, cmd: str):  # noqa: ANN201
        self.conn.send(cmd)
        return self.conn.recv()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join(5)
