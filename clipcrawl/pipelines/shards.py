"""Shard files: list, read and write them atomically and deterministically, on any fsspec path.

A shard ``NNNNN`` is img2dataset's triple: ``NNNNN.tar`` (kept samples: ``<key>.<ext>``,
``<key>.txt``, ``<key>.json``), ``NNNNN.parquet`` (every row, SAMPLES schema) and
``NNNNN_stats.json``, written last: its presence marks the shard as done. Each file appears under
its final name only when complete (temp name + rename locally; object stores publish on close).
Tars are reproducible: members sorted per sample, fixed mtime (``SOURCE_DATE_EPOCH`` or 0),
uid/gid 0, no user names, so the same input gives byte-identical shards.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipcrawl.pipelines.failpoints import failpoint
from clipcrawl.schemas.keys import shard_name
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN, SAMPLES, conform

STATS_SUFFIX = "_stats.json"
STATUS_COUNTERS = tuple(s.value for s in Status if s is not Status.SUCCESS)
MAX_STATUS_KEYS = 1000  # img2dataset's CappedCounter idea: error strings have unbounded cardinality


def tar_mtime() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


# ------------------------------------------------------------------ paths
def configure_storage(url: str | os.PathLike[str], storage_options: dict[str, Any] | None) -> None:
    """Make ``storage_options`` (e.g. ``{"endpoint_url": ..., "key": ..., "secret": ...}`` for S3) the
    defaults of ``url``'s protocol for every later fsspec call in this process (``fsspec.config.conf``).

    Without it, s3fs reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_ENDPOINT_URL`` and
    fsspec reads ``FSSPEC_S3_ENDPOINT_URL`` (any ``FSSPEC_<PROTOCOL>_<OPTION>``) from the environment.
    """
    if not storage_options:
        return
    protocol = fsspec.core.split_protocol(os.fspath(url))[0] or "file"
    fsspec.config.conf.setdefault(protocol, {}).update(storage_options)


def fs_and_path(url: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(os.fspath(url))
    return fs, path.rstrip("/")


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


@dataclass(frozen=True)
class ShardRef:
    """One shard's files: ``<root>/<name>.{tar,parquet}`` and ``<root>/<name>_stats.json``."""

    root: str  # directory URL or path
    name: str  # "00042"

    @property
    def id(self) -> int:
        return int(self.name)

    def path(self, suffix: str) -> str:
        return f"{self.root.rstrip('/')}/{self.name}{suffix}"

    @property
    def tar(self) -> str:
        return self.path(".tar")

    @property
    def parquet(self) -> str:
        return self.path(".parquet")

    @property
    def stats(self) -> str:
        return self.path(STATS_SUFFIX)

    @classmethod
    def of(cls, root: str, shard_id: int) -> ShardRef:
        return cls(str(root).rstrip("/"), shard_name(shard_id))


def shards_dir(path: str | os.PathLike[str]) -> str:
    """``DATASET/shards`` when it exists (our dataset layout), else ``path`` itself (img2dataset)."""
    path = os.fspath(path).rstrip("/")
    fs, p = fs_and_path(path)
    return f"{path}/shards" if fs.isdir(f"{p}/shards") else path


def list_shards(path: str | os.PathLike[str], done_only: bool = True) -> list[ShardRef]:
    """Shards under ``path`` (a dataset or a shard folder), sorted by id.

    ``done_only``: only shards whose stats file exists (finished, img2dataset's convention);
    otherwise every ``NNNNN.parquet``.
    """
    root = shards_dir(path)
    fs, p = fs_and_path(root)
    if not fs.isdir(p):
        return []
    names = set()
    fs.invalidate_cache(p)  # object-store listings are cached per process; other writers add shards
    for f in fs.ls(p, detail=False):
        base = f.rstrip("/").rsplit("/", 1)[-1]
        stem = base[: -len(STATS_SUFFIX)] if base.endswith(STATS_SUFFIX) else (
            base[: -len(".parquet")] if (not done_only and base.endswith(".parquet")) else None)
        if stem and stem.isdigit():
            names.add(stem)
    return [ShardRef(root, n) for n in sorted(names, key=int)]


def next_shard_id(path: str | os.PathLike[str]) -> int:
    """First unused shard id (counting unfinished shards too), for appending runs."""
    shards = list_shards(path, done_only=False)
    return shards[-1].id + 1 if shards else 0


def is_done(ref: ShardRef) -> bool:
    fs, p = fs_and_path(ref.stats)
    return fs.exists(p)


