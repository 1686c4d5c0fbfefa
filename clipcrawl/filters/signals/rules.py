"""The signal rules over a whole dataset, from the stored columns (re-cuts never rescore).

Checked in order on ``success`` rows, each giving ``filtered_image`` with ``"signals: <reason>"``
(:func:`clipcrawl.filters.curate.curate` first puts every ``filtered_image`` row back to ``success``, so
changing a rule re-decides it):

1. ``max_nsfw_score``: ``nsfw_score > max`` is dropped;
2. ``max_text_area``: ``text_area > max``;
3. ``max_caption_ocr_overlap``: ``caption_ocr_overlap > max`` ("caption spells the image");
4. ``min_aesthetic``: ``aesthetic < min``;
5. ``top_fraction`` P by ``top_by``: the cut-off is one value over every candidate of the dataset (rows
   still ``success`` with a value): the ``ceil(P * N)``-th best; ``aesthetic`` ranks high first,
   ``text_area``/``caption_ocr_overlap``/``nsfw_score`` low first. Ties at the cut-off stay.

Rows without the column (not computed) pass its rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from clipcrawl.base.stage import mark, ok_mask
from clipcrawl.schemas.components import SignalsConfig
from clipcrawl.schemas.status import Status

STAGE = "signals"
HIGH_FIRST = {"aesthetic"}


def _floats(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def describe(cfg: SignalsConfig) -> list[str]:
    out = []
    if cfg.max_nsfw_score is not None:
        out.append(f"nsfw_score <= {cfg.max_nsfw_score:g}")
    if cfg.max_text_area is not None:
        out.append(f"text_area <= {cfg.max_text_area:g}")
    if cfg.max_caption_ocr_overlap is not None:
        out.append(f"caption_ocr_overlap <= {cfg.max_caption_ocr_overlap:g} (caption does not just spell the image)")
    if cfg.min_aesthetic is not None:
        out.append(f"aesthetic >= {cfg.min_aesthetic:g}")
    if cfg.top_fraction is not None:
        order = "highest" if cfg.top_by in HIGH_FIRST else "lowest"
        out.append(f"top {cfg.top_fraction:.0%} by {cfg.top_by} ({order} first, whole dataset)")
    return out


def _reasons(table: pa.Table, cfg: SignalsConfig) -> list[str | None]:
    n = table.num_rows
    out: list[str | None] = [None] * n
    checks = (("nsfw_score", cfg.max_nsfw_score, ">"), ("text_area", cfg.max_text_area, ">"),
              ("caption_ocr_overlap", cfg.max_caption_ocr_overlap, ">"), ("aesthetic", cfg.min_aesthetic, "<"))
    for col, bound, op in checks:
        if bound is None:
            continue
        v = _floats(table, col)
        bad = v > bound if op == ">" else v < bound
        for i in np.flatnonzero(bad):
            if out[i] is None:
                out[i] = f"{col} {v[i]:.3f} {op} {bound:g}"
    return out


def apply_signal_rules(tables: Sequence[pa.Table], cfg: SignalsConfig) -> list[pa.Table]:
    """The rules over a dataset held as tables (one per shard)."""
    if not cfg.has_rules():
        return list(tables)
    out = []
    for t in tables:
        if t.num_rows:
            reasons = _reasons(t, cfg)
            t = mark(t, np.array([r is not None for r in reasons]), Status.FILTERED_IMAGE, STAGE, reasons)
        out.append(t)
    if cfg.top_fraction is None:
        return out
    col, high = cfg.top_by, cfg.top_by in HIGH_FIRST
    vals = [_floats(t, col) for t in out]
    cand = [ok_mask(t) & ~np.isnan(v) for t, v in zip(out, vals)]
    allv = np.concatenate([v[c] for v, c in zip(vals, cand)]) if out else np.zeros(0)
    if allv.size == 0:
        return out
    k = max(1, math.ceil(cfg.top_fraction * allv.size - 1e-9))
    key = -allv if high else allv  # smaller key = better
    cutoff = float(np.partition(key, k - 1)[k - 1])
    res = []
    for t, v, c in zip(out, vals, cand):
        key_t = -v if high else v
        drop = c & (key_t > cutoff)
        shown = -cutoff if high else cutoff
        msg = f"{col} below the top {cfg.top_fraction:.0%} cut-off {shown:.4f}" if high else \
            f"{col} above the top {cfg.top_fraction:.0%} cut-off {shown:.4f}"
        res.append(mark(t, drop, Status.FILTERED_IMAGE, STAGE, msg) if drop.any() else t)
    return res
