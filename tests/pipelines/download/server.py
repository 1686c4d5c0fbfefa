"""A hostile image server for downloader tests: one aiohttp app on an ephemeral loopback port,
run in its own thread (the stage under test blocks the main thread in its own event loop).

Every failure mode the downloader must classify has a path; every request is recorded.
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web
from PIL import Image


def make_image(width: int, height: int, fmt: str = "JPEG", mode: str = "RGB", seed: int = 0, **save) -> bytes:
    """A smooth random picture (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(
        b"IEND", b"")


@dataclass
class Request:
    path: str
    query: str
    user_agent: str | None


@dataclass
class HostileServer:
    files: dict[str, bytes] = field(default_factory=dict)  # /f/<name> -> body
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    flaky_left: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    # -------------------------------------------------------------- handlers
    def _app(self) -> web.Application:
        jpeg = make_image(640, 480)

        @web.middleware
        async def record(request: web.Request, handler):
            self.requests.append(Request(request.path, request.query_string, request.headers.get("User-Agent")))
            return await handler(request)

        async def robots(_):
            return web.Response(text="User-agent: *\nDisallow: /private/\n")

        async def file(request):
            name = request.match_info["name"]
            if name not in self.files:
                raise web.HTTPNotFound()
            return web.Response(body=self.files[name], content_type="application/octet-stream")

        async def ok(_):
            return web.Response(body=jpeg, content_type="image/jpeg")

        async def status(request):
            return web.Response(status=int(request.match_info["code"]), text="nope")

        async def flaky(request):  # 503 until the counter runs out, then the image
            name = request.match_info["name"]
            if self.flaky_left.get(name, 0) > 0:
                self.flaky_left[name] -= 1
                return web.Response(status=503, text="busy")
            return web.Response(body=jpeg, content_type="image/jpeg")

        async def slow(_):
            await asyncio.sleep(5)
            return web.Response(body=jpeg, content_type="image/jpeg")

        async def reset(request):  # close the connection without any response
            request.transport.close()
            await asyncio.sleep(0.1)
            return web.Response(body=b"")

        async def drop(request):  # headers promise 100000 bytes, the connection dies after 1000
            resp = web.StreamResponse(headers={"Content-Type": "image/jpeg", "Content-Length": "100000"})
            await resp.prepare(request)
            await resp.write(jpeg[:1000])
            request.transport.close()
            return resp

        async def loop(_):
            raise web.HTTPFound("/loop")

        async def html(_):
            return web.Response(text="<html><body>404 but 200</body></html>", content_type="text/html")

        async def truncated(_):
            return web.Response(body=jpeg[: len(jpeg) // 2], content_type="image/jpeg")

        async def bomb(_):
            return web.Response(body=png_bomb(), content_type="image/png")

        async def xrobots(request):
            value = request.query.get("v", "noai")
            return web.Response(body=jpeg, content_type="image/jpeg", headers={"X-Robots-Tag": value})

        async def big(request):  # chunked (no Content-Length): the cap must hold on the stream
            resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(64):
                await resp.write(b"\xff" * 65536)
            return resp

        app = web.Application(middlewares=[record])
        app.add_routes([
            web.get("/robots.txt", robots), web.get("/f/{name}", file), web.get("/ok.jpg", ok),
            web.get("/private/{name}", ok), web.get("/status/{code}", status), web.get("/flaky/{name}", flaky),
            web.get("/slow.jpg", slow), web.get("/reset.jpg", reset), web.get("/drop.jpg", drop),
            web.get("/loop", loop), web.get("/page.jpg", html), web.get("/truncated.jpg", truncated),
            web.get("/bomb.png", bomb), web.get("/xrobots.jpg", xrobots), web.get("/big.jpg", big),
        ])
        return app

    # -------------------------------------------------------------- lifecycle
    def start(self) -> HostileServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._runner = web.AppRunner(self._app(), handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
