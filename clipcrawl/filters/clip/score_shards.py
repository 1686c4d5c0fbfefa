"""Score finished shards in place (the work behind ``clipcrawl score``).

For each shard: read the Parquet (every row) and the tar's images, reset rows an earlier threshold
filtered back to ``success``, run :class:`ScoreClip` (unless already scored by the same model and
no embeddings are wanted), optionally :class:`ApplyClipThreshold`, write the embeddings, then
rewrite the Parquet and ``_stats.json`` atomically (stats last: it marks the shard done).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.progress import Progress, log
from clipcrawl.base.shardfiles import IMAGE_EXTS, ShardRef, list_shards, read_images, shards_dir
from clipcrawl.base.stage import set_column
from clipcrawl.base.storage import fs_and_path, read_json, read_parquet, write_json, write_parquet
from clipcrawl.filters.clip.score import ApplyClipThreshold, ScoreClip
from clipcrawl.pipelines.writer import shard_stats
from clipcrawl.schemas.config import ClipConfig, ConfigError
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN, SAMPLES, conform


@dataclass
class ScoreSummary:
    root: str
    model: str = ""
    precision: str = ""
    shards: int = 0
    shards_rethresholded: int = 0
    rows: int = 0
    scored: int = 0
    no_image: int = 0
    failed_to_score: int = 0
    filtered_clip: int = 0
    kept: int = 0
    seconds: float = 0.0
    similarities: list[float] = field(default_factory=list)
    embeddings_dir: str | None = None
    threshold: float | None = None

    @property
    def rate(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def _reset_filtered(table: pa.Table) -> pa.Table:
    """Rows a previous threshold filtered go back to success: the decision is taken again."""
    if table.num_rows == 0:
        return table
    filtered = pc.equal(table.column("status"), Status.FILTERED_CLIP.value)
    if not pc.any(filtered).as_py():
        return table
    table = set_column(table, "status", pc.if_else(filtered, Status.SUCCESS.value, table.column("status")))
    if "error_message" in table.column_names:
        table = set_column(table, "error_message", pc.if_else(filtered, None, table.column("error_message")))
    return table


def _already_scored(table: pa.Table, model_name: str) -> bool:
    """Every success row has a score from ``model_name``."""
    if "clip_similarity" not in table.column_names or "clip_model" not in table.column_names:
        return False
    ok = pc.equal(table.column("status"), Status.SUCCESS.value)
    rows = table.filter(ok)
    if rows.num_rows == 0:
        return False
    same = pc.equal(rows.column("clip_model"), model_name)
    return bool(pc.all(pc.fill_null(same, False)).as_py()) and rows.column("clip_similarity").null_count == 0


def _count_rows(refs: list[ShardRef]) -> int:
    import pyarrow.parquet as pq

    total = 0
    for ref in refs:
        fs, p = fs_and_path(ref.parquet)
        with fs.open(p, "rb") as f:
            total += pq.read_metadata(f).num_rows
    return total


def score_shards(
    path: str,
    config: ClipConfig,
    *,
    apply_threshold: bool = True,
    embeddings_dir: str | None = None,
    rescore: bool = False,
) -> ScoreSummary:
    refs = list_shards(path)
    summary = ScoreSummary(root=shards_dir(path), threshold=config.threshold if apply_threshold else None)
    if not refs:
        log.error("%s: no finished shards (NNNNN.parquet + NNNNN_stats.json) found", path)
        return summary
    stage = ScoreClip(config)
    stage.setup()
    stage._is_setup = True
    summary.model, summary.precision = stage.clip.name, stage.clip.precision
    threshold = ApplyClipThreshold(config.threshold) if apply_threshold else None
    if config.save_embeddings:
        root = path.rstrip("/")
        summary.embeddings_dir = embeddings_dir or f"{root}/embeddings"
    log.info("scoring %d shard(s) in %s with %s (%s on %s)", len(refs), summary.root, stage.clip.name,
             stage.clip.precision, stage.clip.device)
    t0 = time.monotonic()
    with Progress("score", total=_count_rows(refs), unit="img") as bar:
        stage.progress = bar
        for ref in refs:
            _score_one(ref, stage, threshold, summary, bar, rescore or config.save_embeddings)
    summary.seconds = time.monotonic() - t0
    return summary


def _score_one(ref: ShardRef, stage: ScoreClip, threshold: ApplyClipThreshold | None,
               summary: ScoreSummary, bar: Progress, embed: bool) -> None:
    table = read_parquet(ref.parquet)
    for col in ("key", "status"):
        if col not in table.column_names:
            raise ConfigError(f"{ref.parquet}: no {col!r} column (fix: point at img2dataset/clipcrawl shards)")
    table = _reset_filtered(table)
    n_before = summary.scored
    if not embed and _already_scored(table, stage.clip.name):
        summary.shards_rethresholded += 1
        bar.update(table.num_rows)
    else:
        images = read_images(ref)
        keys = table.column("key").to_pylist()
        for ext in IMAGE_EXTS:  # output_format=parquet keeps the bytes in a column named after the format
            if ext in table.column_names and table.schema.field(ext).type in (pa.binary(), pa.large_binary()):
                for k, b in zip(keys, table.column(ext).to_pylist()):
                    if b is not None:
                        images.setdefault(k, b)
        table = set_column(table, IMAGE_COLUMN, pa.array([images.get(k) for k in keys], pa.binary()))
        ok = np.asarray(pc.equal(table.column("status"), Status.SUCCESS.value).to_numpy(zero_copy_only=False), bool)
        with_image = np.asarray([k in images for k in keys], bool)
        summary.no_image += int((ok & ~with_image).sum())
        bar.update(int((~(ok & with_image)).sum()))  # rows the stage does not batch
        table = stage(table)
        scored = pc.is_valid(table.column("image_embedding")).to_numpy(zero_copy_only=False)
        summary.scored += int(np.asarray(scored, bool).sum())
    if threshold is not None:
        table = threshold(table)
    if stage.config.save_embeddings and summary.embeddings_dir:
        from clipcrawl.filters.clip.embeddings import write_embeddings

        write_embeddings(table, summary.embeddings_dir, ref.name, shard=ref.name)
    statuses = table.column("status").to_pylist()
    summary.shards += 1
    summary.rows += table.num_rows
    summary.failed_to_score += statuses.count(Status.FAILED_TO_SCORE.value)
    summary.filtered_clip += statuses.count(Status.FILTERED_CLIP.value)
    summary.kept += statuses.count(Status.SUCCESS.value)
    sims = table.column("clip_similarity").drop_null().to_numpy(zero_copy_only=False)
    summary.similarities.extend(float(s) for s in sims)
    out = conform(table, SAMPLES)
    write_parquet(out, ref.parquet)
    _rewrite_stats(ref, out)
    log.debug("shard %s: %d rows, %d newly scored", ref.name, table.num_rows, summary.scored - n_before)


def _rewrite_stats(ref: ShardRef, table: pa.Table) -> None:
    """Recount statuses; keep the download's timing and byte counters."""
    try:
        old: dict[str, Any] = read_json(ref.stats)
    except (OSError, ValueError):
        old = {}
    now = time.time()
    new = shard_stats(table, old.get("start_time", now), old.get("end_time", now),
                         old.get("bytes_downloaded", 0), shard=old.get("shard", ref.name))
    new["duration"] = old.get("duration", new["duration"])
    merged = {**old, **new}
    write_json(merged, ref.stats)


def print_summary(s: ScoreSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"score -> {s.root}", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("model", f"{s.model} ({s.precision})")
    t.add_row("shards scored / only re-thresholded", f"{s.shards} / {s.shards_rethresholded}")
    t.add_row("rows", f"{s.rows:,}")
    t.add_row("embedded this run", f"{s.scored:,} in {s.seconds:.1f}s ({s.rate:,.1f} images/s)")
    if s.no_image:
        t.add_row("success rows without an image in the tar", f"{s.no_image:,}")
    t.add_row("failed_to_score", f"{s.failed_to_score:,}")
    if s.threshold is not None:
        t.add_row(f"filtered_clip (< {s.threshold:g})", f"{s.filtered_clip:,}")
    t.add_row("success", f"{s.kept:,}")
    if s.similarities:
        q = np.percentile(np.asarray(s.similarities), [5, 50, 95])
        t.add_row("clip_similarity p5 / p50 / p95", f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}")
    if s.embeddings_dir:
        t.add_row("embeddings", s.embeddings_dir)
    Console(stderr=False).print(t)
