"""A per-origin cache of what a site publishes once for all its URLs (robots.txt, tdmrep.json): loaded at
most once at a time per origin (concurrent callers await the same load), kept until it expires."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar


class Expiring(Protocol):
    expires: float  # time.monotonic() after which the entry is loaded again


E = TypeVar("E", bound=Expiring)


class OriginCache(Generic[E]):
    def __init__(self, load: Callable[[str], Awaitable[E]]) -> None:
        self._load = load
        self.entries: dict[str, E] = {}
        self._pending: dict[str, asyncio.Future[E]] = {}

    async def get(self, origin: str) -> E:
        entry = self.entries.get(origin)
        if entry is not None and entry.expires > time.monotonic():
            return entry
        fut = self._pending.get(origin)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._pending[origin] = fut
        try:
            entry = await self._load(origin)
            self.entries[origin] = entry
            fut.set_result(entry)
            return entry
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._pending.pop(origin, None)
