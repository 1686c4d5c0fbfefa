"""The dataset level: ``samples/`` (kept samples, one Parquet file per shard) and ``manifest.json``.

Layout of a dataset ``DATASET`` (a local folder or any fsspec URL, e.g. ``s3://bucket/prefix``)::

    DATASET/shards/NNNNN.{tar,parquet} NNNNN_stats.json   # written by the run, one shard at a time
    DATASET/samples/NNNNN.parquet                         # kept (status success) rows of shard NNNNN
    DATASET/shards/sizes.json                             # {"NNNNN.tar": kept samples}, for open_clip_train
    DATASET/manifest.json                                 # runs, shards and counts: the commit point

Why ``samples/`` and not one ``samples.parquet``: an incremental run only adds shards, so it only
adds files; publishing costs O(new shards), never a rewrite of millions of old rows. The folder is a
plain Parquet dataset: ``pq.read_table("DATASET/samples")``, ``pd.read_parquet(...)`` and duckdb's
``read_parquet('DATASET/samples/*.parquet', union_by_name=true)`` all read it.

:func:`publish` is atomic and idempotent: it writes each ``samples/NNNNN.parquet`` (deterministic
bytes; unchanged files are not rewritten), then ``manifest.json`` last (temp + rename, or a single
object PUT). A crash in between leaves the previous manifest valid, and calling it again with the
same arguments completes the publish; calling it once more changes nothing. :func:`kept_samples`
reads only the shards the manifest lists, so readers see a consistent snapshot. One writer at a
time (``clipcrawl run`` holds a lock).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clipcrawl.base.failpoints import failpoint
from clipcrawl.base.shardfiles import ShardRef, is_done, list_shards
from clipcrawl.base.storage import atomic_open, fs_and_path, json_default, read_json, read_parquet, write_json
from clipcrawl.schemas.status import Status

MANIFEST = "manifest.json"
SAMPLES_DIR = "samples"
SHARDS_DIR = "shards"
SIZES = "sizes.json"  # samples per tar, the file open_clip_train's get_dataset_size reads
FORMAT = "clipcrawl-dataset"
FORMAT_VERSION = 1


def _root(dataset: str | os.PathLike[str]) -> str:
    return os.fspath(dataset).rstrip("/")


def manifest_path(dataset: str | os.PathLike[str]) -> str:
    return f"{_root(dataset)}/{MANIFEST}"


def samples_path(dataset: str | os.PathLike[str], shard: str) -> str:
    return f"{_root(dataset)}/{SAMPLES_DIR}/{shard}.parquet"


def _exists(url: str) -> bool:
    fs, path = fs_and_path(url)
    fs.invalidate_cache(path.rsplit("/", 1)[0])
    return fs.exists(path)


def empty_manifest() -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "version": 0, "updated": None,
            "shards_dir": SHARDS_DIR, "samples_dir": SAMPLES_DIR,
            "totals": {"runs": 0, "shards": 0, "samples_total": 0, "samples_kept": 0},
            "runs": [], "shards": {}}


def load_manifest(dataset: str | os.PathLike[str]) -> dict[str, Any]:
    """The dataset's manifest, or an empty one (version 0) when none was published yet."""
    url = manifest_path(dataset)
    if not _exists(url):
        return empty_manifest()
    data = read_json(url)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{url} is not a clipcrawl manifest (fix: move it away or delete it)")
    return data


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def file_sha256(url: str) -> str | None:
    if not _exists(url):
        return None
    fs, path = fs_and_path(url)
    return hashlib.sha256(fs.cat_file(path)).hexdigest()


# ------------------------------------------------------------------ kept rows of one shard
def kept_rows(table: pa.Table, shard: str, run_id: int | None) -> pa.Table:
    """Rows with status success; ``shard``/``run`` filled where the writer left them null."""
    kept = table.filter(pc.equal(table.column("status"), Status.SUCCESS.value))
    for name, value in (("shard", shard), ("run", run_id)):
        if value is None or name not in kept.column_names:
            continue
        col = kept.column(name)
        filled = pc.fill_null(col, pa.scalar(value, col.type))
        kept = kept.set_column(kept.schema.get_field_index(name), kept.schema.field(name), filled)
    return kept


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _write_if_changed(url: str, data: bytes) -> bool:
    """Write ``data`` atomically unless ``url`` already holds exactly these bytes."""
    fs, path = fs_and_path(url)
    if _exists(url) and fs.size(path) == len(data) and fs.cat_file(path) == data:
        return False
    with atomic_open(url) as f:
        f.write(data)
    return True


