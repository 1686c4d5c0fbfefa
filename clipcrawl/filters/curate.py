"""All curation rules over a dataset, in order: text -> image -> CLIP cut -> MetaCLIP balancing.

``curate(tables, filters)`` takes one table per shard (rows of the SAMPLES schema, scored when a
CLIP cut is configured) and returns them with each dropped row's status and reason set, plus the
balancing report. Dataset-wide rules (top fraction, balancing) see every shard at once; the
per-row rules are plain stages. Passes that hold a whole dataset's metadata call this; see
clipcrawl.filters.clip.cut for the shard-by-shard form of the CLIP cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from clipcrawl.filters.clip.cut import CutRule, apply_cut
from clipcrawl.filters.images.rules import FilterImages
from clipcrawl.filters.metaclip import BalanceReport, apply_balance
from clipcrawl.filters.text import FilterCaptions
from clipcrawl.schemas.components import FiltersConfig


def curate(tables: Sequence[pa.Table], filters: FiltersConfig) -> tuple[list[pa.Table], BalanceReport | None]:
    text, image = FilterCaptions(filters.text), FilterImages(filters.image)
    out = [image(text(t)) for t in tables]
    if filters.clip.enabled and any("clip_similarity" in t.column_names for t in out):
        out = apply_cut(out, CutRule.from_config(filters.clip))
    report = None
    if filters.balance.enabled:
        out, report = apply_balance(out, filters.balance)
    return out, report
