"""img2dataset compatibility mode: img2dataset 1.47's inputs, keys, columns and files on our download pass.

:mod:`clipcrawl.img2dataset` maps ``download(...)``'s arguments to :class:`CompatOptions` plus our
``DownloadConfig``; this module reads the inputs the way img2dataset's ``Reader`` does (files matching
``*.<input_format>`` sorted, columns renamed to ``url``/``caption``/the hash type, shards of
``number_sample_per_shard`` rows numbered on across files), fetches every row (repeated rows too, no
``duplicate`` status) with :class:`CompatFetchImages`, and writes img2dataset's files: keys are the shard id
and row, zero-padded (``compute_key``), shards are ``{id:0{oom_shard_count}d}``, the Parquet holds exactly
img2dataset's columns, ``.txt`` only with a caption column, ``_stats.json`` with its fields.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.stage import set_column
from clipcrawl.base.storage import atomic_open, fs_and_path, is_local, json_default, write_parquet
from clipcrawl.pipelines.compat_progress import CompatProgress
from clipcrawl.pipelines.fetch_images import XROBOTS_MESSAGE, FetchImages, _attach, _Outcome
from clipcrawl.pipelines.inputs import InputFile, InputShard, _read_raw
from clipcrawl.pipelines.passes.download import (
    DownloadJob,
    DownloadPass,
    DownloadSummary,
    ShardWritten,
    count_private_refusals,
)
from clipcrawl.pipelines.shardloop import run_pass
from clipcrawl.pipelines.writer import TarShardWriter
from clipcrawl.schemas.config import ConfigError, DownloadConfig, OutputConfig, UrlListConfig
from clipcrawl.schemas.status import Status

INPUT_FORMATS = ("txt", "txt.gz", "csv", "csv.gz", "tsv", "tsv.gz", "json", "json.gz", "jsonl", "jsonl.gz",
                 "parquet")
OUTPUT_FORMATS = ("files", "webdataset", "parquet", "dummy", "tfrecord")
HASHES = ("md5", "sha256", "sha512")
INCREMENTAL_MODES = ("incremental", "overwrite", "extend")
#: img2dataset's reserved names (``arguments_validator``)
RESERVED = ("key", "caption", "url", "width", "height", "original_width", "original_height", "status",
            "error_message", "exif", "md5", "sha256", "sha512")
HASH_COLUMN = "__compat_hash"
_DIMS = ("width", "height", "original_width", "original_height")


@dataclass(frozen=True)
class CompatOptions:
    """What img2dataset decides beyond fetching and resizing (the rest is our ``DownloadConfig``)."""

    input_format: str = "txt"
    url_col: str = "url"
    caption_col: str | None = None
    save_additional_columns: tuple[str, ...] = ()
    verify_hash: tuple[str, str] | None = None  # (input column, hash type)
    compute_hash: str | None = "sha256"
    bbox_col: str | None = None
    output_format: str = "files"
    encode_format: str = "jpg"
    number_sample_per_shard: int = 10000
    oom_shard_count: int = 5
    extract_exif: bool = True
    incremental_mode: str = "incremental"

    @property
    def save_caption(self) -> bool:
        return self.caption_col is not None

    @property
    def extras(self) -> list[str]:
        extra = list(self.save_additional_columns)
        if self.bbox_col is not None:  # img2dataset appends it to save_additional_columns
            extra.append(self.bbox_col)
        return extra

    @property
    def column_list(self) -> list[str]:
        """img2dataset's ``Reader.column_list``: extras, caption, the verified hash, url."""
        if self.input_format in ("txt", "txt.gz"):
            return ["url"]
        cols = self.extras
        if self.caption_col is not None:
            cols = cols + ["caption"]
        if self.verify_hash is not None:
            cols = cols + [self.verify_hash[1]]
        return cols + ["url"]

    def shard_name(self, shard_id: int) -> str:
        return f"{shard_id:0{self.oom_shard_count}d}"

    def key(self, shard_id: int, row: int) -> str:
        """img2dataset's ``compute_key``."""
        oom = math.ceil(math.log10(self.number_sample_per_shard))
        return f"{(10 ** oom) * shard_id + row:0{oom + self.oom_shard_count}d}"


