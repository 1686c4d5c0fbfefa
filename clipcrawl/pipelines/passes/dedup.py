"""The ``dedup`` pass over existing shards (a dataset, or an img2dataset / ``clipcrawl download`` folder).

Two runs of the shard loop around one global decision:

1. **read** (per shard, any worker): the Parquet; missing ``pixel_hash``/``phash`` (and, for the crop-
   tolerant verification, thumbnails) computed from the images in the tar; image embeddings taken from
   ``DIR/embeddings/`` (clip-retrieval layout) or computed with ``--model``/``--pretrained``.
2. **decide** (driver): :class:`~clipcrawl.filters.dedup.stage.MarkDuplicates` over all rows at once with
   the keep rule (highest clip_similarity, then largest original area, then shard/row order).
3. **write** (per changed shard, any worker): :func:`~clipcrawl.pipelines.writer.rewrite_shard` (the tar
   keeps exactly the success rows unless ``keep_tars``; dropped images go to ``shards/dropped/``).

In a dataset, ``samples/`` and ``manifest.json`` are refreshed and ``DATASET/dedup`` is rebuilt from the
result. Running it twice changes nothing the second time. Unreadable shards are left out and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.progress import log
from clipcrawl.base.shardfiles import ShardRef, list_shards, read_images
from clipcrawl.base.stage import ok_mask, set_column
from clipcrawl.base.storage import read_parquet
from clipcrawl.pipelines.lock import hold_dataset
from clipcrawl.pipelines.passes.rewrite import RewriteShards, ShardRewrite
from clipcrawl.pipelines.shardloop import ShardFailure, ShardPass, run_pass
from clipcrawl.schemas.config import ClipConfig, ConfigError, DedupConfig
from clipcrawl.schemas.tables import SAMPLES, conform

HASHED = "__hashed"  # transient: this shard's hashes were filled in (its Parquet must be rewritten)
EMBEDDING = "image_embedding"


@dataclass
class DedupReport:
    shards: int = 0
    rows: int = 0
    considered: int = 0  # rows still success before the pass
    counts: dict[str, int] = field(default_factory=dict)  # newly marked, per method
    rewritten_shards: list[str] = field(default_factory=list)  # shards whose files changed
    semantic: str = "off"  # where embeddings came from, or why semantic did not run
    embedding_model: str | None = None
    failures: list[ShardFailure] = field(default_factory=list)

    @property
    def rewritten(self) -> int:
        return len(self.rewritten_shards)

    @property
    def marked(self) -> int:
        return sum(self.counts.values())


def hash_missing(table: pa.Table, ref: ShardRef, thumbnails: bool) -> tuple[pa.Table, dict[str, bytes] | None, bool]:
    """Fill null pixel_hash/phash of success rows from the tar's images and, with ``thumbnails``,
    add the transient thumbnail column the perceptual verification uses (consumed by the stage).
    Returns (table, images read or None, whether hashes were filled: the Parquet must be rewritten)."""
    from clipcrawl.filters.dedup.columns import THUMB_COLUMN
    from clipcrawl.filters.dedup.hashes import image_hashes

    ok = ok_mask(table)
    cols = {c: (table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows)
            for c in ("pixel_hash", "phash")}
    need = [i for i in range(table.num_rows) if ok[i] and (cols["pixel_hash"][i] is None or cols["phash"][i] is None)]
    todo = np.flatnonzero(ok).tolist() if thumbnails else need
    if not todo:
        return table, None, False
    images = read_images(ref)
    keys = table.column("key").to_pylist()
    thumbs: list[bytes | None] = [None] * table.num_rows
    for i in todo:
        h = image_hashes(images.get(keys[i]), thumbnail=thumbnails)
        thumbs[i] = h.thumb
        cols["pixel_hash"][i] = cols["pixel_hash"][i] or h.pixel_hash
        cols["phash"][i] = cols["phash"][i] if cols["phash"][i] is not None else h.phash
    if thumbnails:
        table = set_column(table, THUMB_COLUMN, pa.array(thumbs, pa.binary()))
    if need:
        table = set_column(table, "pixel_hash", pa.array(cols["pixel_hash"], pa.string()))
        table = set_column(table, "phash", pa.array(cols["phash"], pa.uint64()))
    return table, images, bool(need)


class ReadForDedup(ShardPass):
    """Step 1: each shard's rows with hashes (and thumbnails, embeddings) ready for the decision."""

    name = "dedup: read shards"

    def __init__(self, root: str, config: DedupConfig, embedder: Any) -> None:
        super().__init__()
        self.config, self.embedder = config, embedder
        self.lookup = None
        if config.semantic:
            from clipcrawl.filters.dedup.rebuild import EmbeddingLookup

            self.lookup = EmbeddingLookup(root)
        self.tables: list[pa.Table] = []
        self.refs: list[ShardRef] = []

    def read(self, ref: ShardRef) -> pa.Table:
        table, images, hashed = hash_missing(read_parquet(ref.parquet), ref, self.config.phash)
        table = set_column(table, HASHED, pa.array([hashed] * table.num_rows, pa.bool_()))
        if not self.config.semantic:
            return table
        ok = ok_mask(table)
        keys = table.column("key").to_pylist()
        emb = self.lookup.get(keys) if self.lookup is not None else None
        missing = ok.copy() if emb is None else ok & ~np.any(emb != 0, axis=1)
        if self.embedder is not None and missing.any():
            images = images if images is not None else read_images(ref)
            got = self.embedder.embed([images.get(keys[i]) for i in np.flatnonzero(missing)])
            if emb is None or emb.shape[1] != got.emb.shape[1]:
                emb = np.zeros((table.num_rows, got.emb.shape[1]), dtype=np.float32)
            emb[np.flatnonzero(missing)] = got.emb
        if emb is not None:
            table = table.append_column(EMBEDDING, pa.array(list(emb.astype(np.float32)),
                                                            pa.list_(pa.float32(), emb.shape[1])))
        return table

    def write(self, ref: ShardRef, table: pa.Table) -> pa.Table:
        return table  # nothing to write in this step: the rows go to the driver

    def publish(self, ref: ShardRef, table: pa.Table) -> None:
        self.refs.append(ref)
        self.tables.append(table)


