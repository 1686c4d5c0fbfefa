"""All curation rules over a dataset, in order: text -> image -> provenance -> signals -> CLIP cut -> MetaCLIP balancing.

``curate(tables, filters)`` takes one table per shard (rows of the SAMPLES schema, scored when a
CLIP cut is configured) and returns them with each dropped row's status and reason set, plus the
balancing report. Dataset-wide rules (top fraction, balancing) see every shard at once; the
per-row rules are plain stages. Passes that hold a whole dataset's metadata call this; see
clipcrawl.filters.clip.cut for the shard-by-shard form of the CLIP cut.

Re-applicable: the image rules, the CLIP cut and balancing first undo their own earlier
decisions (their rows were downloaded, so they can come back); caption-rule drops stay (the
download pass skips those rows, so they have no image).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from clipcrawl.filters.clip.cut import CutRule, apply_cut, reset_cut
from clipcrawl.filters.images.rules import FilterImages
from clipcrawl.filters.metaclip import BalanceReport, apply_balance, reset_balance
from clipcrawl.filters.provenance import FilterProvenance, provenance_rules_on
from clipcrawl.filters.text import FilterCaptions
from clipcrawl.schemas.components import FiltersConfig
from clipcrawl.schemas.status import Status


def reset_status(table: pa.Table, status: Status) -> pa.Table:
    """Rows of ``status`` go back to ``success`` (their rule is about to be applied again)."""
    if table.num_rows == 0 or status.value not in table.column("status").to_pylist():
        return table
    st = [Status.SUCCESS.value if s == status.value else s for s in table.column("status").to_pylist()]
    em = [None if s == status.value else e for s, e in zip(table.column("status").to_pylist(),
                                                          table.column("error_message").to_pylist())]
    return table.set_column(table.schema.get_field_index("status"), "status", pa.array(st, pa.string())) \
        .set_column(table.schema.get_field_index("error_message"), "error_message", pa.array(em, pa.string()))


def curate(tables: Sequence[pa.Table], filters: FiltersConfig) -> tuple[list[pa.Table], BalanceReport | None]:
    text, image, prov = FilterCaptions(filters.text), FilterImages(filters.image), FilterProvenance(filters.image)
    # undo earlier decisions of the re-applicable rules first, so every rule sees every row again
    fresh = [reset_cut(reset_balance(reset_status(t, Status.FILTERED_IMAGE))) for t in tables]
    out = [prov(image(text(t))) for t in fresh]
    if filters.signals.has_rules():  # text-in-image, nudity, aesthetic (clipcrawl.filters.signals.rules)
        from clipcrawl.filters.signals.rules import apply_signal_rules

        out = apply_signal_rules(out, filters.signals)
    if filters.clip.enabled and any("clip_similarity" in t.column_names for t in out):
        out = apply_cut(out, CutRule.from_config(filters.clip))
    report = None
    if filters.balance.enabled:
        out, report = apply_balance(out, filters.balance)
    return out, report


def needs_curation(filters: FiltersConfig) -> bool:
    """Rules that only a pass over finished shards applies (image rules, dataset-wide cut, balancing)."""
    img, clip = filters.image, filters.clip
    return bool(img.enabled and (img.min_side or img.min_bytes or img.max_aspect_ratio != float("inf"))
                or provenance_rules_on(img)
                or (clip.enabled and (clip.top_fraction or clip.max_punsafe is not None
                                      or clip.max_pwatermark is not None))
                or filters.balance.enabled or filters.signals.has_rules())
