"""The write side of shard files: deterministic tars, the three output formats, ``_stats.json``.

Each file appears under its final name only when complete (:func:`clipcrawl.base.storage.atomic_open`).
Tars are reproducible: members sorted per sample, fixed mtime (``SOURCE_DATE_EPOCH`` or 0),
uid/gid 0, no user names, so the same input gives byte-identical shards. The stats file is
written last: it marks the shard as done.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import IO, Any

import pyarrow as pa

from clipcrawl.base.captions import annotate_captions
from clipcrawl.base.failpoints import failpoint
from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.storage import atomic_open, fs_and_path, is_local, json_default, write_json, write_parquet
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN, SAMPLES, conform

STATUS_COUNTERS = tuple(s.value for s in Status if s is not Status.SUCCESS)
MAX_STATUS_KEYS = 1000  # img2dataset's CappedCounter idea: error strings have unbounded cardinality


def tar_mtime() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def _check_member_name(key: str, ext: str) -> None:
    if not key or "/" in key or "\\" in key or key.startswith(".") or ".." in key or "\x00" in key:
        raise ValueError(f"unsafe sample key {key!r}")
    if not ext.replace("_", "").isalnum():
        raise ValueError(f"unsafe member extension {ext!r}")


class TarShardWriter:
    """Deterministic tar writer: ``add(key, {"jpg": b"...", "txt": "...", "json": {...}})``."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.count = 0

    def add(self, key: str, members: dict[str, bytes | str | dict[str, Any]]) -> None:
        for ext in sorted(members):
            _check_member_name(key, ext)
            value = members[ext]
            if isinstance(value, dict):
                value = json.dumps(value, indent=4, ensure_ascii=False, default=json_default)
            data = value.encode("utf-8") if isinstance(value, str) else value
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), tar_mtime(), 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        self._tar.close()



# ------------------------------------------------------------------ stats
def shard_stats(table: pa.Table, start_time: float, end_time: float, bytes_downloaded: int = 0,
                shard: str | None = None) -> dict[str, Any]:
    """img2dataset's ``_stats.json`` fields plus a counter per clipcrawl status."""
    statuses = table.column("status").to_pylist() if table.num_rows else []
    errors = table.column("error_message").to_pylist() if table.num_rows else []
    counts = Counter(statuses)
    status_dict: Counter[str] = Counter()
    for s, e in zip(statuses, errors):
        status_dict[Status.SUCCESS.value if s == Status.SUCCESS.value else (e or s)] += 1
    if len(status_dict) > MAX_STATUS_KEYS:
        status_dict = Counter(dict(status_dict.most_common(MAX_STATUS_KEYS)))
    stats: dict[str, Any] = {
        "count": table.num_rows,
        "successes": counts.get(Status.SUCCESS.value, 0),
        **{name: counts.get(name, 0) for name in STATUS_COUNTERS},
        "duration": end_time - start_time,
        "start_time": start_time,
        "end_time": end_time,
        "bytes_downloaded": bytes_downloaded,
        "status_dict": dict(status_dict),
    }
    if shard is not None:
        stats["shard"] = shard
    return stats


# ------------------------------------------------------------------ writing a shard
#: 64-bit unsigned columns written to ``<key>.json`` as 16 hex digits: JSON readers turn integers
#: above 2**53 into floats, and Hugging Face ``datasets`` fails on integers >= 2**63.
JSON_HEX_COLUMNS = ("phash",)


#: Keys written even when null: img2dataset's readers expect ``error_message`` (always null for
#: the success samples a tar holds, so a reader that infers types sees one type: null).
JSON_KEEP_NULL = ("error_message",)


def sample_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """The ``<key>.json`` document of one sample: its Parquet row minus transient columns
    (``phash`` as a 16-hex-digit string) and minus null values.

    A null is left out rather than written as ``null``: Hugging Face ``datasets`` infers the
    features of a WebDataset from its first 5 samples, so a column null there and set later
    (``img_width_attr``, ``page_language``, an extra input column...) became type ``null`` and
    the load failed (``Couldn't cast array of type int64 to null``). A missing key is read as
    None by HF and by ``dict.get``; the Parquet next to the tar keeps every column."""
    out = {k: v for k, v in row.items()
           if k != IMAGE_COLUMN and not k.endswith("_embedding") and (v is not None or k in JSON_KEEP_NULL)}
    for k in JSON_HEX_COLUMNS:
        if isinstance(out.get(k), int):
            out[k] = f"{out[k]:016x}"
    return out