def validate(o: CompatOptions) -> None:
    """img2dataset's argument checks (``arguments_validator``, ``Reader``, writer choice), as ConfigError."""
    if o.compute_hash not in (None, *HASHES):
        raise ConfigError(f"Unsupported hash to compute: {o.compute_hash} (fix: use md5, sha256, sha512 or None)")
    if o.verify_hash is not None and o.verify_hash[1] != o.compute_hash:
        raise ConfigError(f"verify_hash and compute_hash must be the same but got {o.verify_hash[1]} and "
                          f"{o.compute_hash}")
    bad = sorted(set(o.save_additional_columns) & set(RESERVED))
    if bad:
        raise ConfigError(f"You cannot use in save_additional_columns the following columns: {bad} "
                          f"(img2dataset reserves them; fix: remove them)")
    if o.input_format not in INPUT_FORMATS:
        raise ConfigError(f"Invalid input format {o.input_format} (fix: use one of {', '.join(INPUT_FORMATS)})")
    if o.output_format == "tfrecord":
        raise ConfigError("output_format tfrecord needs tensorflow and tensorflow_io, which clipcrawl does not "
                          "drive (fix: use webdataset, or img2dataset itself with `pip install tensorflow "
                          "tensorflow_io`)")
    if o.output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"Invalid output format {o.output_format} (fix: use files, webdataset, parquet or dummy)")
    if o.incremental_mode not in INCREMENTAL_MODES:
        raise ConfigError(f"Unknown incremental mode {o.incremental_mode} (fix: incremental, overwrite or extend)")


# ------------------------------------------------------------------ reading (img2dataset's Reader)
def input_files(url_list: str, input_format: str) -> list[str]:
    fs, path = fs_and_path(url_list)
    if fs.isdir(path):
        files = sorted(fs.glob(path.rstrip("/") + "/*." + input_format))
        if not files:
            raise ConfigError(f"No file found at path {url_list} with extension {input_format} "
                              f"(fix: check url_list and input_format)")
        proto = url_list.split("://", 1)[0] + "://" if "://" in url_list else ""
        return [f if "://" in f or not proto else proto + f for f in files]
    if not fs.exists(path):
        raise ConfigError(f"{url_list}: input not found (fix: pass an existing file or folder)")
    return [url_list]


def read_input(path: str, o: CompatOptions) -> pa.Table:
    """One input file -> img2dataset's renamed columns, ``column_list`` selected, in file order."""
    fmt, gz = o.input_format.removesuffix(".gz"), o.input_format.endswith(".gz")
    raw = _read_raw(InputFile(path, fmt, "gzip" if gz else None), UrlListConfig(path=path, url_col="url"))
    names = raw.column_names
    if o.caption_col is not None:
        names = ["caption" if c == o.caption_col else c for c in names]
    if o.verify_hash is not None:
        names = [o.verify_hash[1] if c == o.verify_hash[0] else c for c in names]
    names = ["url" if c == o.url_col else c for c in names]
    raw = raw.rename_columns(names)
    missing = [c for c in o.column_list if c not in raw.column_names]
    if missing:
        raise ConfigError(f"{path}: column(s) {', '.join(missing)} not found (columns: {', '.join(raw.column_names)})"
                          f" (fix: check url_col, caption_col, save_additional_columns, verify_hash, bbox_col)")
    return raw.select(o.column_list)


def finished_shards(out: str, mode: str) -> tuple[set[int], int]:
    """img2dataset's incremental modes: (shards to skip, first shard id). ``overwrite`` empties ``out``."""
    fs, path = fs_and_path(out)
    if not fs.exists(path):
        fs.makedirs(path, exist_ok=True)
        return set(), 0
    ids = [int(f.rstrip("/").rsplit("/", 1)[-1].split("_")[0]) for f in fs.glob(path.rstrip("/") + "/*.json")]
    if mode == "overwrite":
        fs.rm(path, recursive=True)
        fs.makedirs(path, exist_ok=True)
        return set(), 0
    if mode == "extend":
        return set(), max(ids, default=-1) + 1
    return set(ids), 0


