"""Download and resize images: the :class:`FetchImages` stage.

``FetchImages`` owns an asyncio loop and one :class:`Fetcher` (kept open across batches) in the
main process, and a pool of decoder threads (or processes, ``decoder``) that decodes/resizes
(``clipcrawl.filters.images.pool``), so HTTP and pixels use every core. Work in flight is bounded (``concurrency`` requests plus a small decode
queue), so memory stays flat whatever the batch size. Statuses keep img2dataset's meanings:
``failed_to_download`` (network/HTTP errors, robots.txt, X-Robots-Tag noai..., TDMRep, ai.txt, the image's own
IPTC/C2PA opt-out (read from the original bytes by ``clipcrawl.crawler.imagemeta``), over the byte cap),
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
from clipcrawl.crawler.aitxt import AiTxtCache
from clipcrawl.crawler.breaker import ErrorRateWatch
from clipcrawl.crawler.fetch import FetchConfig, Fetcher
from clipcrawl.crawler.imagemeta import ImageMeta, read_c2pa, read_image_meta, refusal
from clipcrawl.crawler.robots import robots_tag_disallows, user_agent_token
from clipcrawl.filters.images import ResizedImage, ResizeOptions
from clipcrawl.filters.images.pool import DecodePool
from clipcrawl.schemas.config import DownloadConfig
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN, PROVENANCE_FIELDS

XROBOTS_MESSAGE = "Use of image disallowed by X-Robots-Tag directive"
DECODE_QUEUE_PER_WORKER = 8  # bodies waiting for a decoder, per worker (bounds memory)
#: The reorder buffer of ``iter_process``: rows finished while an earlier row of their chunk (or an earlier chunk)
#: is still being fetched wait there, so chunks go out in row order. It holds at most this many rows and bytes of
#: results (encoded images: failures weigh ~nothing); past either, lanes take no new row until the oldest chunk
#: goes out. Sized so that URLs waiting out their timeout delay only themselves: rows keep flowing past them until
#: the buffer holds ~HELD_ROWS (a 10 s timeout at 500 rows/s is 5,000 rows; 256 px JPEGs are ~10-30 KB each).
HELD_ROWS = 8192
HELD_BYTES = 128 << 20
HELD_ROW_OVERHEAD = 512  # bytes counted per held row besides its image (the outcome object and its fields)


# ------------------------------------------------------------------ the stage
@dataclass
class _Outcome:
    status: str
    error: str | None = None
    http_status: int | None = None
    nbytes: int | None = None
    img: ResizedImage | None = None
    meta: ImageMeta | None = None  # what the original bytes' metadata said (None: no body)


@dataclass
class FetchCounters:
    done: int = 0
    success: int = 0
    failed_to_download: int = 0
    failed_to_resize: int = 0
    blocked: int = 0
    watch: ErrorRateWatch = field(default_factory=ErrorRateWatch, repr=False)  # one warning if failures jump

    def add(self, o: _Outcome) -> None:
        self.done += 1
        self.watch.add(o.status == Status.FAILED_TO_DOWNLOAD.value, o.error)
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
    """One ``iter_process`` call: the rows, their outcomes, which rows lanes have taken, and the reorder buffer
    (finished rows of chunks not yet handed out) against its budget."""

    urls: list[str]
    boxes: list[Any]
    outcomes: list[_Outcome | None]
    todo: list[int]  # rows to fetch, in row order: lanes take them in this order
    remaining: list[int]  # rows still being fetched, per chunk
    chunk: int
    max_rows: int = HELD_ROWS
    max_bytes: int = HELD_BYTES
    taken: int = 0  # rows of ``todo`` handed to lanes
    emitted: int = 0  # chunks handed out (the next one to go is ``emitted``)
    held_rows: int = 0  # finished rows of chunks not handed out, and their bytes
    held_bytes: int = 0
    peak_rows: int = 0
    peak_bytes: int = 0
    _held: dict[int, list[int]] = field(default_factory=dict)  # chunk -> [rows, bytes] held
    _events: dict[int, asyncio.Event] = field(default_factory=dict)
    _room: asyncio.Event | None = None

    def event(self, k: int) -> asyncio.Event:
        if k not in self._events:
            self._events[k] = asyncio.Event()
        return self._events[k]

    def fits(self) -> bool:
        return self.held_rows < self.max_rows and self.held_bytes < self.max_bytes

    async def take(self) -> int | None:
        """The next row to fetch (None: all taken). While the buffer is over budget, waits for a chunk to go out;
        rows of the chunk the consumer waits for (the oldest not handed out) are never held back, so a budget
        smaller than a chunk cannot deadlock."""
        while self.taken < len(self.todo):
            i = self.todo[self.taken]
            if i < (self.emitted + 1) * self.chunk or self.fits():
                self.taken += 1
                return i
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()  # set by ``release``, the only place the answer above can change
            await self._room.wait()
        return None

    def finish(self, i: int, o: _Outcome) -> None:
        self.outcomes[i] = o
        k = i // self.chunk
        size = HELD_ROW_OVERHEAD + _image_bytes(o)
        held = self._held.setdefault(k, [0, 0])
        held[0] += 1
        held[1] += size
        self.held_rows += 1
        self.held_bytes += size
        self.peak_rows = max(self.peak_rows, self.held_rows)
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        self.remaining[k] -= 1
        if self.remaining[k] == 0:
            self.event(k).set()

    def release(self, k: int) -> None:
        """Chunk ``k`` went out: its rows leave the buffer, lanes waiting for room look again."""
        rows, nbytes = self._held.pop(k, (0, 0))
        self.held_rows -= rows
        self.held_bytes -= nbytes
        self.emitted = k + 1
        self._events.pop(k, None)
        if self._room is not None:
            self._room.set()

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


def _image_bytes(o: _Outcome) -> int:
    img = o.img
    if img is None:
        return 0
    return len(img.image or b"") + len(img.exif or "")


def fetch_config(cfg: DownloadConfig) -> FetchConfig:
    return FetchConfig(
        user_agent=cfg.user_agent, timeout=cfg.timeout, max_bytes=cfg.max_bytes, retries=cfg.retries,
        allow_private=cfg.allow_private_networks, allowed_networks=tuple(cfg.allowed_networks),
        respect_robots=cfg.respect_robots, per_host_concurrency=cfg.per_host_concurrency, delay=cfg.delay,
        total_concurrency=cfg.concurrency, respect_tdmrep=cfg.respect_tdmrep, blocklists=tuple(cfg.blocklists),
        max_retry_after=cfg.max_retry_after, verify_ssl=not cfg.ignore_ssl_certificate,
        dns_servers=tuple(cfg.dns_servers),
        max_pause_wait=cfg.timeout,  # a URL of a host paused after 429/503 waits one timeout at most
    )


class FetchImages(Stage):
    """Fetch ``url`` of every row still ``success``; add img2dataset's columns and ``image`` bytes."""

    name = "download"
    reports_progress = True
    _transient = ("_loop", "_fetcher", "_pool", "counters", "last_run", "_aitxt")
    #: the reorder buffer's budget (see HELD_ROWS); tests and benches may set it per instance
    held_rows: int = HELD_ROWS
    held_bytes: int = HELD_BYTES
    last_run: _Run | None = None  # the latest ``iter_process`` call's bookkeeping (peak of the buffer)

    def __init__(self, config: DownloadConfig | None = None) -> None:
        self.config = config or DownloadConfig()
        self.counters = FetchCounters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fetcher: Fetcher | None = None
        self._pool: DecodePool | None = None
        self._aitxt: AiTxtCache | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.counters = FetchCounters()
        self._loop = self._fetcher = self._pool = self._aitxt = None

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
        self._aitxt = AiTxtCache(self._fetcher._fetch_robots, self._ua_token) if self.config.respect_ai_txt else None

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
        self._loop = self._fetcher = self._pool = self._aitxt = None
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
        """``table`` in chunks of ``chunk_rows`` rows, yielded in row order, each as soon as all its rows (and
        those of the chunks before it) are done. Lanes take rows in order and go on fetching past a row that is
        slow (a dead host waiting out its timeout delays only itself): rows finished ahead of an unfinished
        chunk wait in a reorder buffer bounded by what it holds (``held_rows`` rows, ``held_bytes`` bytes of
        images), not by how far ahead the row index runs; a lane waits for room only when the buffer is full."""
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
        run = _Run(urls, boxes, [None] * n, todo, remaining, c, max_rows=self.held_rows, max_bytes=self.held_bytes)
        self.last_run = run
        slots = asyncio.Semaphore(self.config.concurrency)
        tasks = [loop.create_task(self._lane(run, slots)) for _ in range(min(lanes, len(todo)))]
        try:
            for k in range(len(remaining)):
                if run.remaining[k]:
                    loop.run_until_complete(run.wait_chunk(k, tasks))
                lo, hi = k * c, min(n, (k + 1) * c)
                out = _attach(table.slice(lo, hi - lo), run.outcomes[lo:hi])
                run.outcomes[lo:hi] = [None] * (hi - lo)  # free the images: the chunk owns them now
                run.release(k)
                if tasks:  # lanes waiting for room step on before the loop pauses for the consumer
                    loop.run_until_complete(asyncio.sleep(0))
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

    async def _lane(self, run: _Run, slots: asyncio.Semaphore) -> None:
        while (i := await run.take()) is not None:
            o = await self._one(run.urls[i], slots, run.boxes[i])
            run.finish(i, o)
            self.counters.add(o)
            self.tick(1, **self.counters.fields())

    def _accept(self, resp: aiohttp.ClientResponse) -> str | None:
        if not self._directives:
            return None
        hit = robots_tag_disallows(resp.headers.getall("X-Robots-Tag", []), self._ua_token, self._directives)
        return f"{XROBOTS_MESSAGE} ({hit})" if hit else None

    async def _one(self, url: str, fetch_slots: asyncio.Semaphore, bbox: list | None = None) -> _Outcome:
        assert self._fetcher is not None
        if self._aitxt is not None and not self._fetcher.blocklist.match_url(url):  # a blocklisted URL: no ai.txt
            verdict = await self._aitxt.check(url)
            if not verdict.allowed:
                return _Outcome(Status.FAILED_TO_DOWNLOAD.value, f"download: {verdict.reason}")
        async with fetch_slots:
            res = await self._fetcher.fetch(url, accept=self._accept)
        if res.error_kind == "blocklisted":
            return _Outcome(Status.BLOCKED.value, f"download: {res.error}", res.status)
        if not res.ok or res.body is None:
            return _Outcome(Status.FAILED_TO_DOWNLOAD.value, f"download: {res.error or 'empty response'}", res.status)
        if self._aitxt is not None:
            why = await self._aitxt_after(url, res.final_url or url, res.headers or {})
            if why:
                return _Outcome(Status.FAILED_TO_DOWNLOAD.value, f"download: {why}", res.status, len(res.body))
        meta = await self._metadata(res.body)
        if self.config.respect_image_metadata and (why := refusal(meta)):
            return _Outcome(Status.FAILED_TO_DOWNLOAD.value, f"download: {why}", res.status, len(res.body), meta=meta)
        assert self._pool is not None
        img = await self._pool.resize(res.body, bbox or None)
        if img.error:
            return _Outcome(Status.FAILED_TO_RESIZE.value, f"resize: {img.error}", res.status, len(res.body), img, meta)
        return _Outcome(Status.SUCCESS.value, None, res.status, len(res.body), img, meta)

    async def _aitxt_after(self, url: str, final: str, headers: dict[str, str]) -> str | None:
        """ai.txt once the response is in: the redirect target's own rules, and for an extensionless path the
        file-type rules by its Content-Type."""
        assert self._aitxt is not None
        if final != url:
            verdict = await self._aitxt.check(final)
            if not verdict.allowed:
                return verdict.reason
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        verdict = await self._aitxt.check_media(final, ctype)
        return None if verdict.allowed else verdict.reason

    async def _metadata(self, body: bytes) -> ImageMeta:
        """The original bytes' metadata: the container walk and XMP here (microseconds), the C2PA reader (only when
        a JUMBF box is present) on a thread."""
        meta = read_image_meta(body, c2pa=False)
        if meta.has_jumbf and meta.unsafe is None:
            mime = {b"\x89P": "image/png", b"RI": "image/webp"}.get(body[:2], "image/jpeg")
            await asyncio.get_running_loop().run_in_executor(None, read_c2pa, body, meta, mime)
        return meta


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
    prov: dict[str, list[Any]] = {f.name: [None] * n for f in PROVENANCE_FIELDS}
    page_license = table.column("page_license").to_pylist() if "page_license" in table.column_names else [None] * n
    for i, o in enumerate(outcomes):
        if o is None:
            continue
        _provenance(prov, i, o.meta, page_license[i])
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
    for f in PROVENANCE_FIELDS:
        table = set_column(table, f.name, pa.array(prov[f.name], f.type))
    return set_column(table, IMAGE_COLUMN, pa.array(images, pa.binary()))


def _provenance(cols: dict[str, list[Any]], i: int, meta: ImageMeta | None, page_license: str | None) -> None:
    """Row ``i``'s provenance columns: the image's metadata (read when a body came), the page's licence otherwise."""
    if meta is not None:
        cols["c2pa_present"][i] = True if meta.c2pa_present else None  # null, not false: an image without any
        # of this metadata keeps every provenance column null, so its <key>.json is what it was before them
        cols["c2pa_validation_state"][i] = meta.c2pa_validation_state
        cols["c2pa_claim_generator"][i] = meta.c2pa_claim_generator
        cols["c2pa_training_mining"][i] = meta.training_mining_text()
        cols["ai_generated"][i], cols["ai_generated_source"][i] = meta.ai_generated_from()
        cols["data_mining"][i] = meta.data_mining
        cols["license"][i], cols["license_source"][i] = meta.license, meta.license_source
    if cols["license"][i] is None and page_license:
        cols["license"][i], cols["license_source"][i] = page_license, "page"