class ShardStream:
    """Write one shard chunk by chunk, in row order: ``add(chunk)`` as rows come, ``finish()`` at the end.

    Each chunk's tar members (or files) are appended as it arrives, so a shard's images are never all in
    memory; the Parquet of a ``webdataset``/``files`` shard is the chunks' rows without images, written
    in one piece at the end (byte-identical to writing the whole table at once); with ``output_format``
    ``parquet`` the images are in the Parquet, which then gets one row group per chunk. Every file is
    atomic and ``_stats.json`` comes last (:func:`write_shard` is one ``add`` + ``finish``). Used as a
    context manager: leaving it without ``finish()`` (an error) discards what was written.
    """

    def __init__(self, ref: ShardRef, *, output_format: str = "webdataset", image_ext: str = "jpg",
                 start_time: float | None = None) -> None:
        if output_format not in ("webdataset", "files", "parquet"):
            raise ValueError(f"unknown output_format {output_format!r}")
        self.ref, self.output_format, self.image_ext = ref, output_format, image_ext
        self.start_time = time.time() if start_time is None else start_time
        self._stack = contextlib.ExitStack()
        self._tar: TarShardWriter | None = None
        self._pq: Any = None  # pyarrow.parquet.ParquetWriter (output_format parquet)
        self._files_tmp: tuple[Any, str, str] | None = None
        self._rows: list[pa.Table] = []  # Parquet rows (webdataset/files) or status+error (parquet)
        self.count = 0
        self._finished = False

    def __enter__(self) -> ShardStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None and not self._finished:  # left early: publish nothing
            err = RuntimeError(f"shard {self.ref.name}: stream closed before finish()")
            self._stack.__exit__(RuntimeError, err, None)
            raise err
        self._stack.__exit__(*exc)

    def add(self, table: pa.Table, image_exts: Sequence[str] | None = None) -> None:
        exts = list(image_exts) if image_exts is not None else [self.image_ext] * table.num_rows
        if len(exts) != table.num_rows:
            raise ValueError(f"image_exts has {len(exts)} entries for {table.num_rows} rows")
        images = (table.column(IMAGE_COLUMN).to_pylist() if IMAGE_COLUMN in table.column_names
                  else [None] * table.num_rows)
        parquet_table = conform(annotate_captions(table), SAMPLES)
        self.count += table.num_rows
        if self.output_format == "parquet":
            ok = [s == Status.SUCCESS.value and img is not None
                  for s, img in zip(parquet_table.column("status").to_pylist(), images)]
            parquet_table = parquet_table.append_column(
                "jpg", pa.array([img if keep else None for img, keep in zip(images, ok)], pa.binary()))
            if self._pq is None:
                import pyarrow.parquet as pq

                f = self._stack.enter_context(atomic_open(self.ref.parquet))
                self._pq = self._stack.enter_context(pq.ParquetWriter(f, parquet_table.schema))
            self._pq.write_table(parquet_table)
            self._rows.append(parquet_table.select(["status", "error_message"]))
            return
        rows = parquet_table.to_pylist()
        self._rows.append(parquet_table)
        ok = [r["status"] == Status.SUCCESS.value and img is not None for r, img in zip(rows, images)]
        if self.output_format == "webdataset":
            if self._tar is None:
                self._tar = TarShardWriter(self._stack.enter_context(atomic_open(self.ref.tar)))
            for r, img, keep, ext in zip(rows, images, ok, exts):
                if keep:
                    self._tar.add(r["key"], {ext: img, "txt": r.get("caption") or "", "json": sample_metadata(r)})
        else:
            _write_files(self._files_folder(), rows, images, ok, self.image_ext)

    def _files_folder(self) -> tuple[Any, str, str]:
        if self._files_tmp is None:
            fs, folder = fs_and_path(self.ref.path(""))
            tmp = f"{folder}.tmp-{uuid.uuid4().hex[:8]}" if is_local(fs) else folder
            if tmp != folder:
                os.makedirs(tmp)
                self._stack.callback(lambda: os.path.isdir(tmp) and shutil.rmtree(tmp, ignore_errors=True))
            self._files_tmp = (fs, folder, tmp)
        return self._files_tmp

    def finish(self, bytes_downloaded: int = 0, extra_stats: dict[str, Any] | None = None,
               empty: pa.Table | None = None) -> dict[str, Any]:
        """Close the files (stats last) and return the stats. ``empty``: the rows' columns, for a shard
        that got no chunk (its empty Parquet keeps the input's extra columns)."""
        if not self._rows:
            self.add(empty if empty is not None else SAMPLES.empty_table())
        if self._tar is not None:
            self._tar.close()
        if self.output_format == "files":
            fs, folder, tmp = self._files_folder()
            if tmp != folder:
                if fs.exists(folder):
                    fs.rm(folder, recursive=True)
                os.replace(tmp, folder)
        rows = pa.concat_tables(self._rows) if len(self._rows) > 1 else self._rows[0]
        self._rows = []
        if self.output_format == "parquet":
            self._stack.close()  # closes the ParquetWriter, then publishes the file
        else:
            self._stack.close()  # the tar appears under its name
            write_parquet(rows.combine_chunks(), self.ref.parquet)
        failpoint("shard.before_stats")
        stats = shard_stats(rows, self.start_time, time.time(), bytes_downloaded, shard=self.ref.name)
        stats.update(extra_stats or {})
        write_json(stats, self.ref.stats)  # last: marks the shard as done
        self._finished = True
        return stats


