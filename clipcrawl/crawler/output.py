"""The crawler's Parquet output: ``DIR/pairs/NNNNN.parquet`` and ``DIR/pages/NNNNN.parquet``.

Chunks are cut from the frontier database (the source of truth) and written atomically with
:func:`clipcrawl.base.storage.write_parquet`; see :mod:`clipcrawl.crawler.frontier` for why a
crash can neither lose nor duplicate a row. A chunk is written when ``rows_per_chunk`` rows are
waiting, when ``interval`` seconds passed since the last write, and at the end of the crawl.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from clipcrawl.base.captions import annotate_captions
from clipcrawl.base.storage import write_parquet
from clipcrawl.crawler.frontier import PAGE_COLUMNS, PAIR_COLUMNS, Frontier
from clipcrawl.schemas.keys import shard_name
from clipcrawl.schemas.tables import PAGES, PAIRS, TIMESTAMP, conform

SOURCE = "crawl"
TABLES = {"pages": (PAGES, PAGE_COLUMNS, "fetched_at"), "pairs": (PAIRS, PAIR_COLUMNS, "found_at")}


def rows_to_table(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Frontier rows -> a table of the PAGES or PAIRS schema (epoch seconds become timestamps)."""
    schema, cols, ts_col = TABLES[table]
    data: dict[str, Any] = {c: [r[c] for r in rows] for c in cols if c != ts_col}
    ts = pa.array([None if r[ts_col] is None else int(r[ts_col] * 1000) for r in rows], pa.int64())
    data[ts_col] = ts.cast(TIMESTAMP)
    if table == "pairs":
        data["source"] = [SOURCE] * len(rows)
    arrays = {}
    for name, values in data.items():
        typ = schema.field(name).type
        arrays[name] = values if isinstance(values, pa.Array) else pa.array(values, type=typ)
    table_ = pa.table(arrays)
    if table == "pairs":
        table_ = annotate_captions(table_)
    return conform(table_, schema)


class ChunkWriter:
    def __init__(self, frontier: Frontier, out_dir: str | os.PathLike[str], rows_per_chunk: int,
                 interval: float = 60.0) -> None:
        self.frontier = frontier
        self.out = Path(out_dir)
        self.rows_per_chunk = rows_per_chunk
        self.interval = interval
        self.waiting = {t: frontier.unsealed(t) for t in TABLES}
        self._last = time.monotonic()
        self.written: list[str] = []

    def path(self, table: str, chunk: int) -> Path:
        return self.out / table / f"{shard_name(chunk)}.parquet"

    def recover(self) -> int:
        """Write the chunks a killed run had sealed but not written. Returns how many."""
        n = 0
        for table in TABLES:
            for chunk in self.frontier.chunks(table):
                if not self.path(table, chunk).exists():
                    self._write(table, chunk)
                    n += 1
        return n

    def added(self, pages: int = 1, pairs: int = 0) -> None:
        self.waiting["pages"] += pages
        self.waiting["pairs"] += pairs

    def flush(self, final: bool = False) -> None:
        due = final or time.monotonic() - self._last >= self.interval
        for table in TABLES:
            while self.waiting[table] >= self.rows_per_chunk or (due and self.waiting[table] > 0):
                chunk = self.frontier.seal_chunk(table, self.rows_per_chunk)
                if chunk is None:
                    self.waiting[table] = 0
                    break
                self.waiting[table] = self.frontier.unsealed(table)
                self._write(table, chunk)
        if due:
            self._last = time.monotonic()

    def _write(self, table: str, chunk: int) -> None:
        rows = self.frontier.chunk_rows(table, chunk)
        path = self.path(table, chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet(rows_to_table(table, rows), str(path))
        self.written.append(str(path))