def _stack_embeddings(tables: list[pa.Table]) -> pa.Array | None:
    dims = [t.schema.field(EMBEDDING).type.list_size for t in tables if EMBEDDING in t.column_names]
    if not dims:
        return None
    d = max(dims)
    parts = [np.stack(t.column(EMBEDDING).to_numpy(zero_copy_only=False))
             if EMBEDDING in t.column_names and t.schema.field(EMBEDDING).type.list_size == d and t.num_rows
             else np.zeros((t.num_rows, d), np.float32) for t in tables]
    return pa.array(list(np.concatenate(parts).astype(np.float32)), pa.list_(pa.float32(), d))


def dedup_dataset(path: str, config: DedupConfig, *, model: str | None = None, pretrained: str | None = None,
                  device: str = "auto", keep_tars: bool = False, dry_run: bool = False,
                  allow_tiny: bool = False, engine: Any = None) -> DedupReport:
    """Run the pass (see the module doc) and return what it did.

    ``model`` embeds images that have no stored embedding. The shipped tiny test model is refused for
    semantic dedup (its embedding space puts distinct images above any useful threshold) unless
    ``allow_tiny`` or ``dry_run``: a test model must not delete data. ``allow_tiny`` (``--allow-tiny``) also
    lets stored embeddings of the tiny model take part (``DedupConfig.semantic_tiny``)."""
    from clipcrawl.filters.clip.model import TINY_ALIASES

    layout = DatasetLayout.of(path)
    if model in TINY_ALIASES and config.semantic:
        if not (allow_tiny or dry_run):
            raise ConfigError(
                f"--model {model}: the shipped tiny CLIP is a test model; its embeddings put distinct images "
                f"above the semantic threshold, so semantic dedup with it would delete real data "
                f"(fix: pass a real CLIP model, --no-semantic, or --allow-tiny to force it)")
        config = config.model_copy(update={"semantic_tiny": True})
    elif allow_tiny:
        config = config.model_copy(update={"semantic_tiny": True})
    with hold_dataset(layout.root, shared=dry_run):  # a dry run only reads; the lock before the listing
        refs = list_shards(layout.shards)
        if not refs:
            raise ConfigError(f"{path}: no finished shards (NNNNN.parquet + NNNNN_stats.json) found")
        return _dedup(layout, refs, config, model, pretrained, device, keep_tars, dry_run, engine)


