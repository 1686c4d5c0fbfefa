"""Download and resize images: the :class:`FetchImages` stage.

``FetchImages`` owns an asyncio loop and one :class:`Fetcher` (kept open across batches) in the
main process, and a pool of decoder threads (or processes, ``decoder``) that decodes/resizes
(``clipcrawl.filters.images.pool``), so HTTP and pixels use every core. Work in flight is bounded (``concurrency`` requests plus a small decode
queue), so memory stays flat whatever the batch size. Statuses keep img2dataset's meanings:
``failed_to_download`` (network/HTTP errors, robots.txt, X-Robots-Tag noai..., TDMRep, over the byte cap),
``failed_to_resize`` (undecodable, too small, aspect ratio, pixel bomb), ``success``; and ``blocked``
(a blocklist rule; URL/domain rules before any request, hash rules on the body).

"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pyarrow as pa

from clipcrawl.base.stage import Stage, set_column
from clipcrawl.crawler.fetch import FetchConfig, Fetcher
from clipcrawl.crawler.robots import robots_tag_disallows, user_agent_token
from clipcrawl.filters.images import ResizedImage, ResizeOptions
from clipcrawl.filters.images.pool import DecodePool
from clipcrawl.schemas.config import DownloadConfig
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN

XROBOTS_MESSAGE = "Use of image disallowed by X-Robots-Tag directive"
DECODE_QUEUE_PER_WORKER = 8  # bodies waiting for a decoder, per worker (bounds memory)


# ------------------------------------------------------------------ the stage
@dataclass
class _Outcome:
    status: str
    error: str | None = None
    http_status: int | None = None
    nbytes: int | None = None
    img: ResizedImage | None = None


@dataclass
class FetchCounters:
    done: int = 0
    success: int = 0
    failed_to_download: int = 0
    failed_to_resize: int = 0
    blocked: int = 0

    def add(self, o: _Outcome) -> None:
        self.done += 1
        if o.status == Status.SUCCESS.value:
            self.success += 1
        elif o.status == Status.FAILED_TO_DOWNLOAD.value:
            self.failed_to_download += 1
        elif o.status == Status.BLOCKED.value:
            self.blocked += 1
        else:
            self.failed_to_resize += 1

    def fields(self) -> dict[str, Any]:
        err = (self.done - self.success) / self.done if self.done else 0.0
        return {"ok": self.success, "dl_err": self.failed_to_download, "resize_err": self.failed_to_resize,
                "err": f"{err:.1%}"}


@dataclass
class _Run:
    """One ``iter_process`` call: the rows, their outcomes, and how far fetching may run ahead."""

    table: pa.Table
    urls: list[str]
    boxes: list[Any]
    outcomes: list[_Outcome | None]
    remaining: list[int]  # rows still being fetched, per chunk
    chunk: int
    window: int
    base: int = 0  # first row of the oldest chunk not yet yielded
    _events: dict[int, asyncio.Event] = field(default_factory=dict)
    _cond: asyncio.Condition | None = None

    @property
    def cond(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def event(self, k: int) -> asyncio.Event:
        if k not in self._events:
            self._events[k] = asyncio.Event()
        return self._events[k]

    async def wait_chunk(self, k: int, tasks: list[asyncio.Task]) -> None:
        """Until chunk ``k`` is done; a lane that failed (a bug) raises here instead of hanging."""
        waiter = asyncio.ensure_future(self.event(k).wait())
        try:
            while self.remaining[k]:
                for t in tasks:
                    if t.done() and not t.cancelled() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                pending = [t for t in tasks if not t.done()]
                if not pending:
                    raise RuntimeError(f"download: chunk {k} has {self.remaining[k]} rows no lane fetches")
                await asyncio.wait([waiter, *pending], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        self._events.pop(k, None)

    async def advance(self, base: int) -> None:
        self.base = base
        async with self.cond:
            self.cond.notify_all()


def fetch_config(cfg: DownloadConfig) -> FetchConfig:
    return FetchConfig(
        user_agent=cfg.user_agent, timeout=cfg.timeout, max_bytes=cfg.max_bytes, retries=cfg.retries,
        allow_private=cfg.allow_private_networks, allowed_networks=tuple(cfg.allowed_networks),
        respect_robots=cfg.respect_robots, per_host_concurrency=cfg.per_host_concurrency, delay=cfg.delay,
        total_concurrency=cfg.concurrency, respect_tdmrep=cfg.respect_tdmrep, blocklists=tuple(cfg.blocklists),
        max_retry_after=cfg.max_retry_after, verify_ssl=not cfg.ignore_ssl_certificate,
    )


class FetchImages(Stage):
    """Fetch ``url`` of every row still ``success``; add img2dataset's columns and ``image`` bytes."""

    name = "download"
    reports_progress = True
    _transient = ("_loop", "_fetcher", "_pool", "counters")

    def __init__(self, config: DownloadConfig | None = None) -> None:
        self.config = config or DownloadConfig()
        self.counters = FetchCounters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fetcher: Fetcher | None = None
        self._pool: DecodePool | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.counters = FetchCounters()
        self._loop = self._fetcher = self._pool = None

    # -------------------------------------------------------------- lifecycle
    @property
    def workers(self) -> int:
        return self.config.workers or os.cpu_count() or 1

    def setup(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._fetcher = Fetcher(fetch_config(self.config))
        self._loop.run_until_complete(self._fetcher.__aenter__())
        self._pool = DecodePool(ResizeOptions.from_config(self.config), self.workers,
                                decoder=self.config.decoder).start()
        self._ua_token = user_agent_token(self.config.user_agent)
        self._directives = [d.strip().lower() for d in self.config.disallowed_header_directives if d.strip()]

    def teardown(self) -> None:
        if self._loop is not None:
            # an interrupted batch leaves its fetch tasks pending: cancel them before the session closes
            pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.wait(pending))
            if self._fetcher is not None:
                self._loop.run_until_complete(self._fetcher.__aexit__(None, None, None))
            self._loop.run_until_complete(asyncio.sleep(0.05))  # let aiohttp close its transports
            self._loop.close()
        if self._pool is not None:
            self._pool.close()
        self._loop = self._fetcher = self._pool = None
        self._is_setup = False

    # -------------------------------------------------------------- per batch
    def process(self, table: pa.Table) -> pa.Table:
        assert self._loop is not None
        return self._loop.run_until_complete(self._process(table))

    async def _process(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        urls = table.column("url").to_pylist()
        before = table.column("status").to_pylist() if "status" in table.column_names else ["success"] * n
        outcomes: list[_Outcome | None] = [None] * n
        todo = iter([i for i in range(n) if before[i] == Status.SUCCESS.value])
        bcol = self.config.bbox_col
        boxes = table.column(bcol).to_pylist() if bcol and bcol in table.column_names else [None] * n
        fetch_slots = asyncio.Semaphore(self.config.concurrency)
        lanes = self.config.concurrency + DECODE_QUEUE_PER_WORKER * self.workers

        async def lane() -> None:
            for i in todo:
                o = await self._one(urls[i], fetch_slots, boxes[i])
                outcomes[i] = o
                self.counters.add(o)
                self.tick(1, **self.counters.fields())

        await asyncio.gather(*(lane() for _ in range(lanes)))
        return _attach(table, outcomes)

    def iter_process(self, table: pa.Table, chunk_rows: int) -> Iterator[pa.Table]:
        """``table`` in chunks of ``chunk_rows`` rows, each yielded (in row order) as soon as all its rows are
        done. Fetching runs ahead of the oldest unfinished chunk by at most ``window`` rows, so the HTTP
        pipeline stays full across chunk boundaries while memory holds a bounded number of images."""
        loop = self._loop
        assert loop is not None, "setup() first"
        n, c = table.num_rows, max(1, chunk_rows)
        if n == 0:
            yield _attach(table, [])
            return
        urls = table.column("url").to_pylist()
        before = table.column("status").to_pylist() if "status" in table.column_names else ["success"] * n
        bcol = self.config.bbox_col
        boxes = table.column(bcol).to_pylist() if bcol and bcol in table.column_names else [None] * n
        todo = [i for i in range(n) if before[i] == Status.SUCCESS.value]
        remaining = [0] * -(-n // c)
        for i in todo:
            remaining[i // c] += 1
        lanes = self.config.concurrency + DECODE_QUEUE_PER_WORKER * self.workers
        run = _Run(table, urls, boxes, [None] * n, remaining, c, window=max(2 * c, 2 * lanes))
        slots = asyncio.Semaphore(self.config.concurrency)
        it = iter(todo)
        tasks = [loop.create_task(self._lane(run, it, slots)) for _ in range(min(lanes, len(todo)))]
        try:
            for k in range(len(remaining)):
                if run.remaining[k]:
                    loop.run_until_complete(run.wait_chunk(k, tasks))
                lo, hi = k * c, min(n, (k + 1) * c)
                out = _attach(table.slice(lo, hi - lo), run.outcomes[lo:hi])
                run.outcomes[lo:hi] = [None] * (hi - lo)  # free the images: the chunk owns them now
                loop.run_until_complete(run.advance(hi))
                yield out
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks))
        finally:
            if not loop.is_running() and not loop.is_closed():
                left = [t for t in tasks if not t.done()]
                for t in left:
                    t.cancel()
                if left:
                    loop.run_until_complete(asyncio.wait(left))

    async def _lane(self, run: _Run, todo: Iterator[int], slots: asyncio.Semaphore) -> None:
        for i in todo:
            if i >= run.base + run.window:
                async with run.cond:
                    await run.cond.wait_for(lambda i=i: i < run.base + run.window)
            o = await self._one(run.urls[i], slots, run.boxes[i])
            run.outcomes[i] = o
            self.counters.add(o)
            self.tick(1, **self.counters.fields())
            k = i // run.chunk
            run.remaining[k] -= 1
            if run.remaining[k] == 0:
                run.event(k).set()

    def _accept(self, resp: aiohttp.ClientResponse) -> str | None:
        if not self._directives:
            return None
        hit = robots_tag_disallows(resp.headers.getall("X-Robots-Tag", []), self._ua_token, self._directives)
        return f"{XROBOTS_MESSAGE} ({hit})" if hit else None

    async def _one(self, url: str, fetch_slots: asyncio.Semaphore, bbox: list | None = None) -> _Outcome:
        assert self._fetcher is not None
        async with fetch_slots:
            res = await self._fetcher.fetch(url, accept=self._accept)
        if res.error_kind == "blocklisted":
            return _Outcome(Status.BLOCKED.value, f"download: {res.error}", res.status)
        if not res.ok or res.body is None:
            return _Outcome(Status.FAILED_TO_DOWNLOAD.value, f"download: {res.error or 'empty response'}", res.status)
        assert self._pool is not None
        img = await self._pool.resize(res.body, bbox or None)
        if img.error:
            return _Outcome(Status.FAILED_TO_RESIZE.value, f"resize: {img.error}", res.status, len(res.body), img)
        return _Outcome(Status.SUCCESS.value, None, res.status, len(res.body), img)


_COLUMNS = (("width", pa.int32()), ("height", pa.int32()), ("original_width", pa.int32()),
            ("original_height", pa.int32()), ("exif", pa.string()), ("sha256", pa.string()),
            ("mime_type", pa.string()), ("bytes", pa.int64()), ("http_status", pa.int16()), ("num_faces", pa.int32()),
            ("face_bboxes", pa.list_(pa.list_(pa.float32()))))


def _attach(table: pa.Table, outcomes: list[_Outcome | None]) -> pa.Table:
    """Write the outcomes into ``table``; rows not fetched keep their status and message."""
    n = table.num_rows
    status = table.column("status").to_pylist() if "status" in table.column_names else ["success"] * n
    errors = table.column("error_message").to_pylist() if "error_message" in table.column_names else [None] * n
    cols: dict[str, list[Any]] = {name: [None] * n for name, _ in _COLUMNS}
    images: list[bytes | None] = [None] * n
    for i, o in enumerate(outcomes):
        if o is None:
            continue
        status[i], errors[i] = o.status, o.error
        cols["http_status"][i], cols["bytes"][i] = o.http_status, o.nbytes
        img = o.img
        if img is not None:
            for name in ("original_width", "original_height", "exif", "sha256", "mime_type", "num_faces", "face_bboxes"):
                cols[name][i] = getattr(img, name)
            if o.status == Status.SUCCESS.value:
                cols["width"][i], cols["height"][i], images[i] = img.width, img.height, img.image
    table = set_column(table, "status", pa.array(status, pa.string()))
    table = set_column(table, "error_message", pa.array(errors, pa.string()))
    for name, typ in _COLUMNS:
        table = set_column(table, name, pa.array(cols[name], typ))
    return set_column(table, IMAGE_COLUMN, pa.array(images, pa.binary()))
