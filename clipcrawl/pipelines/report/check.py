"""Which shard files the report cannot read: truncated tars, Parquet files that are not Parquet.

A report never stops at a broken file: it is recorded in ``DatasetParts.unreadable`` (file and
reason), left out of the numbers, and ``clipcrawl stats`` names it and exits 1.

- Tars are checked up front, cheaply: a complete tar is whole 512-byte blocks ending in the two
  zero blocks of the end-of-archive marker (every tar writer adds them: Python's tarfile,
  webdataset, img2dataset, GNU tar), so one ranged read of the last KiB (sizes come from the
  listing) clears a healthy tar. Only a tar that fails it has its headers scanned
  (:func:`~clipcrawl.base.shardfiles.index_tar`): it is truncated when a member's data runs past
  the end of the file or non-zero bytes follow the last whole member (a cut header, which
  tarfile takes for the end); a tar that merely lacks the marker passes.
- Parquet files are checked where DuckDB reads them (:func:`readable_parquet`): one query over all
  files; only when it fails is each file tried alone, so healthy datasets pay nothing extra.
"""

from __future__ import annotations

from typing import Any

from clipcrawl.base.shardfiles import index_tar
from clipcrawl.base.storage import fs_and_path, map_io
from clipcrawl.pipelines.report.sql import error_text
from clipcrawl.pipelines.shardloop import UNREADABLE


def tar_problem(url: str, size: int | None = None) -> str | None:
    """Why the tar at ``url`` is truncated or not a tar; None when it reads to the end. A tar without the
    end-of-archive marker (two zero blocks, which every writer adds) counts as cut short."""
    fs, path = fs_and_path(url)
    try:
        if size is None:
            size = int(fs.size(path))
        if size >= 1024 and size % 512 == 0 and not any(fs.cat_file(path, start=size - 1024, end=size)):
            return None  # ends with the end-of-archive marker
        index = index_tar(url)
    except UNREADABLE as e:
        return f"truncated or not a tar ({error_text(e)})"
    end = max((off + n for members in index.values() for off, n in members.values()), default=0)
    if end > size:
        return f"truncated tar: member data runs to byte {end:,} but the file has {size:,} bytes"
    end += -end % 512  # tarfile stops quietly at a cut header: the rest of the file must be zeros
    if end < size and any(fs.cat_file(path, start=end, end=size)):
        return f"truncated tar: a cut or invalid header at byte {end:,} of {size:,}"
    return None


def check_tars(parts: Any) -> None:
    """Mark the unreadable tars of ``parts`` (kept and dropped/)."""
    tars = sorted({*parts.tar_files.values(), *parts.dropped_tars.values()})
    for url, problem in zip(tars, map_io(lambda u: tar_problem(u, parts.tar_sizes.get(u)), tars)):
        if problem:
            parts.mark_unreadable(url, problem)


def readable_parquet(con, parts: Any, files: list[str]) -> list[str]:
    """The ``files`` DuckDB can read (footer and schema); the others are marked unreadable."""
    import duckdb

    from clipcrawl.pipelines.report.sql import columns_of, count_rows

    if not files:
        return []
    try:
        columns_of(con, files)
        count_rows(con, files)
        return list(files)
    except duckdb.Error:
        pass
    good = []
    for f in files:
        try:
            columns_of(con, [f])
            count_rows(con, [f])
            good.append(f)
        except duckdb.Error as e:
            parts.mark_unreadable(f, f"not a readable Parquet file ({error_text(e)})")
    return good
