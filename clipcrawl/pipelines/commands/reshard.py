"""``clipcrawl reshard DIR [--out OUT] --samples-per-shard N [--shuffle --seed S]``.

DataComp's resharder for our shards: after filtering and dedup, shards hold fewer kept samples
than they were cut for. This reads the kept samples (status ``success`` and present in the tar)
of every shard of DIR in order (the shards its manifest lists when it has one, else every
finished shard) and writes new shards of exactly N samples (the last one holds the rest) as a
new dataset OUT (default ``DIR/resharded``): ``OUT/shards/NNNNN.{tar,parquet}``,
``NNNNN_stats.json``, ``OUT/samples/`` and ``OUT/manifest.json`` (``derived_from`` names DIR).
Image bytes are copied unchanged; each ``<key>.json`` and Parquet row carries the new shard id.
The same input, N and seed give byte-identical tars and Parquet files. DIR and OUT may be any
fsspec URLs (``s3://bucket/prefix``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import typer

ORDER = 70


@dataclass
class ReshardResult:
    out: str
    shards: list[Any]  # ShardRef of each output shard
    samples: int
    input_shards: int
    missing_in_tar: int = 0  # success rows whose image was not in the tar (skipped)
    manifest_entry: dict[str, Any] = field(default_factory=dict)


def index_tar(url: str) -> dict[str, dict[str, tuple[int, int]]]:
    """key -> {ext: (data offset, size)} of every member, reading headers only (seeks over data)."""
    import tarfile

    from clipcrawl.base.storage import fs_and_path

    fs, path = fs_and_path(url)
    out: dict[str, dict[str, tuple[int, int]]] = {}
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for m in tar:
            if m.isfile():
                key, _, ext = m.name.rsplit("/", 1)[-1].partition(".")
                out.setdefault(key, {})[ext] = (m.offset_data, m.size)
    return out


def _input_shards(src: str) -> list[Any]:
    from clipcrawl.base.shardfiles import ShardRef, list_shards
    from clipcrawl.pipelines.dataset import SHARDS_DIR, load_manifest

    listed = load_manifest(src)["shards"]
    if listed:  # the published snapshot, not shards a running run is still adding
        return [ShardRef(f"{src}/{SHARDS_DIR}", name) for name in listed]
    return list_shards(src)


def _collect(refs: Sequence[Any]) -> tuple[Any, list[tuple[str, int, int, str]], int]:
    """All kept rows (one table) and, per row, (tar url, offset, size, image ext) of its image."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from clipcrawl.base.progress import Progress, log
    from clipcrawl.base.shardfiles import IMAGE_EXTS
    from clipcrawl.base.storage import fs_and_path, read_parquet
    from clipcrawl.schemas.config import ConfigError
    from clipcrawl.schemas.status import Status

    tables, images, missing = [], [], 0
    with Progress("index shards", total=len(refs), unit="shards") as bar:
        for ref in refs:
            fs, tar = fs_and_path(ref.tar)
            if not fs.exists(tar):
                raise ConfigError(f"{ref.tar}: missing; reshard reads webdataset shards (output_format: webdataset)")
            members = index_tar(ref.tar)
            table = read_parquet(ref.parquet)
            table = table.filter(pc.equal(table.column("status"), Status.SUCCESS.value))
            keep = []
            for i, key in enumerate(table.column("key").to_pylist()):
                ext = next((e for e in IMAGE_EXTS if e in members.get(key, {})), None)
                if ext is None:
                    missing += 1
                    continue
                keep.append(i)
                images.append((ref.tar, *members[key][ext], ext))
            tables.append(table.take(pa.array(keep, pa.int64())))
            bar.update(1, samples=len(images))
    if missing:
        log.warning("reshard: %d success rows had no image in their tar and were skipped", missing)
    from clipcrawl.schemas.tables import SAMPLES

    table = pa.concat_tables(tables, promote_options="default") if tables else SAMPLES.empty_table()
    return table, images, missing


def _read_images(spans: list[tuple[str, int, int, str]]) -> list[bytes]:
    """Image bytes for each (tar, offset, size, ext), reading each tar in offset order."""
    from clipcrawl.base.storage import fs_and_path

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