def plan_jobs(url_list: str, out: str, o: CompatOptions, done: set[int], start: int,
              on_file: Any = None) -> Iterator[DownloadJob]:
    """``on_file(index, files, path, rows, shards)``: after each input file is read (what is left to do)."""
    shard_id = start
    files = input_files(url_list, o.input_format)
    for index, path in enumerate(files, 1):
        table = read_input(path, o)
        n = math.ceil(table.num_rows / o.number_sample_per_shard)
        if on_file is not None:
            todo = [i for i in range(n) if shard_id + i not in done]
            rows = sum(min(o.number_sample_per_shard, table.num_rows - i * o.number_sample_per_shard) for i in todo)
            on_file(index, len(files), path, rows, len(todo))
        for i in range(n):
            sid = shard_id + i
            if sid in done:
                continue
            part = table.slice(i * o.number_sample_per_shard, o.number_sample_per_shard)
            keys = pa.array([o.key(sid, r) for r in range(part.num_rows)], pa.string())
            shard = InputShard(sid, part.append_column("key", keys), os.path.basename(path))
            yield DownloadJob(shard, ShardRef(out, o.shard_name(sid)), "new")
        shard_id += n


# ------------------------------------------------------------------ fetching
_HTTP = re.compile(r"^HTTP (\d{3}) ?(.*)$")


def urllib_message(error: str | None) -> str:
    """Our fetch errors in urllib's words where img2dataset's users grep for them (``HTTP Error 404: ...``)."""
    m = _HTTP.match(error or "")
    return f"HTTP Error {m.group(1)}: {m.group(2)}" if m else (error or "empty response")


