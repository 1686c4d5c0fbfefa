"""Image rules on downloaded samples: minimum side, maximum aspect ratio, minimum bytes.

Plain functions over Arrow batches (:func:`image_problems`) and a :class:`Stage`
(:class:`FilterImages`) that sets ``filtered_image`` with ``"image: <reason>"``. Sizes are the
image's original ones (``original_width``/``original_height``, falling back to ``width``/
``height``), as DataComp's ``basic_filter`` reads them; ``bytes`` is the downloaded body size
(LAION-400M dropped images under 5 KB). Rows without the needed column pass that rule.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from clipcrawl.base.stage import Stage, mark, ok_mask
from clipcrawl.schemas.components import ImageFilterConfig
from clipcrawl.schemas.status import Status


def _ints(table: pa.Table, *names: str) -> np.ndarray:
    """First present column of ``names`` as float (NaN for null/missing)."""
    out = np.full(table.num_rows, np.nan)
    for name in names:
        if name in table.column_names:
            v = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            out = np.where(np.isnan(out), v, out)
    return out


def image_problems(table: pa.Table, cfg: ImageFilterConfig) -> list[str | None]:
    """One reason per row (None: passes). Checked in order: min bytes, min side, aspect ratio."""
    n = table.num_rows
    w = _ints(table, "original_width", "width")
    h = _ints(table, "original_height", "height")
    b = _ints(table, "bytes")
    reasons: list[str | None] = [None] * n
    short = np.fmin(w, h)
    long_ = np.fmax(w, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = long_ / short
    for i in range(n):
        if cfg.min_bytes and b[i] < cfg.min_bytes:
            reasons[i] = f"image has {int(b[i])} bytes < {cfg.min_bytes}"
        elif cfg.min_side and short[i] < cfg.min_side:
            reasons[i] = f"smaller side {int(short[i])} < {cfg.min_side}"
        elif np.isfinite(cfg.max_aspect_ratio) and aspect[i] > cfg.max_aspect_ratio:
            reasons[i] = f"aspect ratio {aspect[i]:.2f} > {cfg.max_aspect_ratio:g}"
    return reasons


class FilterImages(Stage):
    """Set ``filtered_image`` on success rows that fail an image rule."""

    name: ClassVar[str] = "image"

    def __init__(self, config: ImageFilterConfig | None = None) -> None:
        self.config = config or ImageFilterConfig()

    def process(self, table: pa.Table) -> pa.Table:
        if not self.config.enabled or table.num_rows == 0:
            return table
        reasons = image_problems(table, self.config)
        drop = np.array([r is not None for r in reasons]) & ok_mask(table)
        return mark(table, drop, Status.FILTERED_IMAGE, self.name, reasons)
