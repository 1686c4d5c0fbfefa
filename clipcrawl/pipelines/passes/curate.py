"""Dataset-wide curation of finished shards, in place: ``curate_shards(DIR, filters, preset=...)``.

Reads every shard's Parquet, runs :func:`clipcrawl.filters.curate.curate` over all of them at once
(text rules, image rules, the CLIP cut with a dataset-wide ``top_fraction``, MetaCLIP balancing),
rewrites each shard that changed through the shard loop (:func:`~clipcrawl.pipelines.writer.rewrite_shard`:
the tar holds exactly the success rows, dropped images wait in ``shards/dropped/``, Parquet, stats last),
and writes ``DIR/curation.json``: the preset and its rules, drops per rule, and the MetaCLIP entry
distribution before/after. A published dataset's ``samples/`` and manifest are refreshed
(:func:`clipcrawl.pipelines.manifest.refresh`). Re-running with other rules re-decides the image,
CLIP and balancing rules from the stored columns; nothing is rescored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.progress import log
from clipcrawl.base.shardfiles import list_shards
from clipcrawl.base.storage import read_parquet, write_json
from clipcrawl.filters.clip.cut import CutRule
from clipcrawl.filters.curate import curate
from clipcrawl.filters.presets import describe_preset
from clipcrawl.pipelines.lock import hold_dataset
from clipcrawl.pipelines.passes.rewrite import ReadShards, RewriteShards, ShardRewrite, changed
from clipcrawl.pipelines.shardloop import run_pass
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
    failures: list[str] = field(default_factory=list)  # shards that could not be read or rewritten


def _rule_of(msg: str) -> str:
    """``"image: smaller side 150 < 200"`` -> ``"image: smaller side"`` (counts per rule, not per value)."""
    stage, _, reason = msg.partition(": ")
    words = []
    for w in reason.split():
        if any(c.isdigit() for c in w) or w in ("<", ">", "<=", ">="):
            break
        words.append(w)
    return f"{stage}: {' '.join(words)}".strip()


def curate_shards(path: str, filters: FiltersConfig, preset: str | None = None, engine: Any = None
                  ) -> CurationSummary:
    layout = DatasetLayout.of(path)
    with hold_dataset(layout.root):  # before the shards are listed
        return _curate(layout, filters, preset, engine)


def _curate(layout: DatasetLayout, filters: FiltersConfig, preset: str | None, engine: Any) -> CurationSummary:
    path = layout.root
    refs = list_shards(layout.shards)
    summary = CurationSummary(root=layout.shards, preset=describe_preset(preset))
    summary.rules = {"text": filters.text.model_dump(), "image": filters.image.model_dump(),
                     "clip_cut": CutRule.from_config(filters.clip).describe(),
                     "balance": filters.balance.model_dump() if filters.balance.enabled else None}
    if filters.signals.has_rules():
        from clipcrawl.filters.signals.rules import describe

        summary.rules["signals"] = describe(filters.signals)
    if not refs:
        log.error("%s: no finished shards found", path)
        return summary
    reader = ReadShards()
    summary.failures = [f.shard for f in run_pass(reader, refs, engine)]
    out, report = curate(reader.tables, filters)
    counts: Counter[str] = Counter()
    drops: Counter[str] = Counter()
    jobs = []
    for ref, before, table in zip(reader.refs, reader.tables, out):
        table = conform(table, SAMPLES)
        if changed(before, table):
            jobs.append(ShardRewrite(ref, table, before.select(["status", "error_message"])))
    summary.failures += [f.shard for f in run_pass(RewriteShards(), jobs, engine)]
    for ref in reader.refs:  # counts as written (a row without its image keeps its old status)
        table = read_parquet(ref.parquet, ["status", "error_message"])
        for s, e in zip(table.column("status").to_pylist(), table.column("error_message").to_pylist()):
            counts[s] += 1
            if s in _OWN and e:
                drops[_rule_of(e)] += 1
    summary.shards, summary.rows = len(reader.refs), sum(t.num_rows for t in out)
    summary.status_counts, summary.drops_by_rule = dict(counts), dict(drops.most_common())
    if report is not None:
        summary.balance_entries = report.top(50)
    write_json(asdict(summary), layout.p("curation.json"))
    if not layout.plain:  # a dataset: its published samples/ and manifest counts follow
        from clipcrawl.pipelines.manifest import load_manifest, refresh

        if load_manifest(layout.root).get("runs"):
            refresh(layout.root, [r.name for r in reader.refs])
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