def write_shard(
    ref: ShardRef,
    table: pa.Table,
    *,
    output_format: str = "webdataset",
    image_ext: str = "jpg",
    start_time: float | None = None,
    bytes_downloaded: int = 0,
    extra_stats: dict[str, Any] | None = None,
    image_exts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write one finished shard: images of ``success`` rows, Parquet of every row, stats last.

    ``image_exts``: one member extension per row (resharding mixed jpg/png/webp inputs);
    default ``image_ext`` for all. :class:`ShardStream` writes a shard chunk by chunk.
    """
    with ShardStream(ref, output_format=output_format, image_ext=image_ext, start_time=start_time) as w:
        w.add(table, image_exts)
        return w.finish(bytes_downloaded, extra_stats)


def _write_files(folder: tuple[Any, str, str], rows: list[dict[str, Any]], images: list[Any], ok: list[bool],
                 image_ext: str) -> None:
    fs, _, tmp = folder
    for r, img, keep in zip(rows, images, ok):
        if not keep:
            continue
        _check_member_name(r["key"], image_ext)
        with fs.open(f"{tmp}/{r['key']}.{image_ext}", "wb") as f:
            f.write(img)
        with fs.open(f"{tmp}/{r['key']}.txt", "w") as f:
            f.write(r.get("caption") or "")
        with fs.open(f"{tmp}/{r['key']}.json", "w") as f:
            json.dump(sample_metadata(r), f, indent=4, ensure_ascii=False, default=json_default)


# ------------------------------------------------------------------ rewriting a finished shard
DROPPED_DIR = "dropped"  # <shards>/dropped/NNNNN.tar: images of samples a later pass dropped


def dropped_ref(ref: ShardRef) -> ShardRef:
    return ShardRef(f"{ref.root}/{DROPPED_DIR}", ref.name)


def rewrite_shard(ref: ShardRef, table: pa.Table, before: pa.Table | None = None, *,
                  keep_tars: bool = False) -> pa.Table:
    """Rewrite a finished shard after a pass re-decided its rows (``score``, ``dedup``): the tar is made to
    hold exactly the ``success`` rows again, the Parquet is rewritten, and ``_stats.json`` last.

    Images of rows that stop being ``success`` move to ``<shards>/dropped/NNNNN.tar``, so a later decision
    (a lower threshold) can bring them back; a row that becomes ``success`` but whose image is in neither
    tar cannot be a sample: it keeps its status and message from ``before`` (the table as read). The tar
    is reconciled with the Parquet's statuses whatever they were before, so a rerun heals a shard that an
    interrupted rewrite left half done. ``keep_tars``: leave the tars as they are (Parquet and stats only).
    Returns the table as written (SAMPLES schema).
    """
    from clipcrawl.base.shardfiles import index_tar, iter_tar
    from clipcrawl.base.storage import exists, read_json, remove

    keys = table.column("key").to_pylist()
    status = table.column("status").to_pylist()
    tar_exists = exists(ref.tar)
    if tar_exists and not keep_tars:
        drop = dropped_ref(ref)
        in_tar = set(index_tar(ref.tar))
        in_dropped = set(index_tar(drop.tar)) if exists(drop.tar) else set()
        if before is not None:
            table = _keep_status_without_image(table, before, in_tar | in_dropped)
            status = table.column("status").to_pylist()
        want = [k for k, s in zip(keys, status) if s == Status.SUCCESS.value]
        if set(want) != in_tar:
            samples = {s["__key__"]: s for s in iter_tar(ref.tar)}
            if in_dropped:
                for s in iter_tar(drop.tar):
                    samples.setdefault(s["__key__"], s)
            keep = set(want)
            rest = [k for k in keys if k not in keep and k in samples]
            if set(rest) - in_dropped:  # first: an image leaving the tar is already in the dropped tar
                _write_tar(drop.tar, [samples[k] for k in keys if k in samples and (k in in_dropped or k in rest)])
            _write_tar(ref.tar, [samples[k] for k in want if k in samples])
            if in_dropped - set(rest):  # restored images left the dropped tar
                if rest:
                    _write_tar(drop.tar, [samples[k] for k in rest])
                else:
                    remove(drop.tar)
    elif not tar_exists and not keep_tars:
        table = _reconcile_image_column(ref, table, before)
    failpoint("shard.rewrite")  # the tars rewritten, the Parquet not yet: the widest window of a rewrite
    out = conform(table, SAMPLES)
    write_parquet(out, ref.parquet)
    try:
        old_stats: dict[str, Any] = read_json(ref.stats)
    except (OSError, ValueError):
        old_stats = {}
    now = time.time()
    stats = shard_stats(out, old_stats.get("start_time", now), old_stats.get("end_time", now),
                        old_stats.get("bytes_downloaded", 0), shard=old_stats.get("shard", ref.name))
    stats["duration"] = old_stats.get("duration", stats["duration"])
    write_json({**old_stats, **stats}, ref.stats)  # last: the shard is done again
    return out


def _keep_status_without_image(table: pa.Table, before: pa.Table, images: set[str]) -> pa.Table:
    """Rows that became success but have no image anywhere get their ``before`` status back."""
    keys = table.column("key").to_pylist()
    status = table.column("status").to_pylist()
    old_status = before.column("status").to_pylist()
    if len(old_status) != len(keys):
        raise ValueError(f"rewrite_shard: {len(keys)} rows but {len(old_status)} before")
    errors = table.column("error_message").to_pylist()
    old_errors = before.column("error_message").to_pylist()
    changed = False
    for i, (k, s, s0) in enumerate(zip(keys, status, old_status)):
        if s == Status.SUCCESS.value and s0 != Status.SUCCESS.value and k not in images:
            status[i], errors[i], changed = s0, old_errors[i], True
    if not changed:
        return table
    table = table.set_column(table.schema.get_field_index("status"), "status", pa.array(status, pa.string()))
    return table.set_column(table.schema.get_field_index("error_message"), "error_message",
                            pa.array(errors, pa.string()))


def _image_column(ref: ShardRef, table: pa.Table) -> str | None:
    """``output_format: parquet``: the name of the shard's image column (``jpg``...), in ``table`` or in the
    Parquet file on disk (readers of whole datasets leave it out of memory); None for other formats."""
    from clipcrawl.base.shardfiles import IMAGE_EXTS

    for name in IMAGE_EXTS:
        if name in table.column_names and pa.types.is_binary(table.schema.field(name).type):
            return name
    import pyarrow.parquet as pq

    fs, path = fs_and_path(ref.parquet)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        schema = pq.read_schema(f)
    return next((n for n in IMAGE_EXTS if n in schema.names and pa.types.is_binary(schema.field(n).type)), None)


def _reconcile_image_column(ref: ShardRef, table: pa.Table, before: pa.Table | None) -> pa.Table:
    """``output_format: parquet`` (the images in the Parquet): the image column holds exactly the ``success``
    rows' images, as :class:`ShardStream` wrote it. Images of rows a pass dropped move to
    ``<shards>/dropped/NNNNN.tar`` (as for tar shards: a later decision can bring them back), rows that become
    ``success`` get theirs back from there, and a row that becomes ``success`` with no image anywhere keeps its
    ``before`` status. The dropped tar is written before the Parquet, so no image is ever only in memory."""
    from clipcrawl.base.shardfiles import iter_tar
    from clipcrawl.base.storage import exists, read_parquet, remove

    col = _image_column(ref, table)
    if col is None:
        return table
    keys = table.column("key").to_pylist()
    if col in table.column_names:
        images = table.column(col).to_pylist()
    else:
        on_disk = read_parquet(ref.parquet, ["key", col])
        by_key = dict(zip(on_disk.column("key").to_pylist(), on_disk.column(col).to_pylist()))
        images = [by_key.get(k) for k in keys]
    drop = dropped_ref(ref)
    dropped = {d["__key__"]: d[col] for d in iter_tar(drop.tar) if col in d} if exists(drop.tar) else {}
    if before is not None:
        table = _keep_status_without_image(table, before, {k for k, v in zip(keys, images) if v is not None}
                                           | set(dropped))
    status = table.column("status").to_pylist()
    kept, moved = [], dict(dropped)
    for k, s, img in zip(keys, status, images):
        if s == Status.SUCCESS.value:
            kept.append(img if img is not None else moved.pop(k, None))
        else:
            if img is not None:
                moved[k] = img
            kept.append(None)
    if moved.keys() != dropped.keys():
        if moved:
            _write_tar(drop.tar, [{"__key__": k, col: moved[k]} for k in sorted(moved)])
        else:
            remove(drop.tar)
    column = pa.array(kept, pa.binary())
    if col in table.column_names:
        return table.set_column(table.schema.get_field_index(col), col, column)
    return table.append_column(col, column)


def _write_tar(url: str, samples: Sequence[dict[str, Any]]) -> None:
    with atomic_open(url) as f:
        w = TarShardWriter(f)
        for s in samples:
            w.add(s["__key__"], {k: v for k, v in s.items() if k != "__key__"})
        w.close()
