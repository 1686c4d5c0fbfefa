"""Read one input file to the end: records -> pages -> pair rows -> ``pairs/NNNNN.parquet`` chunks.

Its :class:`FileReport` (counters, chunks written, error) is written to ``state/<input>.json``:
with ``status: running`` after every chunk, then ``done`` or ``failed`` at the end, so a rerun
knows which inputs are finished and which chunks belong to an unfinished one.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from clipcrawl.base.captions import annotate_captions
from clipcrawl.base.storage import write_json, write_parquet
from clipcrawl.crawler.commoncrawl.page import PageInfo, Skip
from clipcrawl.crawler.commoncrawl.records import ArchiveError, RawRecord, ReadInfo, iter_records
from clipcrawl.crawler.commoncrawl.warc import page_from_response
from clipcrawl.crawler.commoncrawl.wat import page_from_wat
from clipcrawl.schemas.keys import sample_key, shard_name
from clipcrawl.schemas.tables import PAIRS, conform

SOURCE = "commoncrawl"
READ_TYPES = frozenset({"response", "metadata"})  # the blocks of other records are skipped unread
MAX_ERRORS_KEPT = 5
_COLUMNS = ("key", "url", "caption", "page_url", "caption_source", "page_title", "page_language",
            "img_width_attr", "img_height_attr", "found_at", "alt", "figcaption", "title", "page_license")


@dataclass
class ReadOptions:
    format: str = "auto"  # auto | warc | wat
    max_records: int | None = None  # per input file
    pairs_per_file: int = 100_000  # rows per pairs/NNNNN.parquet chunk
    max_html_bytes: int = 5_000_000  # HTML beyond this is not parsed (the start still is)
    max_record_bytes: int = 20_000_000  # record blocks are read up to this size
    fs_kwargs: dict[str, Any] = field(default_factory=dict)  # fsspec storage options
    blocklists: tuple[str, ...] = ()  # pairs whose image or page URL/domain is listed are dropped ("blocklist")


@functools.lru_cache(maxsize=4)
def _blocklist(paths: tuple[str, ...]):  # noqa: ANN202 - Blocklist, one per process and list of files
    from clipcrawl.crawler.blocklist import Blocklist

    return Blocklist.load(paths)


def _apply_blocklist(page: PageInfo, paths: tuple[str, ...]) -> None:
    """Drop the pairs of a blocklisted page, and blocklisted image URLs (counted as dropped "blocklist")."""
    bl = _blocklist(paths)
    if not bl.has_url_rules or not page.pairs:
        return
    keep = [] if bl.match_url(page.url) else [c for c in page.pairs if bl.match_url(c.url) is None]
    if len(keep) < len(page.pairs):
        page.dropped["blocklist"] = page.dropped.get("blocklist", 0) + len(page.pairs) - len(keep)
        page.pairs = keep


@dataclass
class FileReport:
    input: str
    status: str = "running"  # running | done | failed
    error: str | None = None  # why the file could not be read to its end
    reader: str = "fastwarc"  # fastwarc | warcio | fastwarc+warcio
    note: str | None = None
    records: int = 0  # records read
    pages: int = 0  # HTML pages (WARC) or page records (WAT) examined for images
    noai_pages: int = 0  # pages whose robots directives forbid AI use (no pairs taken)
    pairs: int = 0
    truncated_records: int = 0  # WARC-Truncated records (extracted from what is there)
    skipped: dict[str, int] = field(default_factory=dict)  # records not used, by reason
    dropped: dict[str, int] = field(default_factory=dict)  # images on used pages not kept, by reason
    errors: list[str] = field(default_factory=list)  # first few per-record extraction errors
    chunks: list[str] = field(default_factory=list)  # pairs/<name>.parquet written for this input
    max_records: int | None = None
    limited: bool = False  # stopped at max_records
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def state_name(path: str) -> str:
    """``state/<this>.json`` for an input: readable base name + hash of the full path/URL."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", path.rstrip("/").rsplit("/", 1)[-1])[:100] or "input"
    return f"{base}.{hashlib.sha1(path.encode('utf-8')).hexdigest()[:10]}"


