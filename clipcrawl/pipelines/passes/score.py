"""The ``score`` pass: CLIP-score finished shards in place (``clipcrawl score``).

Per shard: read the Parquet (every row) and the images of its ``success`` rows (tar, files folder or
image column), run :class:`ScoreClip` (unless every row is already scored by the same model and no
embeddings are wanted), with a threshold :class:`ApplyClipThreshold`, write the embeddings, then
rewrite the shard (:func:`~clipcrawl.pipelines.writer.rewrite_shard`: the tar holds exactly the
``success`` rows, Parquet, ``_stats.json`` last). With a threshold, rows an earlier threshold filtered
are decided again (their images wait in ``shards/dropped/``); without one, statuses do not change.
A dataset's ``samples/`` and manifest follow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.progress import log
from clipcrawl.base.shardfiles import ShardRef, index_tar, list_shards, shard_images
from clipcrawl.base.stage import set_column
from clipcrawl.base.storage import exists, read_parquet
from clipcrawl.filters.clip.score import ApplyClipThreshold, ScoreClip
from clipcrawl.filters.signals import signal_stage
from clipcrawl.pipelines.lock import hold_dataset
from clipcrawl.pipelines.shardloop import ShardFailure, ShardPass, run_pass
from clipcrawl.pipelines.writer import dropped_ref, rewrite_shard
from clipcrawl.schemas.config import ClipConfig, ConfigError, SignalsConfig
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN

BEFORE = "__status_before"  # transient: statuses and messages as read, for rewrite_shard
BEFORE_ERROR = "__error_before"


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
    failures: list[ShardFailure] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ScoredShard:
    rows: int
    scored: int
    no_image: int
    rethresholded: bool
    statuses: dict[str, int]
    similarities: list[float]


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


def _already_scored(table: pa.Table, model_name: str | dict[str, str], with_image: set[str] | None = None) -> bool:
    """Every success row (that has an image, when ``with_image`` says which do) has a score from
    ``model_name`` (or, several models, from each: ``{clip_model column: name}``)."""
    if isinstance(model_name, dict):
        return all(_already_scored(table.rename_columns(_as_primary(table.column_names, col)), name, with_image)
                   for col, name in model_name.items())
    if "clip_similarity" not in table.column_names or "clip_model" not in table.column_names:
        return False
    ok = pc.equal(table.column("status"), Status.SUCCESS.value)
    if with_image is not None:
        ok = pc.and_(ok, pc.is_in(table.column("key"), pa.array(sorted(with_image), pa.string())))
    rows = table.filter(ok)
    if rows.num_rows == 0:
        return False
    same = pc.equal(rows.column("clip_model"), model_name)
    return bool(pc.all(pc.fill_null(same, False)).as_py()) and rows.column("clip_similarity").null_count == 0


def _signals_missing(table: pa.Table, signals: SignalsConfig | None, with_image: set[str] | None) -> bool:
    """A success row (with an image) lacks a requested signal's column: the images are read again."""
    if signals is None or not signals.compute:
        return False
    cols = {"text": "text_area", "nsfw": "nsfw_score", "aesthetic": "aesthetic"}
    ok = pc.equal(table.column("status"), Status.SUCCESS.value)
    if with_image is not None:
        ok = pc.and_(ok, pc.is_in(table.column("key"), pa.array(sorted(with_image), pa.string())))
    rows = table.filter(ok)
    return any(cols[s] not in rows.column_names or rows.column(cols[s]).null_count for s in signals.compute)


def _as_primary(names: list[str], model_column: str) -> list[str]:
    """Column names with ``clip_model_<x>``/``clip_similarity_<x>`` renamed to the primary's (and the
    primary's out of the way), so one check serves every model."""
    suffix = model_column[len("clip_model"):]
    if not suffix:
        return names
    swap = {"clip_model" + suffix: "clip_model", "clip_similarity" + suffix: "clip_similarity"}
    return [swap.get(n, "__primary_" + n if n in ("clip_model", "clip_similarity") else n) for n in names]


