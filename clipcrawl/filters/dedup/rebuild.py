"""Rebuilding the dedup index from the published shards (Parquet + clip-retrieval embeddings).

:func:`sync_index` makes ``DATASET/dedup`` cover every finished shard: it adds the shards the index
does not list yet (e.g. a run that published and then died before committing the index), and
rebuilds from scratch when the index lists shards that no longer exist, or when it was written
before thumbnails were stored (``format_version`` < 2). It is what an incremental run calls first,
so the index is self-healing and can be deleted at any time. Thumbnails are not in the Parquet:
they are decoded from each shard's tar (kept rows only; ~2 ms per image), so a shard whose tar is
gone contributes rows without them (pHash-only, unverified matching).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from clipcrawl.base.progress import Progress, log
from clipcrawl.filters.dedup.columns import Fingerprints, fingerprints
from clipcrawl.filters.dedup.store import DedupIndex

READ_COLUMNS = ("key", "url", "caption", "status", "sha256", "pixel_hash", "phash", "shard", "clip_model")


class EmbeddingLookup:
    """key -> image embedding from ``DATASET/embeddings`` (clip-retrieval layout), loaded lazily."""

    def __init__(self, dataset: str):
        self.folder = f"{os.fspath(dataset).rstrip('/')}/embeddings"
        self._pos: dict[str, tuple[int, int]] | None = None
        self._parts: list[np.ndarray] = []

    def _load(self) -> None:
        from clipcrawl.base.storage import fs_and_path, read_parquet

        self._pos = {}
        fs, path = fs_and_path(self.folder)
        if not fs.isdir(f"{path}/img_emb") or not fs.isdir(f"{path}/metadata"):
            return
        names = sorted(f.rsplit("/", 1)[-1] for f in fs.ls(f"{path}/img_emb", detail=False))
        parts = [n[len("img_emb_"):-len(".npy")] for n in names if n.startswith("img_emb_") and n.endswith(".npy")]
        for part in sorted(parts, key=lambda p: (len(p), p)):
            meta = f"{self.folder}/metadata/metadata_{part}.parquet"
            if not fs.exists(fs_and_path(meta)[1]):
                continue
            table = read_parquet(meta)
            if "key" in table.column_names:
                keys = table.column("key").to_pylist()
            elif "image_path" in table.column_names:
                keys = [os.path.splitext(os.path.basename(str(p)))[0] for p in table.column("image_path").to_pylist()]
            else:
                continue
            with fs.open(fs_and_path(f"{self.folder}/img_emb/img_emb_{part}.npy")[1], "rb") as f:
                arr = np.load(f)
            if arr.ndim != 2 or len(arr) != len(keys):
                log.warning("dedup: %s does not match its metadata; ignored", part)
                continue
            self._parts.append(arr)
            j = len(self._parts) - 1
            self._pos.update({k: (j, i) for i, k in enumerate(keys) if k is not None})

    def get(self, keys: Sequence[str]) -> np.ndarray | None:
        if self._pos is None:
            self._load()
        if not self._parts:
            return None
        d = self._parts[0].shape[1]
        out = np.zeros((len(keys), d), dtype=np.float32)
        for i, k in enumerate(keys):
            pos = self._pos.get(k) if self._pos else None
            if pos is not None and self._parts[pos[0]].shape[1] == d:
                out[i] = self._parts[pos[0]][pos[1]]
        return out


def shard_fingerprints(parquet: str, shard: str, embeddings: EmbeddingLookup | None, *,
                       tar: str | None = None) -> Fingerprints:
    """Fingerprints of the kept (``success``) rows of one shard's Parquet, with thumbnails (and
    missing pixel hashes/pHashes) from the images of ``tar`` when given."""
    import pyarrow.compute as pc

    from clipcrawl.base.storage import read_parquet

    table = read_parquet(parquet)
    table = table.select([c for c in READ_COLUMNS if c in table.column_names])
    table = table.filter(pc.equal(table.column("status"), "success"))
    if "shard" not in table.column_names:
        table = table.append_column("shard", pa.array([shard] * table.num_rows, pa.string()))
    else:
        table = table.set_column(table.schema.get_field_index("shard"), "shard",
                                 pc.fill_null(table.column("shard"), shard))
    emb = embeddings.get(table.column("key").to_pylist()) if embeddings is not None and table.num_rows else None
    if tar is not None and table.num_rows:
        table = _with_thumbnails(table, tar)
    return fingerprints(table, emb)


def _with_thumbnails(table: pa.Table, tar: str) -> pa.Table:
    from clipcrawl.base.shardfiles import iter_tar, sample_image
    from clipcrawl.base.storage import fs_and_path
    from clipcrawl.filters.dedup.columns import fill_image_hashes
    from clipcrawl.schemas.tables import IMAGE_COLUMN

    fs, path = fs_and_path(tar)
    if not fs.exists(path):
        return table
    wanted = set(table.column("key").to_pylist())
    images = {s["__key__"]: img for s in iter_tar(tar) if s["__key__"] in wanted and (img := sample_image(s))}
    with_images = table.append_column(IMAGE_COLUMN, pa.array([images.get(k) for k in table.column("key").to_pylist()],
                                                              pa.binary()))
    return fill_image_hashes(with_images, thumbnails=True).drop_columns([IMAGE_COLUMN])


def sync_index(index: DedupIndex, dataset: str, *, with_embeddings: bool = True) -> int:
    """Add every finished shard of ``dataset`` missing from ``index``; rebuild if the index lists
    shards that are gone. Returns the number of rows added."""
    from clipcrawl.base.shardfiles import list_shards
    from clipcrawl.filters.dedup.store import FORMAT_VERSION

    refs = list_shards(dataset)
    names = {r.name for r in refs}
    stale = index.shards - names
    if stale:
        log.info("dedup index lists %d shards that no longer exist: rebuilding", len(stale))
        return rebuild_index(dataset, index, with_embeddings=with_embeddings)
    if len(index.committed) and int(index.manifest.get("format_version", 1)) < FORMAT_VERSION:
        log.info("dedup index has no colour thumbnails (format %s): rebuilding from the shards",
                 index.manifest.get("format_version", 1))
        return rebuild_index(dataset, index, with_embeddings=with_embeddings)
    missing = [r for r in refs if r.name not in index.shards]
    if not missing:
        return 0
    emb = EmbeddingLookup(dataset) if with_embeddings else None
    added = 0
    with Progress("dedup index", total=len(missing), unit="shard") as bar:
        for ref in missing:
            fp = shard_fingerprints(ref.parquet, ref.name, emb, tar=ref.tar)
            added += index.add(fp)
            index.note_shards([ref.name])
            bar.update(1)
    index.commit()
    log.info("dedup index: added %d samples from %d shards", added, len(missing))
    return added


def rebuild_index(dataset: str, index: DedupIndex, *, with_embeddings: bool = True) -> int:
    """Replace the index by the kept samples of every finished shard."""
    from clipcrawl.base.shardfiles import list_shards

    refs = list_shards(dataset)
    emb = EmbeddingLookup(dataset) if with_embeddings else None
    parts = []
    with Progress("dedup index rebuild", total=len(refs), unit="shard") as bar:
        for ref in refs:
            parts.append(shard_fingerprints(ref.parquet, ref.name, emb, tar=ref.tar))
            bar.update(1)
    fp = Fingerprints.concat(parts)
    index.replace_all(fp, [r.name for r in refs])
    return len(fp)