def _bump(d: dict[str, int], key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


class _Chunks:
    """Buffers pair rows and writes them as numbered Parquet files."""

    def __init__(self, out_dir: str, size: int, alloc: Callable[[], int], on_write: Callable[[str], None]) -> None:
        self.out_dir, self.size, self.alloc, self.on_write = out_dir.rstrip("/"), size, alloc, on_write
        self.cols: dict[str, list[Any]] = {c: [] for c in _COLUMNS}

    def add(self, page: PageInfo) -> int:
        c = self.cols
        for p in page.pairs:
            c["key"].append(sample_key(p.url, p.caption))
            c["url"].append(p.url)
            c["caption"].append(p.caption)
            c["page_url"].append(page.url)
            c["caption_source"].append(p.caption_source)
            c["page_title"].append(page.title)
            c["page_language"].append(page.language)
            c["img_width_attr"].append(p.width)
            c["img_height_attr"].append(p.height)
            c["found_at"].append(page.date)
            c["alt"].append(p.alt)
            c["figcaption"].append(p.figcaption)
            c["title"].append(p.title)
            c["page_license"].append(page.license)
        if len(c["key"]) >= self.size:
            self.flush()
        return len(page.pairs)

    def flush(self) -> None:
        if not self.cols["key"]:
            return
        n = len(self.cols["key"])
        table = pa.table({k: self.cols[k] for k in _COLUMNS})
        table = table.append_column("source", pa.array([SOURCE] * n, pa.string()))
        name = shard_name(self.alloc())
        self.on_write(name)  # listed in the state first: a rerun removes it even if killed mid-write
        write_parquet(conform(annotate_captions(table), PAIRS), f"{self.out_dir}/pairs/{name}.parquet")
        self.cols = {c: [] for c in _COLUMNS}


def _page(rec: RawRecord, opts: ReadOptions) -> PageInfo:
    if rec.type == "response":
        if opts.format == "wat":
            raise Skip("response_in_wat_mode")
        return page_from_response(rec, opts.max_html_bytes)
    if rec.type == "metadata" and (rec.content_type or "").startswith("application/json"):
        if opts.format == "warc":
            raise Skip("wat_in_warc_mode")
        return page_from_wat(rec.block, rec.target_uri)
    raise Skip(rec.type or "unknown_type")


def process_file(
    path: str,
    opts: ReadOptions,
    out_dir: str,
    alloc: Callable[[], int],
    report: Callable[[int, int], None] | None = None,
) -> FileReport:
    """Read ``path`` to its end (or ``opts.max_records``); never raises for bad input."""
    t0 = time.monotonic()
    out_dir = out_dir.rstrip("/")
    rep = FileReport(input=path, max_records=opts.max_records)
    state_url = f"{out_dir}/state/{state_name(path)}.json"

    def wrote(name: str) -> None:  # called before the chunk is written
        rep.chunks.append(name)
        rep.seconds = round(time.monotonic() - t0, 3)
        write_json(rep.to_json(), state_url)

    chunks = _Chunks(out_dir, opts.pairs_per_file, alloc, wrote)
    info = ReadInfo()
    cut: str | None = None
    pending_records = pending_pairs = 0
    try:
        for rec in iter_records(path, max_block_bytes=opts.max_record_bytes, fs_kwargs=opts.fs_kwargs, info=info,
                                read_types=READ_TYPES):
            if opts.max_records is not None and rep.records >= opts.max_records:
                rep.limited = True
                break
            rep.records += 1
            pending_records += 1
            if rec.cut:
                cut = (f"file ends inside record {rep.records} ({rec.type} {rec.target_uri or ''}): "
                       f"{len(rec.block)} of {rec.declared_length} bytes (cut gzip or partial download)")
            if rec.truncated:
                rep.truncated_records += 1
            try:
                page = _page(rec, opts)
            except Skip as s:
                _bump(rep.skipped, s.reason)
                continue
            except Exception as e:  # noqa: BLE001 - one pathological page must not end the file
                _bump(rep.skipped, "extract_error")
                if len(rep.errors) < MAX_ERRORS_KEPT:
                    rep.errors.append(f"record {rep.records} {rec.target_uri}: {type(e).__name__}: {e}"[:300])
                continue
            rep.pages += 1
            if opts.blocklists:
                _apply_blocklist(page, opts.blocklists)
            for k, v in page.dropped.items():
                _bump(rep.dropped, k, v)
            if page.noai:
                rep.noai_pages += 1
                continue
            n = chunks.add(page)
            rep.pairs += n
            pending_pairs += n
            if report is not None and pending_records >= 500:
                report(pending_records, pending_pairs)
                pending_records = pending_pairs = 0
    except ArchiveError as e:
        rep.error = str(e)
    except Exception as e:  # noqa: BLE001 - network/storage errors of one input end that input only
        rep.error = f"{type(e).__name__}: {e}"[:500]
    chunks.flush()
    rep.reader, rep.note = info.reader, info.note
    if cut and not rep.error:
        rep.error = cut
    elif cut:
        rep.error = f"{rep.error}; {cut}"
    rep.status = "failed" if rep.error else "done"
    rep.seconds = round(time.monotonic() - t0, 3)
    write_json(rep.to_json(), state_url)
    if report is not None:
        report(pending_records, pending_pairs)
    return rep