def _dedup(layout: DatasetLayout, refs: list[ShardRef], config: DedupConfig, model: str | None,
           pretrained: str | None, device: str, keep_tars: bool, dry_run: bool, engine: Any) -> DedupReport:
    from clipcrawl.filters.dedup.embed import ImageEmbedder
    from clipcrawl.filters.dedup.stage import MarkDuplicates

    report = DedupReport(shards=len(refs))
    embedder = ImageEmbedder(model, pretrained, device) if config.semantic and model else None
    reader = ReadForDedup(layout.root, config, embedder)
    report.failures = run_pass(reader, refs, engine)
    tables, refs = reader.tables, reader.refs
    if not tables:
        return report
    report.rows = sum(t.num_rows for t in tables)
    sizes = [t.num_rows for t in tables]
    emb = _stack_embeddings(tables)
    whole = pa.concat_tables([t.drop_columns([c for c in (EMBEDDING,) if c in t.column_names]) for t in tables],
                             promote_options="permissive")
    report.considered = int(ok_mask(whole).sum())
    if config.semantic and emb is not None:
        whole = whole.append_column(EMBEDDING, emb)
        report.semantic = f"embeddings of {embedder.name if embedder else layout.embeddings}"
        report.embedding_model = embedder.name if embedder else next(
            (m for m in (whole.column("clip_model").to_pylist() if "clip_model" in whole.column_names else []) if m),
            None)
    elif config.semantic:
        report.semantic = (f"skipped: no embeddings in {layout.embeddings} "
                           f"(pass --model with a real CLIP model, or --no-semantic)")
        log.warning("dedup: semantic %s", report.semantic)
    clip = ClipConfig(model=model, pretrained=pretrained, device=device) if model else None
    stage = MarkDuplicates(config.model_copy(update={"index": False}), None, clip, sync=False)
    out = stage(whole.drop_columns([HASHED]))
    report.counts = {k: v for k, v in stage.counts.items() if v}
    if dry_run:
        return report
    jobs, start = [], 0
    for ref, n, old in zip(refs, sizes, tables):
        new = conform(out.slice(start, n), SAMPLES)
        start += n
        became = [s0 == "success" and s1 != "success" for s0, s1 in
                  zip(old.column("status").to_pylist(), new.column("status").to_pylist())]
        hashed = old.num_rows > 0 and bool(old.column(HASHED)[0].as_py())
        if any(became) or hashed:
            jobs.append(ShardRewrite(ref, new, old.select(["status", "error_message"])))
    report.rewritten_shards = [j.ref.name for j in jobs]
    report.failures += run_pass(RewriteShards(keep_tars), jobs, engine)
    failed = {f.shard for f in report.failures}
    report.rewritten_shards = [n for n in report.rewritten_shards if n not in failed]
    from clipcrawl.filters.dedup.columns import THUMB_COLUMN

    if THUMB_COLUMN in whole.column_names:  # the stage dropped it; the rebuilt index keeps thumbnails
        out = out.append_column(THUMB_COLUMN, whole.column(THUMB_COLUMN))
    _refresh_dataset(layout, refs, out, stage, report)
    return report


def _refresh_dataset(layout: DatasetLayout, refs: list[ShardRef], out: pa.Table, stage: Any,
                     report: DedupReport) -> None:
    """In a dataset: re-publish runs whose shards changed, and rebuild DATASET/dedup from the result."""
    from clipcrawl.filters.dedup.columns import fingerprints
    from clipcrawl.filters.dedup.partitioned import open_index
    from clipcrawl.pipelines.manifest import load_manifest, refresh

    if layout.plain:  # a plain shard folder (img2dataset / clipcrawl download output)
        return
    if load_manifest(layout.root).get("runs"):  # idempotent: also completes a publish a killed pass left
        refresh(layout.root, [r.name for r in refs])
    index_dir = stage.config.index_dir or layout.dedup_index  # DATASET/dedup also on an object store
    fp = fingerprints(out, only_success=True, model=report.embedding_model)
    index = open_index(index_dir, stage.config.partitions, "local")  # dedup.partitions: DATASET/dedup/part-NN
    index.replace_all(fp, [r.name for r in refs])
    if hasattr(index, "close"):
        index.close()
