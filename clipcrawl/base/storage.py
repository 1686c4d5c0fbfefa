"""Storage: fsspec paths, atomic writes, Parquet and JSON on any filesystem (local or ``s3://``).

Every file a pass writes goes through :func:`atomic_open`, so readers never see a partial file:
locally a hidden temp file in the same folder is fsynced and renamed over the final name; on an
object store the object appears when its upload completes, and a failed write is discarded.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import IO, Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


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


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")

def exists(url: str, fresh: bool = False) -> bool:
    """Whether ``url`` exists; ``fresh`` drops the cached listing of its folder first (object stores
    cache listings per process while other writers add files)."""
    fs, path = fs_and_path(url)
    if fresh:
        fs.invalidate_cache(path.rsplit("/", 1)[0])
    return fs.exists(path)


def remove(url: str, recursive: bool = False) -> None:
    """Delete ``url`` if it exists."""
    fs, path = fs_and_path(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


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
    if is_local(fs):
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
        json.dump(obj, f, indent=4, ensure_ascii=False, default=json_default)


def read_parquet(url: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The Parquet file at ``url``; one that is not Parquet raises ``pyarrow.ArrowInvalid`` naming ``url``."""
    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f:
        try:
            return pq.read_table(f, columns=list(columns) if columns else None)
        except pa.ArrowInvalid as e:
            raise pa.ArrowInvalid(f"{url}: {e}") from None


def read_json(url: str) -> Any:
    fs, path = fs_and_path(url)
    with fs.open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, bytes):
        return None
    return str(o)


def remove_temp_files(root: str) -> int:
    """Remove the temp files (``.NAME.tmp-XXXX``) a killed writer left under a local ``root`` (up to four
    folders deep); readers never see them. Object stores publish whole objects: nothing is left there."""
    if "://" in root and not root.startswith("file://"):
        return 0
    import glob
    import logging

    base = root.removeprefix("file://")
    n = 0
    for pattern in (".*.tmp-*", "*/.*.tmp-*", "*/*/.*.tmp-*", "*/*/*/.*.tmp-*"):
        for path in glob.glob(os.path.join(glob.escape(base), pattern)):
            if os.path.isfile(path):
                os.remove(path)
                n += 1
    if n:
        logging.getLogger("clipcrawl").info("removed %d temp files left by an interrupted writer", n)
    return n


def map_io(fn: Any, items: Any, threads: int = 16) -> list[Any]:
    """``fn`` over ``items`` in a small thread pool (order kept): many small reads of an object store."""
    items = list(items)
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as ex:
        return list(ex.map(fn, items))
