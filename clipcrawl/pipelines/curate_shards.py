"""Dataset-wide curation of finished shards, in place: ``curate_shards(DIR, filters, preset=...)``.

Reads every shard's Parquet, runs :func:`clipcrawl.filters.curate.curate` over all of them at once
(text rules, image rules, the CLIP cut with a dataset-wide ``top_fraction``, MetaCLIP balancing),
rewrites each Parquet atomically and its ``_stats.json`` with the new counts (stats last), and
writes ``DIR/curation.json``: the preset and its rules, drops per rule, and the MetaCLIP entry
distribution before/after. The tars are not rewritten (as in ``clipcrawl score``): consumers
read ``status`` from the Parquet / the stats; a published dataset's ``samples/`` and manifest are
refreshed (:func:`clipcrawl.pipelines.dataset.refresh`). Re-running with other rules re-decides the image,
CLIP and balancing rules from the stored columns; nothing is rescored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from clipcrawl.base.progress import log
from clipcrawl.base.shardfiles import list_shards, shards_dir
from clipcrawl.base.storage import read_json, read_parquet, write_json, write_parquet
from clipcrawl.filters.clip.cut import CutRule
from clipcrawl.filters.curate import curate
from clipcrawl.filters.presets import describe_preset
from clipcrawl.pipelines.writer import shard_stats
from clipcrawl.schemas.components import FiltersConfig
from clipcrawl.schemas.tables import SAMPLES, conform

_OWN = ("filtered_text", "filtered_image", "filtered_clip", "filtered_balance")


@dataclass
class CurationSummary:
    root: str
    shards: int = 0
    rows: int = 0
    preset: list[str] = field(default_factory=list)
    rules: dict[str, Any] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)
    drops_by_rule: dict[str, int] = field(default_factory=dict)  # "<stage>: <reason without numbers>"
    balance_entries: list[tuple[str, int, int]] = field(default_factory=list)  # entry, before, after


def _rule_of(msg: str) -> str:
    """``"image: smaller side 150 < 200"`` -> ``"image: smaller side"`` (counts per rule, not per value)."""
    stage, _, reason = msg.partition(": ")
    words = []
    for w in reason.split():
        if any(c.isdigit() for c in w) or w in ("<", ">", "<=", ">="):
            break
        words.append(w)
    return f"{stage}: {' '.join(words)}".strip()


def curate_shards(path: str, filters: FiltersConfig, preset: str | None = None) -> CurationSummary:
    refs = list_shards(path)
    summary = CurationSummary(root=shards_dir(path), preset=describe_preset(preset))
    summary.rules = {"text": filters.text.model_dump(), "image": filters.image.model_dump(),
                     "clip_cut": CutRule.from_config(filters.clip).describe(),
                     "balance": filters.balance.model_dump() if filters.balance.enabled else None}
    if not refs:
        log.error("%s: no finished shards found", path)
        return summary
    tables = [read_parquet(r.parquet) for r in refs]
    out, report = curate(tables, filters)
    counts: Counter[str] = Counter()
    drops: Counter[str] = Counter()
    for ref, table in zip(refs, out):
        table = conform(table, SAMPLES)
        write_parquet(table, ref.parquet)
        old = read_json(ref.stats)
        stats = shard_stats(table, old.get("start_time", 0.0), old.get("end_time", 0.0),
                            old.get("bytes_downloaded", 0), shard=ref.name)
        write_json({**old, **stats}, ref.stats)
        for s, e in zip(table.column("status").to_pylist(), table.column("error_message").to_pylist()):
            counts[s] += 1
            if s in _OWN and e:
                drops[_rule_of(e)] += 1
    summary.shards, summary.rows = len(refs), sum(t.num_rows for t in out)
    summary.status_counts, summary.drops_by_rule = dict(counts), dict(drops.most_common())
    if report is not None:
        summary.balance_entries = report.top(50)
    write_json(asdict(summary), f"{path.rstrip('/')}/curation.json")
    root = path.rstrip("/")
    if shards_dir(root) != root:  # a dataset: its published samples/ and manifest counts follow
        from clipcrawl.pipelines.dataset import load_manifest, refresh

        if load_manifest(root).get("runs"):
            refresh(root, [r.name for r in refs])
    return summary


def print_curation(s: CurationSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"curation -> {s.root}", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("count", justify="right")
    for line in s.preset:
        t.add_row(line, "")
    t.add_row("shards / rows", f"{s.shards} / {s.rows:,}")
    for status, n in sorted(s.status_counts.items(), key=lambda kv: -kv[1]):
        t.add_row(f"  {status}", f"{n:,}")
    for rule, n in s.drops_by_rule.items():
        t.add_row(f"  dropped by {rule}", f"{n:,}")
    for entry, before, after in s.balance_entries[:10]:
        t.add_row(f"  entry {entry!r} before -> after", f"{before:,} -> {after:,}")
    Console(stderr=False).print(t)
