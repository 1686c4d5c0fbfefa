"""The CLIP cut: which scored pairs stay, decided over the whole dataset, re-applicable without rescoring.

Rules (:class:`CutRule`, from :class:`~clipcrawl.schemas.components.ClipConfig`), checked in order,
each giving ``filtered_clip`` with ``"clip_cut: <reason>"``:

1. ``max_punsafe``: ``punsafe > max_punsafe`` is dropped;
2. ``max_pwatermark``: ``pwatermark > max_pwatermark`` is dropped;
3. ``threshold``: ``clip_similarity < threshold`` is dropped (``-1`` or None: no absolute cut);
4. ``top_fraction`` P: only the P highest ``clip_similarity`` of all **candidates of the dataset**

``threshold_by`` / ``top_fraction_by`` move rules 3 and 4 to another score column (a further model's
``clip_similarity_<name>``, a ``clip_sigmoid``...). The fraction's cut-off is taken over every
candidate's score in that column, independent of the threshold, so ``threshold`` by one model and
``top_fraction`` by another is DataComp's intersection of two filters (preset
``datacomp-intersect-b32-l14``). A candidate without a score in a ranked column is dropped.
   stay. The cut-off is one number for all shards (:func:`global_cutoff`): the score of the
   ``ceil(P * N)``-th best candidate; every candidate scoring at least that stays (ties at the
   cut-off all stay, so slightly more than P may stay when scores tie).

Candidates are rows with a ``clip_similarity`` whose status is ``success`` or ``filtered_clip``
(so a previous cut, or a previous absolute threshold, is undone first by :func:`reset_cut` and
the rules are applied again to the stored scores: changing ``--top-fraction`` needs no
rescoring). Rows dropped by other rules (text, download, dedup ...) are neither candidates nor
touched.

How a pass calls it (the score pass, after every shard is scored):

    from clipcrawl.filters.clip.cut import CutRule, apply_cut, global_cutoff, cut_table
    rule = CutRule.from_config(cfg.filters.clip)
    # small datasets: tables = apply_cut(tables, rule)
    # large: one cut-off from the scores of all shards, then shard by shard
    cutoff = global_cutoff((candidate_scores(read_parquet(p)) for p in shard_parquets), rule.top_fraction)
    for p in shard_parquets: write(cut_table(read_parquet(p), rule, cutoff))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from clipcrawl.base.stage import mark, set_column
from clipcrawl.schemas.components import ClipConfig
from clipcrawl.schemas.configbase import ConfigError
from clipcrawl.schemas.status import Status

STAGE = "clip_cut"
_CUT_PREFIXES = (f"{STAGE}:", "clip_threshold:")  # ours and ApplyClipThreshold's


@dataclass(frozen=True)
class CutRule:
    threshold: float | None = None
    top_fraction: float | None = None
    max_punsafe: float | None = None
    max_pwatermark: float | None = None
    threshold_by: str = "clip_similarity"
    top_fraction_by: str = "clip_similarity"

    @classmethod
    def from_config(cls, cfg: ClipConfig) -> CutRule:
        return cls(None if cfg.threshold <= -1 else cfg.threshold, cfg.top_fraction, cfg.max_punsafe,
                   cfg.max_pwatermark, cfg.threshold_by, cfg.top_fraction_by)

    def describe(self) -> str:
        parts = []
        if self.threshold is not None:
            parts.append(f"{self.threshold_by} >= {self.threshold:g}")
        if self.top_fraction is not None:
            parts.append(f"top {self.top_fraction:.0%} by {self.top_fraction_by} (whole dataset)")
        if self.max_punsafe is not None:
            parts.append(f"punsafe <= {self.max_punsafe:g}")
        if self.max_pwatermark is not None:
            parts.append(f"pwatermark <= {self.max_pwatermark:g}")
        return ", ".join(parts) or "no CLIP cut"


def _floats(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def reset_cut(table: pa.Table) -> pa.Table:
    """Undo a previous CLIP cut: ``filtered_clip`` rows set by a cut go back to ``success``."""
    if table.num_rows == 0:
        return table
    st = table.column("status").to_pylist()
    em = table.column("error_message").to_pylist() if "error_message" in table.column_names else [None] * len(st)
    changed = False
    for i, (s, e) in enumerate(zip(st, em)):
        if s == Status.FILTERED_CLIP.value and (e or "").startswith(_CUT_PREFIXES):
            st[i], em[i], changed = Status.SUCCESS.value, None, True
    if not changed:
        return table
    table = set_column(table, "status", pa.array(st, pa.string()))
    return set_column(table, "error_message", pa.array(em, pa.string()))


def candidate_mask(table: pa.Table) -> np.ndarray:
    """Rows the cut decides on: scored, and ``success`` or ``filtered_clip``."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=bool)
    st = np.asarray(table.column("status").to_pylist(), dtype=object)
    ok = (st == Status.SUCCESS.value) | (st == Status.FILTERED_CLIP.value)
    return ok & ~np.isnan(_floats(table, "clip_similarity"))


