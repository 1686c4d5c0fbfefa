"""Progress bars on a terminal, concise line logs elsewhere (cron mail stays readable).

Usage::

    with Progress("download", total=n, unit="img") as bar:
        bar.update(1, errors=3)          # counters shown next to the bar / in the log line

On a TTY this draws a rich progress bar with the rate; when stderr is not a TTY it logs one
line every ``interval`` seconds and a final line (``--log-format json`` makes those JSON).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger("clipcrawl")

_LOG_FORMAT = {"value": "auto"}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}) or {})
        return json.dumps(out, ensure_ascii=False, default=str)


def is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def setup_logging(log_format: str = "auto", verbose: bool = False, quiet: bool = False) -> None:
    """Configure the ``clipcrawl`` logger once per process."""
    _LOG_FORMAT["value"] = log_format
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    root = logging.getLogger("clipcrawl")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    if log_format == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonFormatter())
    elif log_format == "auto" and is_tty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    root.propagate = False
    for noisy in ("aiohttp", "asyncio", "PIL", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def use_bars() -> bool:
    return _LOG_FORMAT["value"] == "auto" and is_tty()


class Progress:
    """A progress bar (TTY) or periodic log lines (otherwise) for one long step."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it", interval: float = 10.0,
                 enabled: bool = True) -> None:
        self.desc, self.total, self.unit, self.interval = desc, total, unit, interval
        self.enabled = enabled
        self.n = 0
        self.fields: dict[str, Any] = {}
        self._bar = None
        self._task = None
        self._t0 = self._last = 0.0

    def __enter__(self) -> Progress:
        self._t0 = self._last = time.monotonic()
        if self.enabled and use_bars():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[extra]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.desc, total=self.total, rate="", extra="")
        return self

    def rate(self) -> float:
        dt = time.monotonic() - self._t0
        return self.n / dt if dt > 0 else 0.0

    def _extra(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.fields.items())

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def update(self, n: int = 1, **fields: Any) -> None:
        self.n += n
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{self.rate():.1f} {self.unit}/s", extra=self._extra())
        elif self.enabled:
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._log()

    def _log(self, final: bool = False) -> None:
        total = f"/{self.total}" if self.total is not None else ""
        fields = {"step": self.desc, "done": self.n, "total": self.total, "rate": round(self.rate(), 2), **self.fields}
        log.info(
            "%s%s: %d%s %s (%.1f %s/s) %s",
            self.desc, " done" if final else "", self.n, total, self.unit, self.rate(), self.unit, self._extra(),
            extra={"fields": fields},
        )

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled:
            self._log(final=True)
