"""The shared part of the signal stages: which rows, one decode, columns written back.

A :class:`Signal` is a Stage on its own (``process`` decodes the rows' images itself) and a part of
:class:`~clipcrawl.filters.signals.stage.ComputeSignals`, which decodes each image once for all of them.
Rows computed: ``success`` rows that hold image bytes; the others keep what their columns held. An image
that cannot be decoded, or that a detector fails on, becomes ``failed_to_score`` with
``"signals: <signal>: <reason>"`` (failures are data).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from clipcrawl.base.stage import Stage, mark, ok_mask, set_column
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN, SAMPLES

STAGE = "signals"


def default_threads(threads: int | None) -> int:
    return threads or max(1, min(8, os.cpu_count() or 1))


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB (the first frame; alpha dropped onto white)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            bg.alpha_composite(im)
            im = bg
        return np.asarray(im.convert("RGB"))


def work_rows(table: pa.Table) -> np.ndarray:
    """Indices of the rows a signal computes: success, with image bytes."""
    if IMAGE_COLUMN not in table.column_names:
        return np.zeros(0, dtype=np.int64)
    has = np.asarray([v is not None for v in table.column(IMAGE_COLUMN).to_pylist()], dtype=bool)
    return np.flatnonzero(ok_mask(table) & has)


def ort_providers(device: str) -> list[str]:
    """ONNX Runtime providers for ``device`` (auto: CUDA first when this onnxruntime has it)."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class Signal(Stage):
    """One signal: ``columns`` it writes, ``compute`` over decoded images."""

    name: ClassVar[str] = "signal"
    signal: ClassVar[str] = ""
    columns: ClassVar[tuple[str, ...]] = ()
    needs_pixels: ClassVar[bool] = True

    def source(self) -> str:
        """What produced the columns: package + version + model file (or the head file)."""
        raise NotImplementedError

    def compute_one(self, pixels: np.ndarray | None, caption: str, row: int, table: pa.Table) -> dict[str, Any]:
        raise NotImplementedError

    def compute(self, rows: Sequence[int], pixels: Sequence[np.ndarray | None], captions: Sequence[str],
                table: pa.Table) -> tuple[dict[str, list[Any]], dict[int, str]]:
        """Values per column for ``rows`` (in order) and {row: error} of the rows it failed on."""
        out: dict[str, list[Any]] = {c: [] for c in self.columns}
        errors: dict[int, str] = {}
        for r, px, cap in zip(rows, pixels, captions):
            try:
                vals = self.compute_one(px, cap, int(r), table)
            except Exception as e:  # noqa: BLE001 - a detector failing on one image is that row's failure
                errors[int(r)] = f"{self.signal}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
                vals = {}
            for c in self.columns:
                out[c].append(vals.get(c))
        return out, errors

    def process(self, table: pa.Table) -> pa.Table:
        from clipcrawl.filters.signals.stage import run_signals

        return run_signals([self], table, sources=[f"{self.signal}: {self.source()}"])


def write_columns(table: pa.Table, rows: Sequence[int], values: dict[str, list[Any]]) -> pa.Table:
    """Set ``values[col][i]`` at row ``rows[i]``; other rows keep the column's value (or null)."""
    n = table.num_rows
    for col, vals in values.items():
        typ = SAMPLES.field(col).type
        old = table.column(col).to_pylist() if col in table.column_names else [None] * n
        for r, v in zip(rows, vals):
            old[int(r)] = v
        table = set_column(table, col, pa.array(old, typ))
    return table


def mark_failed(table: pa.Table, errors: dict[int, str]) -> pa.Table:
    if not errors:
        return table
    mask = np.zeros(table.num_rows, dtype=bool)
    msgs: list[str | None] = [None] * table.num_rows
    for r, e in errors.items():
        mask[r], msgs[r] = True, e
    return mark(table, mask, Status.FAILED_TO_SCORE, STAGE, msgs)