class ScorePass(ShardPass):
    name = "score"
    write_behind = True

    def __init__(self, config: ClipConfig, threshold: bool, embeddings_dir: str | None, embed: bool,
                 summary: ScoreSummary, signals: SignalsConfig | None = None) -> None:
        super().__init__()
        self.config, self.embeddings_dir, self.embed, self.summary = config, embeddings_dir, embed, summary
        self.clip = ScoreClip(config)
        self.signals = signals
        sig = signal_stage(signals, config.unsafe_head) if signals is not None else None
        self.computing = [self.clip] + ([sig] if sig is not None else [])  # stages that need the images
        self.stages = self.computing + ([ApplyClipThreshold(config.threshold, config.threshold_by)] if threshold
                                        else [])
        self.threshold = threshold

    def read(self, ref: ShardRef) -> pa.Table:
        table = read_parquet(ref.parquet)
        for col in ("key", "status"):
            if col not in table.column_names:
                raise ConfigError(f"{ref.parquet}: no {col!r} column (fix: point at img2dataset/clipcrawl shards)")
        if "error_message" not in table.column_names:
            table = table.append_column("error_message", pa.nulls(table.num_rows, pa.string()))
        table = table.append_column(BEFORE, table.column("status")).append_column(
            BEFORE_ERROR, table.column("error_message"))
        if self.threshold:
            table = _reset_filtered(table)
        with_image = set(index_tar(ref.tar)) if exists(ref.tar) else None  # rows without one cannot be scored
        if (self.embed or not _already_scored(table, self.clip.ready().model_names, with_image)
                or _signals_missing(table, self.signals, with_image)):
            images = shard_images(ref)
            if self.threshold:  # rows an earlier threshold dropped are decided again with their images
                for k, v in shard_images(dropped_ref(ref)).items():
                    images.setdefault(k, v)
            keys = table.column("key").to_pylist()
            table = set_column(table, IMAGE_COLUMN, pa.array([images.get(k) for k in keys], pa.binary()))
        return table

    def stages_for(self, ref: ShardRef, table: pa.Table) -> list:
        return self.stages if IMAGE_COLUMN in table.column_names else self.stages[len(self.computing):]

    def write(self, ref: ShardRef, table: pa.Table) -> ScoredShard:
        rethresholded = IMAGE_COLUMN not in table.column_names
        decided = [Status.SUCCESS.value] + ([Status.FILTERED_CLIP.value] if self.threshold else [])
        ok = np.asarray(pc.is_in(table.column(BEFORE), pa.array(decided)).to_numpy(zero_copy_only=False), bool)
        no_image = scored = 0
        if not rethresholded:
            with_image = np.asarray(pc.is_valid(table.column(IMAGE_COLUMN)).to_numpy(zero_copy_only=False), bool)
            no_image = int((ok & ~with_image).sum())
            scored = int(np.asarray(pc.is_valid(table.column("image_embedding")).to_numpy(zero_copy_only=False),
                                    bool).sum())
        if self.config.save_embeddings and self.embeddings_dir and "image_embedding" in table.column_names:
            from clipcrawl.filters.clip.embeddings import write_embeddings

            write_embeddings(table, self.embeddings_dir, ref.name, shard=ref.name)
        before = pa.table({"status": table.column(BEFORE), "error_message": table.column(BEFORE_ERROR)})
        out = rewrite_shard(ref, table.drop_columns([BEFORE, BEFORE_ERROR]), before)
        statuses: dict[str, int] = {}
        for s in out.column("status").to_pylist():
            statuses[s] = statuses.get(s, 0) + 1
        sims = out.column("clip_similarity").drop_null().to_numpy(zero_copy_only=False)
        return ScoredShard(out.num_rows, scored, no_image, rethresholded, statuses, [float(s) for s in sims])

    def publish(self, ref: ShardRef, r: ScoredShard) -> None:
        summary = self.summary
        summary.shards += 1
        summary.shards_rethresholded += r.rethresholded
        summary.rows += r.rows
        summary.scored += r.scored
        summary.no_image += r.no_image
        summary.failed_to_score += r.statuses.get(Status.FAILED_TO_SCORE.value, 0)
        summary.filtered_clip += r.statuses.get(Status.FILTERED_CLIP.value, 0)
        summary.kept += r.statuses.get(Status.SUCCESS.value, 0)
        summary.similarities.extend(r.similarities)


def score_shards(path: str, config: ClipConfig, *, apply_threshold: bool = True, embeddings_dir: str | None = None,
                 rescore: bool = False, engine: Any = None, signals: SignalsConfig | None = None) -> ScoreSummary:
    """Score the dataset's finished shards in place. The dataset lock is taken before the shards are
    listed (a ``run`` still writing shards makes this exit 3, not score a part of them) and the model is
    loaded before the first write (a model that cannot load changes nothing)."""
    layout = DatasetLayout.of(path)
    with hold_dataset(layout.root):
        refs = list_shards(layout.shards)
        summary = ScoreSummary(root=layout.shards, threshold=config.threshold if apply_threshold else None)
        if not refs:
            log.error("%s: no finished shards (NNNNN.parquet + NNNNN_stats.json) found", path)
            return summary
        if config.save_embeddings:
            summary.embeddings_dir = embeddings_dir or layout.embeddings
        p = ScorePass(config, apply_threshold, summary.embeddings_dir, rescore or config.save_embeddings, summary,
                      signals)
        clip = p.clip.ready().clip
        if signals is not None and "aesthetic" in signals.compute:  # the head fits the model, before any write
            from clipcrawl.filters.clip.safety_head import load_head

            load_head(str(signals.aesthetic_head), "aesthetic", clip.embed_dim)
        summary.model = " + ".join(p.clip.model_names.values())
        summary.precision = clip.precision
        log.info("scoring %d shard(s) in %s with %s (%s on %s)", len(refs), summary.root, clip.name, clip.precision,
                 clip.device)

        t0 = time.monotonic()
        summary.failures = run_pass(p, refs, engine)
        summary.seconds = time.monotonic() - t0
        if not layout.plain:
            from clipcrawl.pipelines.manifest import load_manifest, refresh

            done = {r.name for r in refs} - {f.shard for f in summary.failures}
            if load_manifest(layout.root).get("runs"):
                refresh(layout.root, sorted(done))
    return summary


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