class CompatFetchImages(FetchImages):
    """Fetch every row; img2dataset's error strings, ``verify_hash``, ``bbox_col`` blurring, ``compute_hash``."""

    def __init__(self, config: DownloadConfig | None = None, hash_name: str | None = None,
                 verify_col: str | None = None, bbox_col: str | None = None) -> None:
        super().__init__(config)
        self.hash_name, self.verify_col, self.bbox_col = hash_name, verify_col, bbox_col
        self._cols = {c: f"in_{c}" for c in (verify_col, bbox_col) if c}  # as CompatDownloadPass.read names them

    def _accept(self, resp: Any) -> str | None:
        return XROBOTS_MESSAGE if super()._accept(resp) else None

    async def _process(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        urls = table.column("url").to_pylist()
        expected = table.column(self._cols[self.verify_col]).to_pylist() if self.verify_col else [None] * n
        boxes = table.column(self._cols[self.bbox_col]).to_pylist() if self.bbox_col else [None] * n
        outcomes: list[_Outcome | None] = [None] * n
        hashes: list[str | None] = [None] * n
        todo = iter(range(n))
        slots = asyncio.Semaphore(self.config.concurrency)

        async def lane() -> None:
            for i in todo:
                outcomes[i], hashes[i] = await self._row(urls[i], slots, expected[i], boxes[i])
                self.counters.add(outcomes[i])
                self.tick(1, **self.counters.fields())

        await asyncio.gather(*(lane() for _ in range(self.config.concurrency + 8 * self.workers)))
        table = _attach(table, outcomes)
        return set_column(table, HASH_COLUMN, pa.array(hashes, pa.string()))

    async def _row(self, url: Any, slots: asyncio.Semaphore, expected: Any, bbox: Any) -> tuple[_Outcome, str | None]:
        assert self._fetcher is not None and self._pool is not None
        if not isinstance(url, str) or not url.strip():
            return _Outcome(Status.FAILED_TO_DOWNLOAD.value, f"unknown url type: {url!r}"), None
        async with slots:
            res = await self._fetcher.fetch(url.strip(), accept=self._accept)
        if not res.ok or res.body is None:
            return _Outcome(Status.FAILED_TO_DOWNLOAD.value, urllib_message(res.error), res.status), None
        digest = hashlib.new(self.hash_name, res.body).hexdigest() if self.hash_name else None
        if self.verify_col and digest != expected:
            return _Outcome(Status.FAILED_TO_DOWNLOAD.value, "hash mismatch", res.status, len(res.body)), None
        img = await self._pool.resize(res.body, bbox if bbox is not None and self.bbox_col else None)
        if img.error:
            return _Outcome(Status.FAILED_TO_RESIZE.value, img.error, res.status, len(res.body), img), None
        return _Outcome(Status.SUCCESS.value, None, res.status, len(res.body), img), digest


# ------------------------------------------------------------------ writing (img2dataset's writers)
def compat_table(inputs: pa.Table, table: pa.Table, o: CompatOptions) -> pa.Table:
    """Exactly img2dataset's Parquet columns, in its order: ``inputs``' columns, then the fetch results."""
    ok = [s == Status.SUCCESS.value for s in table.column("status").to_pylist()]
    hashes = table.column(HASH_COLUMN) if HASH_COLUMN in table.column_names else pa.nulls(table.num_rows, pa.string())
    verify_type = o.verify_hash[1] if o.verify_hash else None
    cols: dict[str, Any] = {c: (hashes if c == verify_type else inputs.column(c)) for c in o.column_list}
    cols["key"] = inputs.column("key")
    cols["status"] = table.column("status")
    cols["error_message"] = table.column("error_message")
    for name in _DIMS:
        cols[name] = pa.array([v if k else None for v, k in zip(table.column(name).to_pylist(), ok)], pa.int32())
    if o.extract_exif:
        cols["exif"] = pa.array([v if k else None for v, k in zip(table.column("exif").to_pylist(), ok)], pa.string())
    if o.compute_hash is not None and o.compute_hash not in cols:
        cols[o.compute_hash] = hashes
    return pa.table(cols)


def sample_json(row: dict[str, Any], o: CompatOptions) -> str:
    """The ``<key>.json`` of one sample, keys in img2dataset's order (the verified hash moves to the end)."""
    meta = dict(row)
    if o.verify_hash is not None and o.compute_hash in meta:
        meta[o.compute_hash] = meta.pop(o.compute_hash)
    return json.dumps(meta, indent=4, default=json_default)


def write_compat_shard(ref: ShardRef, inputs: pa.Table, table: pa.Table, o: CompatOptions,
                       start: float) -> tuple[list[str], dict[str, Any]]:
    """Write one shard as img2dataset's writer ``o.output_format`` does; ``_stats.json`` last.
    Returns the rows' statuses and the stats written."""
    meta = compat_table(inputs, table, o)
    images = table.column("image").to_pylist()
    captions = inputs.column("caption").to_pylist() if "caption" in inputs.column_names else [None] * table.num_rows
    rows = meta.to_pylist()
    ok = [r["status"] == Status.SUCCESS.value and img is not None for r, img in zip(rows, images)]
    ext = o.encode_format

    def members(r: dict[str, Any], img: bytes, caption: Any) -> dict[str, Any]:
        m: dict[str, Any] = {ext: img, "json": sample_json(r, o)}
        if o.save_caption:
            m["txt"] = str(caption) if caption is not None else ""
        return m

    if o.output_format == "webdataset":
        with atomic_open(ref.tar) as f:
            w = TarShardWriter(f)
            for r, img, cap, keep in zip(rows, images, captions, ok):
                if keep:
                    w.add(r["key"], members(r, img, cap))
            w.close()
    elif o.output_format == "files":
        _write_folder(ref, [(r["key"], members(r, img, cap)) for r, img, cap, keep in zip(rows, images, captions, ok)
                            if keep])
    elif o.output_format == "parquet":
        meta = meta.append_column(ext, pa.array([img if k else None for img, k in zip(images, ok)], pa.binary()))
    if o.output_format != "dummy":
        write_parquet(meta, ref.parquet)
    stats = compat_stats(rows, start, time.time())
    with atomic_open(ref.stats, "w") as f:  # last: marks the shard as done
        json.dump(stats, f, indent=4)
    return [r["status"] for r in rows], stats


def compat_stats(rows: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """img2dataset's ``write_stats`` fields."""
    counts = Counter(r["status"] for r in rows)
    status_dict = Counter(r["status"] if r["status"] == Status.SUCCESS.value else r["error_message"] for r in rows)
    return {"count": len(rows), "successes": counts[Status.SUCCESS.value],
            "failed_to_download": counts[Status.FAILED_TO_DOWNLOAD.value],
            "failed_to_resize": counts[Status.FAILED_TO_RESIZE.value], "duration": end - start,
            "start_time": start, "end_time": end, "status_dict": dict(status_dict)}


def _write_folder(ref: ShardRef, samples: list[tuple[str, dict[str, Any]]]) -> None:
    """``files``: ``<shard>/<key>.{jpg,txt,json}``, written aside and renamed into place (local disks)."""
    fs, folder = fs_and_path(ref.path(""))
    tmp = f"{folder}.tmp-{uuid.uuid4().hex[:8]}" if is_local(fs) else folder
    fs.makedirs(tmp, exist_ok=True)
    for key, m in samples:
        for e, value in m.items():
            data = value.encode("utf-8") if isinstance(value, str) else value
            with fs.open(f"{tmp}/{key}.{e}", "wb") as f:
                f.write(data)
    if tmp != folder:
        if fs.exists(folder):
            fs.rm(folder, recursive=True)
        os.replace(tmp, folder)


# ------------------------------------------------------------------ the pass
class CompatDownloadPass(DownloadPass):
    """The download pass with img2dataset's inputs and outputs (no input dedup, no retry mode)."""

    streaming = False  # img2dataset's writers take a whole shard (CompatFetchImages overrides _process)
    write_behind = True

    def __init__(self, config: DownloadConfig, options: CompatOptions, summary: DownloadSummary,
                 reporter: CompatProgress | None = None) -> None:
        super().__init__(config, OutputConfig(samples_per_shard=options.number_sample_per_shard), summary)
        self.options = options
        verify = options.verify_hash[1] if options.verify_hash else None
        fetch = CompatFetchImages(config, options.compute_hash, verify, options.bbox_col)
        fetch.reports_progress = False  # img2dataset's output (CompatProgress), not the generic bars
        fetch.progress = reporter  # rows, on this machine (a Ray actor's copy drops it)
        self.stages = [fetch]
        self.reporter = reporter

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["reporter"] = None  # the driver's terminal (a Ray actor or a Spark task gets the pass without it)
        return state

    def read(self, job: DownloadJob) -> pa.Table:
        job.started = time.time()  # type: ignore[attr-defined] - img2dataset's start_time: before the downloads
        stage = self.stages[0]  # only what the fetch needs: input columns never meet the fetch's own names
        need = ["url", *(c for c in (stage.verify_col, stage.bbox_col) if c)]
        t = job.shard.table
        return pa.table({f"in_{c}" if c != "url" else c: t.column(c) for c in dict.fromkeys(need)})

    def stages_for(self, job: DownloadJob, table: pa.Table) -> list:
        return self.stages

    def write(self, job: DownloadJob, table: pa.Table) -> ShardWritten:
        statuses, stats = write_compat_shard(job.ref, job.shard.table, table, self.options,
                                             getattr(job, "started", time.time()))
        nbytes = sum(b or 0 for b in table.column("bytes").to_pylist())
        return ShardWritten("new", statuses, table.num_rows, nbytes, stats=stats,
                            blocked_private=count_private_refusals(table))

    def publish(self, job: DownloadJob, result: ShardWritten) -> None:
        super().publish(job, result)
        if self.reporter is not None:
            self.reporter.shard_done(job.ref.name, result.stats)


def run_compat(url_list: str, out: str, config: DownloadConfig, options: CompatOptions,
               engine: Any = None, progress: bool | None = None) -> DownloadSummary:
    """Download ``url_list`` into ``out`` exactly as img2dataset lays it out. ``progress``: img2dataset's
    terminal output (:class:`CompatProgress`; None: when stderr is a terminal, False: none)."""
    from clipcrawl.pipelines.lock import hold_dataset

    validate(options)
    out = str(out).rstrip("/")
    with CompatProgress(progress) as reporter:
        with hold_dataset(out, create=True):  # before the finished shards are listed
            done, start = finished_shards(out, options.incremental_mode)
            summary = DownloadSummary(out)
            p = CompatDownloadPass(config, options, summary, reporter if reporter.on else None)
            t0 = time.monotonic()
            summary.shards_skipped = len(done)
            jobs = plan_jobs(url_list, out, options, done, start, reporter.file_planned)
            summary.failures = run_pass(p, jobs, engine, bar=False)
        summary.duration = time.monotonic() - t0
        reporter.finish(summary)
    return summary
