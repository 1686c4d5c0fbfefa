"""Stream the records of one WARC, WAT or ARC file: FastWARC first, warcio where FastWARC fails.

Nothing here holds more than one record block in memory (and at most ``max_block_bytes`` of it).
Records are yielded as :class:`RawRecord` (the WARC headers we need plus the block bytes, HTTP
message included); damaged files raise :class:`ArchiveError` *after* every readable record has
been yielded, so callers keep what was readable and record the message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec

READ_CHUNK = 1 << 20


class ArchiveError(Exception):
    """The file could not be read to its end; the message says where and why."""


@dataclass
class RawRecord:
    type: str  # warcinfo | response | request | metadata | revisit | resource | conversion ...
    target_uri: str | None
    date: str | None  # WARC-Date as written
    content_type: str | None  # WARC Content-Type (application/http; msgtype=response, application/json ...)
    identified_type: str | None  # WARC-Identified-Payload-Type (Common Crawl)
    truncated: str | None  # WARC-Truncated reason (length, time, disconnect ...)
    block: bytes  # record block: the HTTP message of a response, the JSON of a WAT record
    declared_length: int  # Content-Length of the record
    offset: int | None = None  # position of the record in the (compressed) file, when known
    capped: bool = False  # block not read to its end on purpose (max_block_bytes, or a type not asked for)
    cut: bool = False  # the file ended inside this record: bytes are missing (cut gzip, partial download)


def clean_target_uri(uri: str | None) -> str | None:
    """``<https://x/>`` (wget/dolma writes WARC 1.0's grammar literally) -> ``https://x/``."""
    if uri is None:
        return None
    uri = uri.strip()
    if len(uri) >= 2 and uri[0] == "<" and uri[-1] == ">":
        uri = uri[1:-1].strip()
    return uri or None


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _read_block(reader: Any, declared: int, limit: int) -> tuple[bytes, bool, bool]:
    """Read a record block up to ``limit`` bytes (0: skip it unread).

    Returns (bytes, capped, cut): capped when the rest was left unread on purpose, cut when the
    file ended before ``declared`` bytes (a skipped block is still counted to the end)."""
    want = declared if 0 <= declared <= limit else limit
    parts: list[bytes] = []
    got = 0
    while got < want:
        b = reader.read(min(READ_CHUNK, want - got))
        if not b:
            break
        parts.append(b)
        got += len(b)
    capped = declared > limit and got == limit
    if capped and declared >= 0:  # count the unread rest, to notice a file that ends inside it
        consume = getattr(reader, "consume", None)
        if consume is not None:
            got += consume()
        else:
            while b := reader.read(READ_CHUNK):
                got += len(b)
    return b"".join(parts), capped, 0 <= got < declared


def _int(value: str | None) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        return -1


# ------------------------------------------------------------------ fastwarc
def _iter_fastwarc(path: str, limit: int, fs_kwargs: dict[str, Any] | None, types: Any) -> Iterator[RawRecord]:
    from fastwarc.warc import ArchiveIterator

    if is_local(path):
        local = path[len("file://"):] if path.startswith("file://") else path
        it = ArchiveIterator(local, parse_http=False, fsspec_args=False)
        yield from _fastwarc_records(it, limit, types)
    else:
        with _open(path, fs_kwargs) as f:
            yield from _fastwarc_records(ArchiveIterator(f, parse_http=False), limit, types)


def _fastwarc_records(it: Any, limit: int, types: Any) -> Iterator[RawRecord]:
    for rec in it:
        # one pass over the headers: FastWARC's HeaderMap.get costs ~10 us per call
        h = {k.lower(): v for k, v in reversed(rec.headers.items())}  # first occurrence wins
        declared = _int(h.get("content-length"))
        kind = (h.get("warc-type") or str(rec.record_type)).strip().lower()
        block, capped, cut = _read_block(rec.reader, declared, limit if types is None or kind in types else 0)
        yield RawRecord(
            type=kind,
            target_uri=clean_target_uri(h.get("warc-target-uri")),
            date=h.get("warc-date"),
            content_type=h.get("content-type"),
            identified_type=h.get("warc-identified-payload-type"),
            truncated=h.get("warc-truncated"),
            block=block,
            declared_length=declared,
            offset=rec.stream_pos,
            capped=capped,
            cut=cut,
        )


# ------------------------------------------------------------------ warcio
def _iter_warcio(path: str, limit: int, fs_kwargs: dict[str, Any] | None, arc: bool,
                 types: Any) -> Iterator[RawRecord]:
    try:
        from warcio.archiveiterator import ArchiveIterator
    except ImportError as e:  # pragma: no cover - warcio is installed with clipcrawl[dev]
        raise ArchiveError("warcio is not installed (pip install warcio) and FastWARC cannot read this file") from e
    with _open(path, fs_kwargs) as f:
        # arc2warc only for real ARC files: warcio would read any text line as an ARC header
        it = ArchiveIterator(f, arc2warc=arc, no_record_parse=True)
        it.INC_RECORD = unterminated = _UnterminatedRecords()  # not warcio's raw stderr WARNING
        try:
            yield from _warcio_records(it, limit, types)
        finally:
            unterminated.report(path)


