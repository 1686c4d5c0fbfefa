"""``clipcrawl dedup DIR [--phash-distance K] [--semantic-threshold TAU] [--no-semantic] [--exclude-near PATH...]``.

A dedup pass over existing shards (a dataset, which uses ``DATASET/shards``, or an img2dataset /
``clipcrawl download`` output folder). It reads every finished shard's Parquet; computes missing
``pixel_hash``/``phash`` from the images in the tars; takes image embeddings from
``DIR/embeddings`` (clip-retrieval layout) or computes them with ``--model``/``--pretrained``
(``--model tiny`` is the shipped test model); marks duplicates across all shards at once with the
keep rule (highest clip_similarity, then largest original area, then shard/row order); then
rewrites each changed Parquet atomically, drops the newly marked samples from its tar (unless
``--keep-tars``) and refreshes its stats. In a dataset it also refreshes ``samples/`` and
``manifest.json`` and rebuilds ``DATASET/dedup`` from the result. Prints counts per method.
Running it twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer

ORDER = 50


@dataclass
class DedupReport:
    shards: int = 0
    rows: int = 0
    considered: int = 0  # rows still success before the pass
    counts: dict[str, int] = field(default_factory=dict)  # newly marked, per method
    rewritten_shards: list[str] = field(default_factory=list)  # shards whose files changed
    semantic: str = "off"  # where embeddings came from, or why semantic did not run
    embedding_model: str | None = None

    @property
    def rewritten(self) -> int:
        return len(self.rewritten_shards)

    @property
    def marked(self) -> int:
        return sum(self.counts.values())


def _hash_missing(table: Any, ref: Any, thumbnails: bool) -> tuple[Any, dict[str, bytes] | None, bool]:
    """Fill null pixel_hash/phash of success rows from the tar's images and, with ``thumbnails``,
    add the transient thumbnail column the perceptual verification uses (consumed by the stage).
    Returns (table, images read or None, whether hashes were filled: the Parquet must be rewritten)."""
    import numpy as np
    import pyarrow as pa

    from clipcrawl.base.shardfiles import read_images
    from clipcrawl.base.stage import ok_mask, set_column
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


def dedup_dataset(path: str, config: Any, *, model: str | None = None, pretrained: str | None = None,
                  device: str = "auto", keep_tars: bool = False, dry_run: bool = False) -> DedupReport:
    """Run the pass (see the module doc) and return what it did."""
    import numpy as np
    import pyarrow as pa

    from clipcrawl.base.progress import Progress, log
    from clipcrawl.base.shardfiles import list_shards, read_images
    from clipcrawl.base.stage import ok_mask
    from clipcrawl.base.storage import read_parquet
    from clipcrawl.filters.dedup.embed import ImageEmbedder
    from clipcrawl.filters.dedup.rebuild import EmbeddingLookup
    from clipcrawl.filters.dedup.stage import MarkDuplicates
    from clipcrawl.schemas.config import ClipConfig, ConfigError

    refs = list_shards(path)
    if not refs:
        raise ConfigError(f"{path}: no finished shards (NNNNN.parquet + NNNNN_stats.json) found")
    from clipcrawl.filters.clip.model import TINY_ALIASES

    if model in TINY_ALIASES:  # embedding with the tiny model was asked for explicitly
        config = config.model_copy(update={"semantic_tiny": True})
    report = DedupReport(shards=len(refs))
    lookup = EmbeddingLookup(path.rstrip("/").removesuffix("/shards")) if config.semantic else None
    embedder = ImageEmbedder(model, pretrained, device) if config.semantic and model else None
    tables, embs, filled, have_emb = [], [], [], False
    with Progress("dedup: read shards", total=len(refs), unit="shard") as bar:
        for ref in refs:
            table, images, hashed = _hash_missing(read_parquet(ref.parquet), ref, config.phash)
            emb = None
            if config.semantic:
                ok = ok_mask(table)
                keys = table.column("key").to_pylist()
                emb = lookup.get(keys) if lookup is not None else None
                missing = ok.copy() if emb is None else ok & ~np.any(emb != 0, axis=1)
                if embedder is not None and missing.any():
                    images = images if images is not None else read_images(ref)
                    got = embedder.embed([images.get(keys[i]) for i in np.flatnonzero(missing)])
                    if emb is None or emb.shape[1] != got.emb.shape[1]:
                        emb = np.zeros((table.num_rows, got.emb.shape[1]), dtype=np.float32)
                    emb[np.flatnonzero(missing)] = got.emb
                have_emb |= emb is not None
            tables.append(table)
            filled.append(hashed)
            embs.append(emb)
            bar.update(1)
    report.rows = sum(t.num_rows for t in tables)
    sizes = [t.num_rows for t in tables]
    whole = pa.concat_tables(tables, promote_options="permissive")
    report.considered = int(ok_mask(whole).sum())
    if config.semantic and have_emb:
        d = max(e.shape[1] for e in embs if e is not None)
        emb_all = np.concatenate([e if e is not None and e.shape[1] == d else np.zeros((n, d), np.float32)
                                  for e, n in zip(embs, sizes)])
        whole = whole.append_column("image_embedding", pa.array(list(emb_all.astype(np.float32)),
                                                                 pa.list_(pa.float32(), d)))
        report.semantic = f"embeddings of {embedder.name if embedder else 'DIR/embeddings'}"
        report.embedding_model = embedder.name if embedder else next(
            (m for m in (whole.column("clip_model").to_pylist() if "clip_model" in whole.column_names else []) if m),
            None)
    elif config.semantic:
        report.semantic = "skipped: no embeddings in DIR/embeddings (pass --model, e.g. --model tiny)"
        log.warning("dedup: semantic %s", report.semantic)
    clip = ClipConfig(model=model, pretrained=pretrained, device=device) if model else None
    stage = MarkDuplicates(config.model_copy(update={"index": False}), None, clip, sync=False)
    out = stage(whole)
    report.counts = {k: v for k, v in stage.counts.items() if v}
    if not dry_run:
        report.rewritten_shards = _write_back(refs, out, sizes, tables, filled, keep_tars)
        from clipcrawl.filters.dedup.columns import THUMB_COLUMN

        if THUMB_COLUMN in whole.column_names:  # the stage dropped it; the rebuilt index keeps thumbnails
            out = out.append_column(THUMB_COLUMN, whole.column(THUMB_COLUMN))
        _refresh_dataset(path, refs, out, stage, report)
    return report


def _write_back(refs: list, out: Any, sizes: list[int], before: list, filled: list[bool],
                keep_tars: bool) -> list[str]:
    """Rewrite the Parquet (and tar, stats) of every shard whose rows changed."""
    from clipcrawl.base.shardfiles import iter_tar
    from clipcrawl.base.storage import atomic_open, read_json, write_json, write_parquet
    from clipcrawl.pipelines.writer import TarShardWriter, shard_stats
    from clipcrawl.schemas.tables import SAMPLES, conform

    changed: list[str] = []
    start = 0
    for ref, n, old, hashed in zip(refs, sizes, before, filled):
        new = conform(out.slice(start, n), SAMPLES)
        start += n
        dropped = {k for k, s0, s1 in zip(old.column("key").to_pylist(), old.column("status").to_pylist(),
                                           new.column("status").to_pylist()) if s0 == "success" and s1 != "success"}
        if not dropped and not hashed:
            continue
        if dropped and not keep_tars:
            from clipcrawl.base.storage import fs_and_path

            fs, tar = fs_and_path(ref.tar)
            if fs.exists(tar):
                with atomic_open(ref.tar) as f:
                    w = TarShardWriter(f)
                    for sample in iter_tar(ref.tar):
                        if sample["__key__"] not in dropped:
                            w.add(sample["__key__"], {k: v for k, v in sample.items() if k != "__key__"})
                    w.close()
        write_parquet(new, ref.parquet)
        try:
            old_stats = read_json(ref.stats)
        except (OSError, ValueError):
            old_stats = {}
        stats = shard_stats(new, old_stats.get("start_time", 0.0), old_stats.get("end_time", 0.0),
                            old_stats.get("bytes_downloaded", 0), shard=ref.name)
        write_json({**old_stats, **stats}, ref.stats)
        changed.append(ref.name)
    return changed


def _refresh_dataset(path: str, refs: list, out: Any, stage: Any, report: DedupReport) -> None:
    """In a dataset: re-publish runs whose shards changed, and rebuild DATASET/dedup from the result."""
    from clipcrawl.base.shardfiles import shards_dir
    from clipcrawl.base.storage import fs_and_path
    from clipcrawl.filters.dedup.columns import fingerprints
    from clipcrawl.filters.dedup.rebuild import default_index_dir
    from clipcrawl.filters.dedup.store import DedupIndex
    from clipcrawl.pipelines.dataset import load_manifest, refresh

    root = path.rstrip("/")
    if shards_dir(root) == root:  # a plain shard folder (img2dataset / clipcrawl download output)
        return
    if report.rewritten_shards and load_manifest(root).get("runs"):
        refresh(root, report.rewritten_shards)
    index_dir = stage.config.index_dir or default_index_dir(root)
    if "://" in index_dir or "://" in fs_and_path(root)[1]:
        return
    fp = fingerprints(out, only_success=True, model=report.embedding_model)
    DedupIndex.open(index_dir).replace_all(fp, [r.name for r in refs])


def dedup_cmd(
    path: str = typer.Argument(..., help="Dataset dir (uses DATASET/shards) or a folder of shards."),
    phash_distance: int | None = typer.Option(None, "--phash-distance", min=0, max=32,
                                              help="pHash Hamming distance k (default: DedupConfig's)."),
    semantic_threshold: float | None = typer.Option(None, "--semantic-threshold", min=0.0, max=1.0,
                                                    help="CLIP cosine tau (default: DedupConfig's)."),
    no_semantic: bool = typer.Option(False, "--no-semantic", help="Skip embedding-based dedup."),
    no_phash: bool = typer.Option(False, "--no-phash", help="Skip perceptual-hash dedup."),
    exclude_near: list[str] = typer.Option([], "--exclude-near", help="Evaluation image folder or .tar shards "
                                           "(repeatable); near-duplicates of them are dropped."),
    model: str | None = typer.Option(None, "--model", help="CLIP model to embed images without stored "
                                     "embeddings (e.g. tiny, ViT-B-32)."),
    pretrained: str | None = typer.Option(None, "--pretrained", help="open_clip pretrained tag or checkpoint."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
    keep_tars: bool = typer.Option(False, "--keep-tars", help="Only rewrite Parquet; leave tars as they are."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be marked; write nothing."),
) -> None:
    """Mark duplicates across all shards of DIR (exact, pHash, semantic, eval sets)."""
    from clipcrawl.schemas.config import DedupConfig, parse_config

    update: dict[str, Any] = {"exclude_near": list(exclude_near)}
    if phash_distance is not None:
        update["phash_max_distance"] = phash_distance
    if semantic_threshold is not None:
        update["semantic_threshold"] = semantic_threshold
    if no_semantic:
        update["semantic"] = False
    if no_phash:
        update["phash"] = False
    config = parse_config({**DedupConfig().model_dump(), **update}, DedupConfig, "clipcrawl dedup options")
    if model and pretrained is None and model not in ("tiny", "clipcrawl-tiny"):
        pretrained = "openai"
    r = dedup_dataset(path, config, model=model, pretrained=pretrained, device=device, keep_tars=keep_tars,
                      dry_run=dry_run)
    by = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())) or "none"
    typer.echo(f"{r.rows} rows in {r.shards} shards, {r.considered} success before the pass")
    typer.echo(f"duplicates marked: {r.marked} ({by}); semantic: {r.semantic}")
    if not dry_run:
        typer.echo(f"shards rewritten: {r.rewritten}")


def register(app: typer.Typer) -> None:
    app.command("dedup")(dedup_cmd)