def reshard(src: str, out: str | None = None, samples_per_shard: int = 10_000, *, shuffle: bool = False,
            seed: int = 0, overwrite: bool = False, workers: int = 2) -> ReshardResult:
    """Write the kept samples of ``src`` as new shards of ``samples_per_shard`` samples in ``out``."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa

    from clipcrawl.base.progress import Progress, log
    from clipcrawl.base.shardfiles import ShardRef, list_shards
    from clipcrawl.base.storage import fs_and_path
    from clipcrawl.pipelines.dataset import MANIFEST, SAMPLES_DIR, SHARDS_DIR, load_manifest, publish
    from clipcrawl.pipelines.writer import write_shard
    from clipcrawl.schemas.config import ConfigError
    from clipcrawl.schemas.tables import IMAGE_COLUMN

    src = src.rstrip("/")
    out = (out or f"{src}/resharded").rstrip("/")
    if samples_per_shard < 1:
        raise ConfigError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    if fs_and_path(out)[1] in (fs_and_path(src)[1], fs_and_path(f"{src}/{SHARDS_DIR}")[1]):
        raise ConfigError(f"--out {out} would overwrite the input {src}: choose another folder")
    refs = _input_shards(src)
    if not refs:
        raise ConfigError(f"{src}: no finished shards (NNNNN_stats.json) found")
    shards_out = f"{out}/{SHARDS_DIR}"
    existing = list_shards(out, done_only=False) if fs_and_path(shards_out)[0].isdir(fs_and_path(shards_out)[1]) \
        else []
    if existing and not overwrite:
        raise ConfigError(f"{shards_out} already holds {len(existing)} shards: pass --overwrite or another --out")

    table, spans, missing = _collect(refs)
    n = table.num_rows
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    groups = [order[i:i + samples_per_shard] for i in range(0, n, samples_per_shard)]
    shard_col = table.schema.get_field_index("shard")

    def write(j: int) -> Any:
        t0 = time.time()
        ref = ShardRef.of(shards_out, j)
        rows = table.take(pa.array(groups[j], pa.int64()))
        rows = rows.set_column(shard_col, "shard", pa.array([ref.name] * rows.num_rows, pa.string()))
        group_spans = [spans[i] for i in groups[j]]
        rows = rows.append_column(IMAGE_COLUMN, pa.array(_read_images(group_spans), pa.binary()))
        write_shard(ref, rows, image_exts=[s[3] for s in group_spans], start_time=t0,
                    extra_stats={"resharded_from": src})
        return ref

    with Progress("reshard", total=n, unit="samples") as bar, ThreadPoolExecutor(max(1, workers)) as pool:
        written = []
        for ref in pool.map(write, range(len(groups))):
            written.append(ref)
            bar.update(int(len(groups[ref.id])), shards=len(written))

    fs, root = fs_and_path(out)
    for old in existing:  # stale shards of an earlier reshard into the same OUT (stats first: "not done")
        if old.id >= len(groups):
            for url in (old.stats, old.tar, old.parquet):
                p = fs_and_path(url)[1]
                if fs.exists(p):
                    fs.rm(p)
    if overwrite:  # a fresh manifest: this OUT is one derived version, not an accumulation
        for p in (f"{root}/{MANIFEST}", f"{root}/{SAMPLES_DIR}"):
            if fs.exists(p):
                fs.rm(p, recursive=True)
    source_manifest = load_manifest(src)
    entry = publish(out, 1, written, {
        "derived_from": src, "source_manifest_version": source_manifest.get("version", 0),
        "input_shards": len(refs), "samples_per_shard": samples_per_shard, "shuffle": shuffle,
        "seed": seed if shuffle else None, "missing_in_tar": missing,
    }, config_hash=source_manifest["runs"][-1].get("config_hash") if source_manifest["runs"] else None)
    log.info("resharded %d samples from %d shards of %s into %d shards in %s", n, len(refs), src, len(groups),
             shards_out)
    return ReshardResult(out, written, n, len(refs), missing, entry)


def reshard_cmd(
    dataset: str = typer.Argument(..., help="Dataset dir/URL (uses DATASET/shards) or a download output dir."),
    out: str | None = typer.Option(None, "--out", help="New dataset dir/URL; default DATASET/resharded."),
    samples_per_shard: int = typer.Option(10_000, "--samples-per-shard", "-n", min=1, help="Samples per shard."),
    shuffle: bool = typer.Option(False, "--shuffle", help="Shuffle samples across all shards."),
    seed: int = typer.Option(0, "--seed", help="Seed of --shuffle (same seed, same shards)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier reshard in --out."),
    workers: int = typer.Option(2, "--workers", min=1, help="Output shards written in parallel."),
    storage_options: str | None = typer.Option(
        None, "--storage-options", help='fsspec options as JSON, e.g. \'{"endpoint_url": "http://host:9000"}\'.'),
) -> None:
    """Rewrite the kept samples of a dataset as new shards of N samples (after filtering/dedup)."""
    from clipcrawl.base.storage import configure_storage
    from clipcrawl.schemas.config import ConfigError

    if storage_options:
        try:
            opts = json.loads(storage_options)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--storage-options: not JSON: {e}") from None
        for url in (dataset, out or dataset):
            configure_storage(url, opts)
    res = reshard(dataset, out, samples_per_shard, shuffle=shuffle, seed=seed, overwrite=overwrite, workers=workers)
    typer.echo(f"{res.samples} samples in {len(res.shards)} shards -> {res.out}/shards")


def register(app: typer.Typer) -> None:
    app.command("reshard")(reshard_cmd)
