"""Download and resize images: the :class:`FetchImages` stage and the ``download`` pass.

``FetchImages`` owns an asyncio loop and one :class:`Fetcher` (kept open across batches) in the
main process, and a process pool that decodes/resizes (``clipcrawl.filters.images``), so HTTP and
pixels use every core. Work in flight is bounded (``concurrency`` requests plus a small decode
queue), so memory stays flat whatever the batch size. Statuses keep img2dataset's meanings:
``failed_to_download`` (network/HTTP errors, robots.txt, X-Robots-Tag noai..., over the byte cap),
``failed_to_resize`` (undecodable, too small, aspect ratio, pixel bomb), ``success``.

The pass (:func:`download`) is img2dataset's loop: input -> shards -> FetchImages -> write_shard;
finished shards are skipped (resume), and ``retry_failed`` refetches only the failed_to_download
rows of finished shards and rewrites those shards (img2dataset #452). Output memory grows with
``samples_per_shard`` (the resized images of one shard are written together).
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.progress import Progress, log
from clipcrawl.base.shardfiles import IMAGE_EXTS, ShardRef, is_done, read_images
from clipcrawl.base.stage import Stage, set_column
from clipcrawl.base.storage import configure_storage, fs_and_path, read_parquet
from clipcrawl.crawler.fetch import FetchConfig, Fetcher
from clipcrawl.crawler.robots import robots_tag_disallows, user_agent_token
from clipcrawl.filters.images import ResizedImage, ResizeOptions
from clipcrawl.filters.images.pool import DecodePool
from clipcrawl.pipelines.inputs import plan_input_shards
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas.config import ConfigError, DownloadConfig, OutputConfig, UrlListConfig
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

    def add(self, o: _Outcome) -> None:
        self.done += 1
        if o.status == Status.SUCCESS.value:
            self.success += 1
        elif o.status == Status.FAILED_TO_DOWNLOAD.value:
            self.failed_to_download += 1
        else:
            self.failed_to_resize += 1

    def fields(self) -> dict[str, Any]:
        err = (self.done - self.success) / self.done if self.done else 0.0
        return {"ok": self.success, "dl_err": self.failed_to_download, "resize_err": self.failed_to_resize,
                "err": f"{err:.1%}"}


def fetch_config(cfg: DownloadConfig) -> FetchConfig:
    return FetchConfig(
        user_agent=cfg.user_agent, timeout=cfg.timeout, max_bytes=cfg.max_bytes, retries=cfg.retries,
        allow_private=cfg.allow_private_networks, allowed_networks=tuple(cfg.allowed_networks),
        respect_robots=cfg.respect_robots, per_host_concurrency=cfg.per_host_concurrency, delay=cfg.delay,
        total_concurrency=cfg.concurrency,
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
        self._pool = DecodePool(ResizeOptions.from_config(self.config), self.workers).start()
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

    def _accept(self, resp: aiohttp.ClientResponse) -> str | None:
        if not self._directives:
            return None
        hit = robots_tag_disallows(resp.headers.getall("X-Robots-Tag", []), self._ua_token, self._directives)
        return f"{XROBOTS_MESSAGE} ({hit})" if hit else None

    async def _process(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        urls = table.column("url").to_pylist()
        before = table.column("status").to_pylist() if "status" in table.column_names else ["success"] * n
        outcomes: list[_Outcome | None] = [None] * n
        todo = iter([i for i in range(n) if before[i] == Status.SUCCESS.value])
        fetch_slots = asyncio.Semaphore(self.config.concurrency)
        lanes = self.config.concurrency + DECODE_QUEUE_PER_WORKER * self.workers

        async def lane() -> None:
            for i in todo:
                o = await self._one(urls[i], fetch_slots)
                outcomes[i] = o
                self.counters.add(o)
                self.tick(1, **self.counters.fields())

        await asyncio.gather(*(lane() for _ in range(lanes)))
        return _attach(table, outcomes)

    async def _one(self, url: str, fetch_slots: asyncio.Semaphore) -> _Outcome:
        assert self._fetcher is not None
        async with fetch_slots:
            res = await self._fetcher.fetch(url, accept=self._accept)
        if not res.ok or res.body is None:
            return _Outcome(Status.FAILED_TO_DOWNLOAD.value, f"download: {res.error or 'empty response'}", res.status)
        assert self._pool is not None
        img = await self._pool.resize(res.body)
        if img.error:
            return _Outcome(Status.FAILED_TO_RESIZE.value, f"resize: {img.error}", res.status, len(res.body), img)
        return _Outcome(Status.SUCCESS.value, None, res.status, len(res.body), img)


_COLUMNS = (("width", pa.int32()), ("height", pa.int32()), ("original_width", pa.int32()),
            ("original_height", pa.int32()), ("exif", pa.string()), ("sha256", pa.string()),
            ("mime_type", pa.string()), ("bytes", pa.int64()), ("http_status", pa.int16()))


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
            for name in ("original_width", "original_height", "exif", "sha256", "mime_type"):
                cols[name][i] = getattr(img, name)
            if o.status == Status.SUCCESS.value:
                cols["width"][i], cols["height"][i], images[i] = img.width, img.height, img.image
    table = set_column(table, "status", pa.array(status, pa.string()))
    table = set_column(table, "error_message", pa.array(errors, pa.string()))
    for name, typ in _COLUMNS:
        table = set_column(table, name, pa.array(cols[name], typ))
    return set_column(table, IMAGE_COLUMN, pa.array(images, pa.binary()))


# ------------------------------------------------------------------ the pass
@dataclass
class DownloadSummary:
    out: str
    shards_written: int = 0
    shards_skipped: int = 0
    shards_retried: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    fetched: int = 0  # rows fetched in this run (skipped shards not counted)
    bytes_downloaded: int = 0
    duration: float = 0.0

    @property
    def rate(self) -> float:
        return self.fetched / self.duration if self.duration > 0 else 0.0

    def count(self, table: pa.Table) -> None:
        for s in table.column("status").to_pylist():
            self.status_counts[s] = self.status_counts.get(s, 0) + 1


def download(urls: UrlListConfig, out: str, config: DownloadConfig | None = None,
             output: OutputConfig | None = None, retry_failed: bool = False) -> DownloadSummary:
    """Download ``urls`` into img2dataset-compatible shards under ``out``; resumable."""
    config, output = config or DownloadConfig(), output or OutputConfig()
    out = str(out).rstrip("/")
    configure_storage(out, output.storage_options)
    summary = DownloadSummary(out)
    stage = FetchImages(config)
    t0 = time.monotonic()
    writer = ThreadPoolExecutor(1, thread_name_prefix="shard-writer")  # a shard is written while the next downloads
    pending: Future | None = None
    with Progress("download", unit="img") as bar:
        stage.progress = bar
        try:
            for shard in plan_input_shards(urls, output.samples_per_shard):
                ref = ShardRef.of(out, shard.id)
                if is_done(ref):
                    old = _check_same_input(ref, shard.table)
                    if retry_failed and _retry_shard(stage, ref, config, output):
                        summary.shards_retried += 1
                        old = read_parquet(ref.parquet, columns=["status"])
                    else:
                        summary.shards_skipped += 1
                    summary.count(old)
                    continue
                start = time.time()
                result = stage(shard.table)
                result = set_column(result, "shard", pa.array([ref.name] * result.num_rows, pa.string()))
                nbytes = int(pc.sum(result.column("bytes")).as_py() or 0)
                if pending is not None:
                    pending.result()  # at most one shard waits for the disk; its errors surface here
                pending = writer.submit(write_shard, ref, result, output_format=output.output_format,
                                        image_ext=config.encode_format, start_time=start, bytes_downloaded=nbytes)
                summary.shards_written += 1
                summary.bytes_downloaded += nbytes
                summary.count(result)
            if pending is not None:
                pending.result()
        finally:
            writer.shutdown(wait=True)
            stage.teardown()
    summary.duration = time.monotonic() - t0
    summary.fetched = stage.counters.done
    return summary


def _check_same_input(ref: ShardRef, planned: pa.Table) -> pa.Table:
    old = read_parquet(ref.parquet, columns=["key", "status"])
    if old.column("key").to_pylist() != planned.column("key").to_pylist():
        raise ConfigError(
            f"{ref.parquet}: this finished shard holds other samples than input shard {ref.name} "
            f"(fix: resume with the same input and --samples-per-shard, or write to a new --out)"
        )
    return old


def _old_images(ref: ShardRef, table: pa.Table, output_format: str) -> dict[str, bytes]:
    if output_format == "parquet":
        if "jpg" not in table.column_names:
            return {}
        return {k: v for k, v in zip(table.column("key").to_pylist(), table.column("jpg").to_pylist()) if v}
    if output_format == "webdataset":
        return read_images(ref)
    fs, folder = fs_and_path(ref.path(""))
    out = {}
    for f in fs.ls(folder, detail=False) if fs.isdir(folder) else []:
        base = f.rsplit("/", 1)[-1]
        key, _, ext = base.partition(".")
        if ext in IMAGE_EXTS:
            with fs.open(f, "rb") as fh:
                out[key] = fh.read()
    return out


def _retry_shard(stage: FetchImages, ref: ShardRef, config: DownloadConfig, output: OutputConfig) -> bool:
    """Refetch the failed_to_download rows of a finished shard and rewrite it. False: none to retry."""
    table = read_parquet(ref.parquet)
    status = table.column("status").to_pylist()
    idx = [i for i, s in enumerate(status) if s == Status.FAILED_TO_DOWNLOAD.value]
    if not idx:
        return False
    images = _old_images(ref, table, output.output_format)
    if "jpg" in table.column_names and output.output_format == "parquet":
        table = table.drop_columns(["jpg"])
    start = time.time()
    sub = table.take(pa.array(idx, pa.int64()))
    sub = set_column(sub, "status", pa.array([Status.SUCCESS.value] * len(idx), pa.string()))
    sub = set_column(sub, "error_message", pa.nulls(len(idx), pa.string()))
    new = stage(sub)
    merged = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        if name in new.column_names:
            for j, v in zip(idx, new.column(name).to_pylist()):
                values[j] = v
        merged[name] = pa.array(values, table.schema.field(name).type)
    keys, ok = merged["key"].to_pylist(), merged["status"].to_pylist()
    image_col = [images.get(k) if s == Status.SUCCESS.value else None for k, s in zip(keys, ok)]
    for j, img in zip(idx, new.column(IMAGE_COLUMN).to_pylist()):
        image_col[j] = img
    merged[IMAGE_COLUMN] = pa.array(image_col, pa.binary())
    result = pa.table(merged)
    fs, stats_path = fs_and_path(ref.stats)
    fs.rm(stats_path)  # not done while rewriting: a crash here means a plain resume redoes the shard
    nbytes = int(pc.sum(result.column("bytes")).as_py() or 0)
    write_shard(ref, result, output_format=output.output_format, image_ext=config.encode_format,
                   start_time=start, bytes_downloaded=nbytes)
    log.info("shard %s: retried %d failed downloads", ref.name, len(idx))
    return True