# ------------------------------------------------------------------ publish
def publish(dataset: str | os.PathLike[str], run_id: int, shard_refs: Sequence[ShardRef],
            summary: dict[str, Any] | None = None, *, config_hash: str | None = None) -> dict[str, Any]:
    """Add finished shards to the dataset's ``samples/`` and ``manifest.json`` as run ``run_id``.

    ``summary``: JSON-able run details kept in the run's manifest entry (e.g. ``clipcrawl run``'s
    counts). ``config_hash``: default ``summary["config_hash"|"config_sha256"]``, else the sha256 of
    ``runs/NNNN/config.yaml``. Returns the run's manifest entry.
    """
    root = _root(dataset)
    summary = dict(summary or {})
    if config_hash is None:
        config_hash = (summary.get("config_hash") or summary.get("config_sha256")
                       or file_sha256(f"{root}/runs/{run_id:04d}/config.yaml"))
    shards: dict[str, dict[str, Any]] = {}
    home = fs_and_path(f"{root}/{SHARDS_DIR}")[1]
    for ref in sorted(shard_refs, key=lambda r: r.id):
        if fs_and_path(ref.root)[1] != home:
            raise ValueError(f"shard {ref.tar} is not in {root}/{SHARDS_DIR}: publish only the dataset's own shards")
        if not is_done(ref):
            raise ValueError(f"shard {ref.name} is not finished: {ref.stats} is missing")
        table = read_parquet(ref.parquet)
        kept = kept_rows(table, ref.name, run_id)
        _write_if_changed(samples_path(root, ref.name), _parquet_bytes(kept))
        fs, tar = fs_and_path(ref.tar)
        shards[ref.name] = {"run": run_id, "samples_total": table.num_rows, "samples_kept": kept.num_rows,
                            "tar_bytes": fs.size(tar) if fs.exists(tar) else 0}
    manifest = load_manifest(root)
    entry = {"run": run_id, "shards": sorted(shards, key=int), "shards_added": len(shards),
             "samples_total": sum(s["samples_total"] for s in shards.values()),
             "samples_kept": sum(s["samples_kept"] for s in shards.values()),
             "config_hash": config_hash, "summary": summary}
    entry = json.loads(json.dumps(entry, ensure_ascii=False, default=json_default))  # as it reads back
    old = next((r for r in manifest["runs"] if r["run"] == run_id), None)
    unchanged = old is not None and {k: v for k, v in old.items() if k != "time"} == entry and all(
        manifest["shards"].get(n) == s for n, s in shards.items())
    if unchanged:
        return old
    now = time.time()
    entry = {"run": run_id, "time": old["time"] if old else _utc(now), **entry}
    manifest["runs"] = sorted([r for r in manifest["runs"] if r["run"] != run_id] + [entry], key=lambda r: r["run"])
    manifest["shards"] = dict(sorted({**manifest["shards"], **shards}.items(), key=lambda kv: int(kv[0])))
    manifest["totals"] = {
        "runs": len(manifest["runs"]), "shards": len(manifest["shards"]),
        "samples_total": sum(s["samples_total"] for s in manifest["shards"].values()),
        "samples_kept": sum(s["samples_kept"] for s in manifest["shards"].values()),
    }
    manifest["version"] = int(manifest.get("version", 0)) + 1
    manifest["updated"] = _utc(now)
    sizes = {f"{n}.tar": s["samples_kept"] for n, s in manifest["shards"].items()}
    write_json(sizes, f"{root}/{SHARDS_DIR}/{SIZES}")  # open_clip_train reads it: no --train-num-samples
    failpoint("publish.before_manifest")
    write_json(manifest, manifest_path(root))  # last: the commit point
    return entry


