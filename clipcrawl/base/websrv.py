"""An aiohttp application served from a thread of its own (its own event loop), for the commands and helpers that
serve while the caller goes on: ``browse``, ``serve``, the demo's website.

``with ThreadedSite(make_app, host, port, name) as site: site.url`` — ``make_app()`` runs on the server's loop (an
aiohttp app may bind to the loop that creates it); port 0 takes a free one (``site.port`` is the bound port). A
start that fails (address in use, a bad app) raises in the caller; leaving the block cleans the runner up on the
server's loop, stops it and joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class ThreadedSite:
    def __init__(self, make_app: Callable[[], Any], host: str = "127.0.0.1", port: int = 0, name: str = "http",
                 timeout: float = 60.0) -> None:
        self.make_app, self.host, self.port, self.name, self.timeout = make_app, host, port, name, timeout
        self.url = ""  # http://host:port (IPv6 hosts in brackets), no trailing slash
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None

    def start(self) -> ThreadedSite:
        from aiohttp import web

        ready, errors = threading.Event(), []

        async def start() -> None:
            self._runner = web.AppRunner(self.make_app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.url = f"http://{host}:{self.port}"

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(start())
            except Exception as e:  # noqa: BLE001 - reported to the caller
                errors.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(self.timeout) or errors:
            self._thread.join(1)
            self.stop()
            raise RuntimeError(f"{self.name} server did not start: {errors[0] if errors else 'timeout'}")
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if loop.is_running():
            if self._runner is not None:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)
        elif self._runner is not None and (self._thread is None or not self._thread.is_alive()):
            loop.run_until_complete(self._runner.cleanup())  # a start that failed half way
        if not loop.is_running():
            loop.close()

    def __enter__(self) -> ThreadedSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