def candidate_scores(table: pa.Table, column: str = "clip_similarity") -> np.ndarray:
    return _floats(table, column)[candidate_mask(table)]


def global_cutoff(score_arrays: Iterable[np.ndarray], top_fraction: float | None) -> float | None:
    """The lowest score that stays under ``top_fraction`` over all arrays (None: no fraction rule or no scores)."""
    if top_fraction is None:
        return None
    scores = [np.asarray(a, dtype=np.float64) for a in score_arrays]
    allv = np.concatenate(scores) if scores else np.zeros(0)
    allv = allv[~np.isnan(allv)]
    if allv.size == 0:
        return None
    k = max(1, math.ceil(top_fraction * allv.size - 1e-9))
    return float(np.partition(allv, allv.size - k)[allv.size - k])


def cut_reasons(table: pa.Table, rule: CutRule, cutoff: float | None) -> list[str | None]:
    ps, pw = (_floats(table, c) for c in ("punsafe", "pwatermark"))
    tcol, fcol = rule.threshold_by, rule.top_fraction_by
    sim, rank = _floats(table, tcol), _floats(table, fcol)
    out: list[str | None] = []
    for s, f, u, w in zip(sim, rank, ps, pw):
        r = None
        if rule.max_punsafe is not None and u > rule.max_punsafe:
            r = f"punsafe {u:.3f} > {rule.max_punsafe:g}"
        elif rule.max_pwatermark is not None and w > rule.max_pwatermark:
            r = f"pwatermark {w:.3f} > {rule.max_pwatermark:g}"
        elif rule.threshold is not None and not s >= rule.threshold:
            r = f"{tcol} {s:.3f} < {rule.threshold:g}"
        elif cutoff is not None and not f >= cutoff:
            r = f"{fcol} {f:.3f} below the top {rule.top_fraction:.0%} cut-off {cutoff:.4f}"
        out.append(r)
    return out


def cut_table(table: pa.Table, rule: CutRule, cutoff: float | None) -> pa.Table:
    """Apply ``rule`` (with the dataset-wide ``cutoff`` of :func:`global_cutoff`) to one shard's table."""
    table = reset_cut(table)
    if table.num_rows == 0:
        return table
    reasons = cut_reasons(table, rule, cutoff)
    drop = candidate_mask(table) & np.array([r is not None for r in reasons])
    return mark(table, drop, Status.FILTERED_CLIP, STAGE, reasons)


def rank_columns(rule: CutRule) -> list[str]:
    """The score columns ``rule`` reads for its threshold and fraction."""
    return ([rule.threshold_by] if rule.threshold is not None else []) + (
        [rule.top_fraction_by] if rule.top_fraction is not None else [])


def check_columns(tables: Sequence[pa.Table], rule: CutRule) -> None:
    """A rule over a score column that no shard has (a model that was not scored) is a ConfigError."""
    if any(t.num_rows for t in tables):
        check_available(rule, {c for t in tables for c in t.column_names})


def check_available(rule: CutRule, available: set[str]) -> None:
    """ConfigError when ``rule`` ranks by a column outside ``available`` (what the shards hold plus what
    this pass's scorers write); the score command calls it before scoring anything."""
    for col in rank_columns(rule):
        if col not in available:
            raise ConfigError(f"the CLIP cut ranks by {col}, which no shard has (fix: score with the model that "
                              f"writes it, e.g. filters.clip.models / a second --model, or rank by clip_similarity)")


def apply_cut(tables: Sequence[pa.Table], rule: CutRule) -> list[pa.Table]:
    """The cut over a whole dataset held as tables (one per shard): per-row status and reason."""
    tables = [reset_cut(t) for t in tables]
    check_columns(tables, rule)
    cutoff = global_cutoff((candidate_scores(t, rule.top_fraction_by) for t in tables), rule.top_fraction)
    return [cut_table(t, rule, cutoff) for t in tables]
