"""The ``reshard`` pass: DataComp's resharder for our shards (``clipcrawl reshard``).

After filtering and dedup, shards hold fewer kept samples than they were cut for. Two runs of the
shard loop: **index** reads the kept rows (status ``success`` and present in the tar) of every input
shard (the shards the manifest lists when it has one, else every finished shard) with the tar's member
offsets (headers only); **write** writes new shards of exactly N samples (the last one holds the rest),
copying each image's bytes by offset, into a new dataset OUT (default ``DIR/resharded``):
``OUT/shards/NNNNN.{tar,parquet}``, ``NNNNN_stats.json``, ``OUT/samples/``, ``OUT/manifest.json``
(``derived_from`` names DIR). Each ``<key>.json`` and Parquet row carries the new shard id. The same
input, N and seed give byte-identical tars and Parquet files. DIR and OUT may be any fsspec URLs.

When DIR has ``embeddings/`` (``score --save-embeddings``), OUT gets them too, in the same clip-retrieval
layout (``filters/clip/embeddings.write_embeddings``): one part per OUT shard, its rows the OUT shard's rows
in the same order (kept samples only), the vectors looked up by key in DIR's parts. A kept sample with no
vector in DIR (scored without ``--save-embeddings``) gets no row, as ``score`` writes none for it (counted
in the summary as ``missing_embeddings``). DIR's ``config.yaml`` is copied, so ``card OUT`` states its rules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.layout import MANIFEST, SAMPLES_DIR, DatasetLayout
from clipcrawl.base.progress import log
from clipcrawl.base.shardfiles import ShardRef, image_ext, index_tar, list_shards
from clipcrawl.base.storage import exists, fs_and_path, read_parquet, remove
from clipcrawl.pipelines.lock import check_manifest, hold_dataset
from clipcrawl.pipelines.shardloop import ShardFailure, ShardPass, run_pass
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas.config import ConfigError
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN, SAMPLES

Span = tuple[str, int, int, str]  # (tar url, data offset, size, image extension)


@dataclass
class ReshardResult:
    out: str
    shards: list[ShardRef]
    samples: int
    input_shards: int
    missing_in_tar: int = 0  # success rows whose image was not in the tar (skipped)
    manifest_entry: dict[str, Any] = field(default_factory=dict)
    failures: list[ShardFailure] = field(default_factory=list)


@dataclass
class Indexed:
    table: pa.Table
    spans: list[Span]
    missing: int


class IndexKept(ShardPass):
    """Step 1: the kept rows of each input shard and where their images are in its tar."""

    name = "reshard: index shards"

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[pa.Table] = []
        self.spans: list[Span] = []
        self.missing = 0

    def read(self, ref: ShardRef) -> pa.Table:
        if not exists(ref.tar):
            raise ConfigError(f"{ref.tar}: missing; reshard reads webdataset shards (output_format: webdataset)")
        table = read_parquet(ref.parquet)
        return table.filter(pc.equal(table.column("status"), Status.SUCCESS.value))

    def write(self, ref: ShardRef, table: pa.Table) -> Indexed:
        members = index_tar(ref.tar)
        keep, spans, missing = [], [], 0
        for i, key in enumerate(table.column("key").to_pylist()):
            ext = image_ext(members.get(key, {}))
            if ext is None:
                missing += 1
                continue
            keep.append(i)
            spans.append((ref.tar, *members[key][ext], ext))
        return Indexed(table.take(pa.array(keep, pa.int64())), spans, missing)

    def publish(self, ref: ShardRef, r: Indexed) -> None:
        self.tables.append(r.table)
        self.spans.extend(r.spans)
        self.missing += r.missing


@dataclass
class OutShard:
    ref: ShardRef
    rows: pa.Table
    spans: list[Span]
    source: str
    embeddings: str | None = None  # OUT/embeddings when DIR has embeddings
    img_emb: np.ndarray | None = None  # this shard's kept rows that have vectors, in row order
    text_emb: np.ndarray | None = None
    has_emb: np.ndarray | None = None  # bool per row: whether DIR has its vectors

    @property
    def name(self) -> str:
        return self.ref.name


class WriteResharded(ShardPass):
    """Step 2: one output shard: its rows, the image bytes copied from the input tars."""

    name = "reshard"

    def __init__(self, write_behind: bool = True) -> None:
        super().__init__()
        self.write_behind = write_behind
        self.written: list[ShardRef] = []

    def read(self, job: OutShard) -> pa.Table:
        return job.rows.append_column(IMAGE_COLUMN, pa.array(read_spans(job.spans), pa.binary()))

    def write(self, job: OutShard, table: pa.Table) -> ShardRef:
        if job.embeddings is not None:  # the part before the shard: a finished shard always has its part
            write_embedding_part(job)
        write_shard(job.ref, table, image_exts=[s[3] for s in job.spans], start_time=time.time(),
                    extra_stats={"resharded_from": job.source})
        return job.ref

    def publish(self, job: OutShard, ref: ShardRef) -> None:
        self.written.append(ref)


def read_spans(spans: list[Span]) -> list[bytes]:
    """Image bytes for each (tar, offset, size, ext), reading each tar in offset order."""
    out: list[bytes] = [b""] * len(spans)
    handles: dict[str, Any] = {}
    try:
        for i in sorted(range(len(spans)), key=lambda i: spans[i][:2]):
            url, offset, size, _ = spans[i]
            if url not in handles:
                fs, path = fs_and_path(url)
                handles[url] = fs.open(path, "rb")
            f = handles[url]
            f.seek(offset)
            out[i] = f.read(size)
    finally:
        for f in handles.values():
            f.close()
    return out


def _fixed_list(a: np.ndarray) -> pa.FixedSizeListArray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def write_embedding_part(job: OutShard) -> None:
    """OUT/embeddings part ``job.name``: the shard's rows that have vectors, through score's writer."""
    from clipcrawl.filters.clip.embeddings import write_embeddings

    rows = job.rows.filter(pa.array(job.has_emb, pa.bool_()))
    rows = rows.drop_columns([c for c in ("image_embedding", "text_embedding") if c in rows.column_names])
    rows = rows.append_column("image_embedding", _fixed_list(job.img_emb))
    rows = rows.append_column("text_embedding", _fixed_list(job.text_emb))
    write_embeddings(rows, job.embeddings, job.name, shard=job.name)


@dataclass
class SourceEmbeddings:
    """DIR's embedding parts, concatenated, and the row of each key."""
    img: np.ndarray
    text: np.ndarray
    row: dict[str, int]

    def take(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = [self.row.get(k, -1) for k in keys]
        has = np.array([i >= 0 for i in idx], bool)
        sel = np.array([i for i in idx if i >= 0], np.int64)
        return self.img[sel], self.text[sel], has


def _source_embeddings(source: DatasetLayout) -> SourceEmbeddings | None:
    """DIR's embeddings (None without an ``embeddings/`` folder); a malformed one stops the pass (exit 2)."""
    from clipcrawl.pipelines.manifest import check_embeddings

    fs, p = fs_and_path(source.embeddings)
    if not fs.isdir(p):
        return None
    try:
        layout = check_embeddings(source.embeddings)
    except ValueError as e:
        raise ConfigError(f"{source.embeddings}: cannot carry the embeddings: {e} (fix: clipcrawl verify {source.root})") from e
    if layout.text_dim is None:
        raise ConfigError(f"{source.embeddings}: no text_emb/ parts: reshard carries image and text embeddings")
    imgs, texts, row = [], [], {}
    for part in layout.parts:
        keys = read_parquet(f"{source.embeddings}/metadata/metadata_{part}.parquet", ["key"]).column("key").to_pylist()
        for sub, out in (("img_emb", imgs), ("text_emb", texts)):
            f_fs, f_p = fs_and_path(f"{source.embeddings}/{sub}/{sub}_{part}.npy")
            with f_fs.open(f_p, "rb") as f:
                out.append(np.load(f))
        base = sum(len(a) for a in imgs[:-1])
        row.update((k, base + i) for i, k in enumerate(keys))
    img = np.concatenate(imgs) if imgs else np.zeros((0, layout.image_dim or 0), np.float16)
    text = np.concatenate(texts) if texts else np.zeros((0, layout.text_dim or 0), np.float16)
    return SourceEmbeddings(img, text, row)


def _input_shards(src: DatasetLayout) -> list[ShardRef]:
    from clipcrawl.pipelines.manifest import load_manifest

    listed = load_manifest(src.root)["shards"]
    if listed:  # the published snapshot, not shards a running run is still adding
        return [ShardRef(src.shards, name) for name in listed]
    return list_shards(src.shards)


def _is_reshard(out: DatasetLayout) -> bool:
    """Whether ``out`` holds an earlier reshard: its manifest says ``derived_from``, or (a reshard killed
    before it published) its finished shards' stats say ``resharded_from``, or nothing in it is finished."""
    from clipcrawl.base.storage import read_json
    from clipcrawl.pipelines.manifest import load_manifest

    try:
        runs = load_manifest(out.root)["runs"]
    except ValueError:
        return False
    if runs:
        return all("derived_from" in (r.get("summary") or {}) for r in runs)
    for ref in list_shards(out.shards):
        try:
            if "resharded_from" not in read_json(ref.stats):
                return False
        except (OSError, ValueError):
            return False
    return True


def reshard(src: str, out: str | None = None, samples_per_shard: int = 10_000, *, shuffle: bool = False,
            seed: int = 0, overwrite: bool = False, workers: int = 2, engine: Any = None) -> ReshardResult:
    """Write the kept samples of ``src`` as new shards of ``samples_per_shard`` samples in ``out``.
    ``workers``: 1 reads and writes one shard at a time; 2 or more write a shard while the next is read."""
    src = src.rstrip("/")
    source = DatasetLayout.of(src)
    target = DatasetLayout((out or f"{src}/resharded").rstrip("/"))
    if samples_per_shard < 1:
        raise ConfigError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    if fs_and_path(target.root)[1] in (fs_and_path(src)[1], fs_and_path(source.shards)[1]):
        raise ConfigError(f"--out {target.root} would overwrite the input {src}: choose another folder")
    # the source is read under a shared lock for the whole pass (a score or dedup rewriting it waits, or
    # this exits 3), OUT under its own exclusive one; both before anything is listed
    with hold_dataset(src, shared=True):
        check_manifest(src)  # an unreadable source manifest: exit 2 before anything is made or changed
        no_tar = next((r for r in _input_shards(source) if not exists(r.tar)), None)
        if no_tar is not None:  # a Parquet/files-format shard: refused before OUT is made
            raise ConfigError(f"{no_tar.tar}: missing; reshard reads webdataset shards (output_format: webdataset)")
        with hold_dataset(target.root, create=True):
            return _reshard(src, source, target, samples_per_shard, shuffle, seed, overwrite, workers, engine)


def _reshard(src: str, source: DatasetLayout, target: DatasetLayout, samples_per_shard: int, shuffle: bool,
             seed: int, overwrite: bool, workers: int, engine: Any) -> ReshardResult:
    from clipcrawl.pipelines.manifest import load_manifest, publish

    source_manifest = load_manifest(src)
    refs = _input_shards(source)
    if not refs:
        raise ConfigError(f"{src}: no finished shards (NNNNN_stats.json) found")
    existing = list_shards(target.shards, done_only=False)
    if existing and not overwrite:
        raise ConfigError(f"{target.shards} already holds {len(existing)} shards: pass --overwrite or another --out")
    if existing and not _is_reshard(target):
        raise ConfigError(f"{target.root} is not an earlier reshard (its manifest names no derived_from): "
                          "--overwrite only replaces a reshard (fix: choose another --out)")

    src_emb = _source_embeddings(source)  # before anything of OUT is changed
    if existing:  # replacing an earlier reshard: nothing of it stays visible as finished while we write
        from clipcrawl.pipelines.inspect.index import INDEX_DIR

        remove(target.p(MANIFEST))  # a fresh manifest: this OUT is one derived version, not an accumulation
        remove(target.p(SAMPLES_DIR), recursive=True)
        remove(target.embeddings, recursive=True)  # derived from the old shards: rewritten below (or not at all)
        remove(target.p(INDEX_DIR), recursive=True)
        for old in existing:
            remove(old.stats)  # stats first: "not done"
    indexer = IndexKept()
    failures = run_pass(indexer, refs, engine)
    if indexer.missing:
        log.warning("reshard: %d success rows had no image in their tar and were skipped", indexer.missing)
    table = pa.concat_tables(indexer.tables, promote_options="default") if indexer.tables else SAMPLES.empty_table()
    spans = indexer.spans
    n = table.num_rows
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    groups = [order[i:i + samples_per_shard] for i in range(0, n, samples_per_shard)]
    shard_col = table.schema.get_field_index("shard")
    missing_emb = 0

    def jobs():
        nonlocal missing_emb
        for j, group in enumerate(groups):
            ref = ShardRef.of(target.shards, j)
            rows = table.take(pa.array(group, pa.int64()))
            rows = rows.set_column(shard_col, "shard", pa.array([ref.name] * rows.num_rows, pa.string()))
            job = OutShard(ref, rows, [spans[i] for i in group], src)
            if src_emb is not None:
                job.embeddings = target.embeddings
                job.img_emb, job.text_emb, job.has_emb = src_emb.take(rows.column("key").to_pylist())
                missing_emb += int((~job.has_emb).sum())
            yield job

    writer = WriteResharded(write_behind=workers > 1)
    failures += run_pass(writer, jobs(), engine, total=len(groups))
    written = writer.written

    for old in existing:  # stale shards of an earlier reshard into the same OUT
        if old.id >= len(groups):
            for url in (old.stats, old.tar, old.parquet):
                remove(url)
    if missing_emb:
        log.warning("reshard: %d kept samples have no embeddings in %s: no embedding rows for them",
                    missing_emb, source.embeddings)
    if exists(source.config):  # the rules the kept samples passed (clipcrawl card OUT states them)
        from clipcrawl.base.storage import atomic_open

        fs, path = fs_and_path(source.config)
        with fs.open(path, "rb") as f, atomic_open(target.config) as g:
            g.write(f.read())
    entry = publish(target.root, 1, written, {
        "derived_from": src, "source_manifest_version": source_manifest.get("version", 0),
        "input_shards": len(refs), "samples_per_shard": samples_per_shard, "shuffle": shuffle,
        "seed": seed if shuffle else None, "missing_in_tar": indexer.missing,
        **({"embeddings": True, "missing_embeddings": missing_emb} if src_emb is not None else {}),
        **({"unreadable_input_shards": [f.shard for f in failures]} if failures else {}),
    }, config_hash=source_manifest["runs"][-1].get("config_hash") if source_manifest["runs"] else None)
    log.info("resharded %d samples from %d shards of %s into %d shards in %s", n, len(refs), src, len(groups),
             target.shards)
    return ReshardResult(target.root, written, n, len(refs), indexer.missing, entry, failures)
