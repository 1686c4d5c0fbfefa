"""img2dataset mode's terminal output: img2dataset 1.47's per-shard lines, a total bar, the final counts.

img2dataset (``logger.py``) prints, for every finished shard, a ``worker`` line and a running ``total``
line -- success / failed to download / failed to resize ratios, images per second and count, from the
shard's ``_stats.json`` -- under a tqdm counter of shards. :class:`CompatProgress` prints the same two
lines (same words, so what was grepped in img2dataset's logs is found here), a line per input file as it
is cut into shards, a bar over the input rows (its total grows as the files are read; it moves per row on
this machine, per shard on Ray) with the shards done, and at the end the run's per-status counts, its
most frequent reasons (img2dataset's ``status_dict``: ``success`` and each error message) and its speed.

It prints only where someone can see it: ``enabled=None`` (``download(progress=None)``, the default)
turns it on when stderr is a terminal (not ``TERM=dumb``), ``False`` prints nothing (errors still reach
logging), ``True`` prints the lines wherever stderr goes (the bar only on a terminal). Everything goes
to stderr, as the other commands' bars do.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from typing import Any

#: reasons listed in the final counts (the rest are summed in one line)
TOP_REASONS = 10


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def speed_line(prefix: str, count: int, success: int, failed_to_download: int, failed_to_resize: int,
               duration: float) -> str:
    """img2dataset's ``SpeedLogger`` line (``worker  - success: 1.000 - ... - count: 3``)."""
    n = max(count, 1)
    rate = count / duration if duration > 0 else 0.0
    return " - ".join([f"{prefix:<7}", f"success: {success / n:.3f}", f"failed to download: {failed_to_download / n:.3f}",
                       f"failed to resize: {failed_to_resize / n:.3f}", f"images per sec: {rate:.0f}",
                       f"count: {count}"])


class CompatProgress:
    """The reporter of one img2dataset-mode run; a context manager. ``update`` is the fetch stage's
    per-row progress sink (any thread); ``file_planned`` and ``shard_done`` come from the driver."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.on = stderr_is_terminal() if enabled is None else bool(enabled)
        self._console: Any = None
        self._bar: Any = None
        self._task: Any = None
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self.rows_planned = self.shards_planned = 0
        self.rows_ticked = self.rows_done = self.shards_done = 0
        self.count = self.success = self.failed_to_download = self.failed_to_resize = 0
        self.start, self.end = float("inf"), float("-inf")
        self.status_dict: Counter[str] = Counter()

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> CompatProgress:
        self._t0 = time.monotonic()
        if not self.on:
            return self
        from rich.console import Console

        self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        if self._console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("[bold]img2dataset"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("samples, {task.fields[shards]}"), TextColumn("{task.fields[rate]}"),
                                     TimeElapsedColumn(), TimeRemainingColumn(), console=self._console)
            self._bar.start()
            self._task = self._bar.add_task("total", total=None, shards="0/0 shards", rate="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._refresh()
            self._bar.stop()
            self._bar = None

    # ---------------------------------------------------------------- events
    def print(self, line: str) -> None:
        if self._console is not None:
            self._console.print(line, markup=False, highlight=False)

    def file_planned(self, index: int, files: int, path: str, rows: int, shards: int) -> None:
        """One input file read and cut into ``shards`` shards to download, ``rows`` rows in all."""
        if not self.on:
            return
        with self._lock:
            self.rows_planned += rows
            self.shards_planned += shards
        self.print(f"input file {index} of {files}: {path}: {rows} rows to download in {shards} shards")
        self._refresh()

    def update(self, n: int = 1, **fields: Any) -> None:
        """Rows fetched (the fetch stage's progress sink)."""
        with self._lock:
            self.rows_ticked += n
        self._refresh()

    def shard_done(self, name: str, stats: dict[str, Any] | None) -> None:
        """A shard written; ``stats`` its ``_stats.json`` (img2dataset's fields)."""
        if not self.on or not stats:
            return
        c, ok = int(stats["count"]), int(stats["successes"])
        ftd, ftr = int(stats["failed_to_download"]), int(stats["failed_to_resize"])
        with self._lock:
            self.shards_done += 1
            self.rows_done += c
            self.count, self.success = self.count + c, self.success + ok
            self.failed_to_download += ftd
            self.failed_to_resize += ftr
            self.start, self.end = min(self.start, stats["start_time"]), max(self.end, stats["end_time"])
            self.status_dict.update(stats.get("status_dict") or {})
        self.print(speed_line("worker", c, ok, ftd, ftr, stats["end_time"] - stats["start_time"]))
        self.print(speed_line("total", self.count, self.success, self.failed_to_download, self.failed_to_resize,
                              self.end - self.start))
        self._refresh()

    def finish(self, summary: Any) -> None:
        """The final counts: per status, the most frequent reasons, the speed."""
        if not self.on:
            return
        self.__exit__(None, None, None)
        total = sum(summary.status_counts.values())
        rate = summary.fetched / summary.duration if summary.duration > 0 else 0.0
        done = f"{summary.shards_written} shards written"
        if summary.shards_skipped:
            done += f", {summary.shards_skipped} already done"
        if summary.failures:
            done += f", {len(summary.failures)} unreadable (see the errors above)"
        self.print(f"done: {summary.fetched} samples downloaded in {summary.duration:.1f}s ({rate:.1f} images/s), "
                   f"{done} -> {summary.out}")
        width = max((len(s) for s in summary.status_counts), default=7)
        for status, n in sorted(summary.status_counts.items(), key=lambda kv: (-kv[1], kv[0])):
            self.print(f"  {status:<{width}} {n:>8} ({n / total:.1%})" if total else f"  {status} {n}")
        if summary.blocked_private:
            self.print(f"{summary.blocked_private} of {summary.fetched} URLs refused as private/loopback addresses "
                       f"(fix: leave allow_private_networks at its default, True, if those hosts are yours)")
        reasons = [(k, v) for k, v in self.status_dict.most_common() if k != "success"]
        if reasons:
            self.print("reasons:")
            for reason, n in reasons[:TOP_REASONS]:
                self.print(f"  {n:>8}  {reason}")
            rest = reasons[TOP_REASONS:]
            if rest:
                self.print(f"  {sum(v for _, v in rest):>8}  ({len(rest)} other reasons; see the shards' _stats.json)")

    # ---------------------------------------------------------------- the bar
    def _refresh(self) -> None:
        bar = self._bar
        if bar is None:
            return
        with self._lock:
            done = max(self.rows_ticked, self.rows_done)
            shards = f"{self.shards_done}/{self.shards_planned} shards"
            dt = time.monotonic() - self._t0
            rate = f"{done / dt:.1f} images/s" if dt > 0 and done else ""
            total = self.rows_planned
        bar.update(self._task, completed=done, total=total or None, shards=shards, rate=rate)
