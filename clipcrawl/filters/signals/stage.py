"""``ComputeSignals``: every configured signal over one decode of each image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pyarrow as pa

from clipcrawl.base.stage import Stage
from clipcrawl.filters.signals.base import (
    Signal,
    decode_rgb,
    mark_failed,
    work_rows,
    write_columns,
)
from clipcrawl.schemas.components import SignalsConfig
from clipcrawl.schemas.tables import IMAGE_COLUMN


def build_signals(cfg: SignalsConfig) -> list[Signal]:
    out: list[Signal] = []
    for name in cfg.compute:
        if name == "text":
            from clipcrawl.filters.signals.text import TextSignal

            out.append(TextSignal(cfg.threads, cfg.device))
        elif name == "nsfw":
            from clipcrawl.filters.signals.nsfw import NsfwSignal

            out.append(NsfwSignal(cfg.threads, cfg.device))
        elif name == "aesthetic":
            from clipcrawl.filters.signals.aesthetic import AestheticSignal

            out.append(AestheticSignal(str(cfg.aesthetic_head)))
    return out


def run_signals(signals: Sequence[Signal], table: pa.Table, sources: Sequence[str], tick=None,
                rows: Sequence[int] | None = None) -> pa.Table:
    """Decode each work row's image once (``rows``: a part of them), run every signal on it, write their
    columns and ``signal_sources``."""
    rows = work_rows(table) if rows is None else rows
    if table.num_rows == 0 or len(rows) == 0:
        return table
    images = table.column(IMAGE_COLUMN).to_pylist()
    captions_all = table.column("caption").to_pylist() if "caption" in table.column_names else [None] * table.num_rows
    captions = [c if isinstance(c, str) else "" for c in (captions_all[r] for r in rows)]
    pixels: list = []
    errors: dict[int, str] = {}
    if any(s.needs_pixels for s in signals):
        for r in rows:
            try:
                pixels.append(decode_rgb(images[r]))
            except Exception as e:  # noqa: BLE001 - an undecodable image is that row's failure
                pixels.append(None)
                errors[int(r)] = f"decode: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    else:
        pixels = [None] * len(rows)
    for s in signals:
        s.ready()
        values, errs = s.compute(rows, pixels, captions, table)
        for r, e in errs.items():
            errors.setdefault(r, e)
        table = write_columns(table, rows, values)
    if sources:
        table = write_columns(table, rows, {"signal_sources": ["; ".join(sources)] * len(rows)})
    if tick is not None:
        tick(len(rows))
    return mark_failed(table, errors)


class ComputeSignals(Stage):
    """Every signal of ``SignalsConfig.compute`` on one decode per image, plus the trained-head provenance."""

    name: ClassVar[str] = "signals"
    reports_progress: ClassVar[bool] = True
    chunk: ClassVar[int] = 64  # rows between two progress ticks
    _transient = ("signals",)

    def __init__(self, config: SignalsConfig, unsafe_head: str | None = None) -> None:
        self.config, self.unsafe_head = config, unsafe_head
        self.signals = None

    def setup(self) -> None:
        self.signals = build_signals(self.config)
        for s in self.signals:
            s.ready()

    def sources(self) -> list[str]:
        self.ready()
        out = [f"{s.signal}: {s.source()}" for s in self.signals]
        if self.unsafe_head:
            from clipcrawl.filters.clip.safety_head import load_head

            out.append(f"punsafe: {load_head(self.unsafe_head, 'punsafe').describe()}")
        return out

    def process(self, table: pa.Table) -> pa.Table:
        if not hasattr(self, "_sources"):
            self._sources = self.sources()
        todo = work_rows(table)
        for i in range(0, len(todo), self.chunk):
            part = todo[i:i + self.chunk]
            table = run_signals(self.signals, table, self._sources, rows=part)
            self.tick(len(part))
        return table


__all__ = ["ComputeSignals", "build_signals", "run_signals"]