def rebuild(dataset: str | os.PathLike[str], run_id: int = 0, summary: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """Publish every finished shard of ``dataset`` not yet in its manifest (adopting a plain
    ``clipcrawl download`` output, or repairing a dataset) as run ``run_id``."""
    listed = load_manifest(dataset)["shards"]
    refs = [r for r in list_shards(dataset) if r.name not in listed]
    return publish(dataset, run_id, refs, summary)


def refresh(dataset: str | os.PathLike[str], shard_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Re-publish already published shards after a command rewrote their Parquet in place (``clipcrawl
    score``, dedup): ``samples/`` and the manifest counts follow. Each affected run is published again
    with all its shards, its summary and config hash (unchanged shards are not rewritten)."""
    root = _root(dataset)
    manifest = load_manifest(root)
    wanted = set(manifest["shards"] if shard_names is None else shard_names)
    entries = []
    for run in manifest["runs"]:
        if wanted & set(run["shards"]):
            refs = [ShardRef(f"{root}/{SHARDS_DIR}", n) for n in run["shards"]]
            entries.append(publish(root, run["run"], refs, run.get("summary"), config_hash=run.get("config_hash")))
    return entries


# ------------------------------------------------------------------ reading
def samples_files(dataset: str | os.PathLike[str]) -> list[str]:
    """``samples/NNNNN.parquet`` of every shard the manifest lists, in shard order."""
    return [samples_path(dataset, name) for name in load_manifest(dataset)["shards"]]


def kept_samples(dataset: str | os.PathLike[str], columns: Sequence[str] | None = None) -> pa.Table:
    """Every kept sample of the published dataset, in shard order then row order."""
    tables = [read_parquet(f, columns) for f in samples_files(dataset)]
    if not tables:
        from clipcrawl.schemas.tables import SAMPLES

        empty = SAMPLES.empty_table()
        return empty.select(list(columns)) if columns else empty
    return pa.concat_tables(tables, promote_options="default")


# ------------------------------------------------------------------ embeddings (clip-retrieval layout)
@dataclass(frozen=True)
class EmbeddingsLayout:
    parts: list[str]  # part ids as written ("0", "00", ...), in the order readers sort them
    rows: int
    image_dim: int | None
    text_dim: int | None


def check_embeddings(folder: str | os.PathLike[str]) -> EmbeddingsLayout:
    """Validate clip-retrieval's layout in ``folder`` (``DATASET/embeddings``):
    ``img_emb/img_emb_N.npy``, ``text_emb/text_emb_N.npy`` (optional) and ``metadata/metadata_N.parquet``
    with equal row counts per part N, and part names whose lexicographic order (the order autofaiss'
    embedding reader and clip-retrieval's metadata reader use) equals their numeric order."""
    root = _root(folder)
    fs, path = fs_and_path(root)

    def parts(sub: str, prefix: str, suffix: str) -> dict[str, str]:
        if not fs.isdir(f"{path}/{sub}"):
            return {}
        names = [f.rsplit("/", 1)[-1] for f in fs.ls(f"{path}/{sub}", detail=False)]
        return {n[len(prefix):-len(suffix)]: f"{root}/{sub}/{n}" for n in names
                if n.startswith(prefix) and n.endswith(suffix)}

    img, txt = parts("img_emb", "img_emb_", ".npy"), parts("text_emb", "text_emb_", ".npy")
    meta = parts("metadata", "metadata_", ".parquet")
    if not img or set(img) != set(meta) or (txt and set(txt) != set(img)):
        raise ValueError(f"{root}: parts differ: img_emb {sorted(img)}, text_emb {sorted(txt)}, metadata {sorted(meta)}")
    order = sorted(img)
    if order != sorted(img, key=int):
        raise ValueError(f"{root}: part names {order} do not sort numerically (zero-pad them)")
    rows, dims = 0, {"img": None, "txt": None}
    for n in order:
        with fs.open(fs_and_path(meta[n])[1], "rb") as f:
            n_meta = pq.read_metadata(f).num_rows
        for kind, files in (("img", img), ("txt", txt)):
            if not files:
                continue
            with fs.open(fs_and_path(files[n])[1], "rb") as f:
                arr = np.load(f)
            if arr.ndim != 2 or arr.shape[0] != n_meta:
                raise ValueError(f"{files[n]}: shape {arr.shape} does not match {n_meta} metadata rows")
            if dims[kind] not in (None, arr.shape[1]):
                raise ValueError(f"{files[n]}: dimension {arr.shape[1]} differs from {dims[kind]}")
            dims[kind] = arr.shape[1]
        rows += n_meta
    return EmbeddingsLayout(order, rows, dims["img"], dims["txt"])