# ------------------------------------------------------------------ atomic writes
@contextmanager
def atomic_open(url: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``url`` for writing so readers never see a partial file.

    Locally: a hidden temp file in the same folder, fsynced, then renamed over the final name.
    Object stores: the object appears when its upload completes on close; if the block raises,
    the upload is discarded (multipart aborted) instead of publishing a partial object, and a
    killed process never completes it. Text modes write UTF-8.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'wb' or 'w', not {mode!r}")
    fs, path = fs_and_path(url)
    parent = path.rsplit("/", 1)[0]
    if _is_local(fs):
        os.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    raw = fs.open(path, "wb")
    out: IO[Any] = io.TextIOWrapper(raw, encoding="utf-8") if mode == "w" else raw
    try:
        yield out
        out.flush()
    except BaseException:
        if isinstance(out, io.TextIOWrapper):  # unhook it so its finaliser never touches the discarded file
            with suppress(Exception):
                out.detach()
        _discard(fs, path, raw)
        raise
    if isinstance(out, io.TextIOWrapper):
        out.detach()
    raw.close()


def _discard(fs: fsspec.AbstractFileSystem, path: str, raw: Any) -> None:
    """Abandon an unfinished remote write without publishing it."""
    if isinstance(raw, fsspec.spec.AbstractBufferedFile):
        raw.discard()  # s3fs/gcsfs: abort the multipart upload; nothing was published yet
        raw.closed = True  # so close() (and __del__) never flushes the partial buffer
        return
    try:  # other filesystems: best effort, remove whatever close() published
        raw.close()
        fs.rm(path)
    except Exception:  # noqa: BLE001 - already failing; keep the original error
        pass


def write_parquet(table: pa.Table, url: str) -> None:
    with atomic_open(url) as f:
        pq.write_table(table, f)


def write_json(obj: Any, url: str) -> None:
    with atomic_open(url, "w") as f:
        json.dump(obj, f, indent=4, ensure_ascii=False, default=_json_default)


def read_parquet(url: str, columns: Sequence[str] | None = None) -> pa.Table:
    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=list(columns) if columns else None)


def read_json(url: str) -> Any:
    fs, path = fs_and_path(url)
    with fs.open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, bytes):
        return None
    return str(o)


# ------------------------------------------------------------------ tar
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
                value = json.dumps(value, indent=4, ensure_ascii=False, default=_json_default)
            data = value.encode("utf-8") if isinstance(value, str) else value
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), tar_mtime(), 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        self._tar.close()


def iter_tar(url: str) -> Iterator[dict[str, Any]]:
    """Samples of a webdataset tar as ``{"__key__": key, ext: bytes, ...}`` (consecutive members
    with the same key prefix form one sample, as webdataset groups them)."""
    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        current: dict[str, Any] | None = None
        for m in tar:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            key, _, ext = base.partition(".")
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            current[ext] = data
        if current is not None:
            yield current


IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def sample_image(sample: dict[str, Any]) -> bytes | None:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    return None


def read_images(ref: ShardRef) -> dict[str, bytes]:
    """key -> encoded image bytes of every sample in the shard's tar (empty if no tar)."""
    fs, path = fs_and_path(ref.tar)
    if not fs.exists(path):
        return {}
    return {s["__key__"]: img for s in iter_tar(ref.tar) if (img := sample_image(s)) is not None}


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


def sample_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """The ``<key>.json`` document of one sample: its Parquet row minus transient columns
    (``phash`` as a 16-hex-digit string)."""
    out = {k: v for k, v in row.items() if k != IMAGE_COLUMN and not k.endswith("_embedding")}
    for k in JSON_HEX_COLUMNS:
        if isinstance(out.get(k), int):
            out[k] = f"{out[k]:016x}"
    return out


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
    default ``image_ext`` for all.
    """
    start_time = time.time() if start_time is None else start_time
    exts = list(image_exts) if image_exts is not None else [image_ext] * table.num_rows
    if len(exts) != table.num_rows:
        raise ValueError(f"image_exts has {len(exts)} entries for {table.num_rows} rows")
    images = (table.column(IMAGE_COLUMN).to_pylist() if IMAGE_COLUMN in table.column_names
              else [None] * table.num_rows)
    parquet_table = conform(table, SAMPLES)
    rows = parquet_table.to_pylist()
    ok = [r["status"] == Status.SUCCESS.value and img is not None for r, img in zip(rows, images)]

    if output_format == "webdataset":
        with atomic_open(ref.tar) as f:
            w = TarShardWriter(f)
            for r, img, keep, ext in zip(rows, images, ok, exts):
                if keep:
                    w.add(r["key"], {ext: img, "txt": r.get("caption") or "", "json": sample_metadata(r)})
            w.close()
    elif output_format == "files":
        _write_files_folder(ref, rows, images, ok, image_ext)
    elif output_format == "parquet":
        parquet_table = parquet_table.append_column(
            "jpg", pa.array([img if keep else None for img, keep in zip(images, ok)], pa.binary()))
    else:
        raise ValueError(f"unknown output_format {output_format!r}")
    write_parquet(parquet_table, ref.parquet)
    failpoint("shard.before_stats")
    stats = shard_stats(parquet_table, start_time, time.time(), bytes_downloaded, shard=ref.name)
    stats.update(extra_stats or {})
    write_json(stats, ref.stats)  # last: marks the shard as done
    return stats


def _write_files_folder(ref: ShardRef, rows: list[dict[str, Any]], images: list[Any], ok: list[bool],
                        image_ext: str) -> None:
    fs, folder = fs_and_path(ref.path(""))
    if _is_local(fs):
        tmp = f"{folder}.tmp-{uuid.uuid4().hex[:8]}"
        os.makedirs(tmp)
    else:
        tmp = folder
    for r, img, keep in zip(rows, images, ok):
        if not keep:
            continue
        _check_member_name(r["key"], image_ext)
        with fs.open(f"{tmp}/{r['key']}.{image_ext}", "wb") as f:
            f.write(img)
        with fs.open(f"{tmp}/{r['key']}.txt", "w") as f:
            f.write(r.get("caption") or "")
        with fs.open(f"{tmp}/{r['key']}.json", "w") as f:
            json.dump(sample_metadata(r), f, indent=4, ensure_ascii=False, default=_json_default)
    if tmp != folder:
        if fs.exists(folder):
            fs.rm(folder, recursive=True)
        os.replace(tmp, folder)