class _UnterminatedRecords:
    """Stands in for warcio's ``ArchiveIterator.INC_RECORD`` text, which warcio formats and writes to
    stderr for each record not followed by its blank lines (a wrong Content-Length): the offsets are
    kept and :meth:`report` logs them once per file as one clipcrawl warning."""

    def __init__(self) -> None:
        self.offsets: list[int] = []

    def format(self, offset: Any, remainder: Any = None) -> str:
        self.offsets.append(offset)
        return ""  # warcio writes this to stderr: nothing

    def report(self, path: str) -> None:
        if self.offsets:
            from clipcrawl.base.progress import log

            n = len(self.offsets)
            log.warning("%s: %d WARC record%s not followed by a blank line (a wrong Content-Length?), first at "
                        "offset %s; read on", path, n, "" if n == 1 else "s", self.offsets[0])


def _warcio_records(it: Any, limit: int, types: Any) -> Iterator[RawRecord]:
    """The records of warcio's iterator ``it`` as RawRecords."""
    for rec in it:
        h = rec.rec_headers
        # rec.length: the block length warcio reads (ARC headers converted to WARC ones
        # declare the ARC record's length, not the converted block's)
        declared = rec.length if rec.length is not None else _int(h.get_header("Content-Length"))
        kind = (rec.rec_type or "").strip().lower()
        block, capped, cut = _read_block(rec.raw_stream, declared, limit if types is None or kind in types else 0)
        yield RawRecord(
            type=kind,
            target_uri=clean_target_uri(h.get_header("WARC-Target-URI")),
            date=h.get_header("WARC-Date"),
            content_type=h.get_header("Content-Type"),
            identified_type=h.get_header("WARC-Identified-Payload-Type"),
            truncated=h.get_header("WARC-Truncated"),
            block=block,
            declared_length=declared,
            offset=it.get_record_offset(),
            capped=capped,
            cut=cut,
        )


def _sniff(path: str, fs_kwargs: dict[str, Any] | None) -> str | None:
    """"warc", "arc" or None, from the first bytes (gunzipped when gzipped); no seeking."""
    import zlib

    try:
        with _open(path, fs_kwargs) as f:
            head = f.read(1 << 16)
        if head[:2] == b"\x1f\x8b":
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 64)
    except (OSError, EOFError, zlib.error):
        return None
    head = head.lstrip(b"\r\n")
    if head.startswith(b"WARC/"):
        return "warc"
    return "arc" if head.startswith(b"filedesc://") else None


def _open(path: str, fs_kwargs: dict[str, Any] | None) -> Any:
    """fsspec file for sequential reading: http(s) streams (no range requests) unless told otherwise."""
    kw = dict(fs_kwargs or {})
    if path.startswith(("http://", "https://")):
        kw.setdefault("block_size", 0)
    return fsspec.open(path, "rb", **kw)


def _describe(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {msg[:300]}"


@dataclass
class ReadInfo:
    """Which reader(s) produced the records, filled while iterating."""

    reader: str = "fastwarc"
    note: str | None = None  # e.g. FastWARC's error when warcio took over


def iter_records(
    path: str,
    *,
    max_block_bytes: int = 20_000_000,
    fs_kwargs: dict[str, Any] | None = None,
    info: ReadInfo | None = None,
    read_types: frozenset[str] | None = None,
) -> Iterator[RawRecord]:
    """Every record of ``path`` (local path or fsspec URL; gzip or not), streamed.

    FastWARC reads first. If it fails, warcio (which also reads ARC files) reads the file from the
    start and the records FastWARC already yielded are skipped, so warcio continues where FastWARC
    stopped when it can. Raises :class:`ArchiveError` once neither can go further.
    ``read_types``: only these record types get their block read (the others come with an empty,
    ``capped`` block); None reads all.
    """
    info = info if info is not None else ReadInfo()
    if is_local(path):
        local = path[len("file://"):] if path.startswith("file://") else path
        if not os.path.isfile(local):
            raise ArchiveError(f"{path}: no such file")
    n = 0
    try:
        for rec in _iter_fastwarc(path, max_block_bytes, fs_kwargs, read_types):
            n += 1
            yield rec
        return
    except FileNotFoundError as e:
        if n == 0:
            raise ArchiveError(f"not found ({_describe(e)})") from None
        fast_err = _describe(e)
    except (OSError, ValueError, EOFError, RuntimeError) as e:
        fast_err = _describe(e)
    at = f"after record {n}" if n else "at the first record"
    kind = _sniff(path, fs_kwargs)
    if kind is None:
        raise ArchiveError(f"unreadable {at}: {fast_err} (the file starts with neither a WARC nor an ARC header)")
    m = 0
    try:
        for rec in _iter_warcio(path, max_block_bytes, fs_kwargs, kind == "arc", read_types):
            m += 1
            if m <= n:
                continue
            if info.reader == "fastwarc":
                info.reader = "warcio" if n == 0 else "fastwarc+warcio"
                info.note = f"FastWARC stopped {at} ({fast_err}); warcio read on"
            yield rec
    except ArchiveError as e:
        if m <= n:
            raise ArchiveError(f"unreadable {at}: {fast_err}; warcio: {e}") from None
        raise ArchiveError(f"unreadable after record {m}: {e} (FastWARC stopped {at}: {fast_err})") from None
    except Exception as e:  # noqa: BLE001 - any parser failure on a damaged file ends the file
        if m <= n:
            raise ArchiveError(f"unreadable {at}: {fast_err}; warcio: {_describe(e)}") from None
        raise ArchiveError(f"unreadable after record {m}: {_describe(e)} (FastWARC stopped {at}: {fast_err})") from None
    if m <= n:
        raise ArchiveError(f"unreadable {at}: {fast_err} (warcio found no further record)")
