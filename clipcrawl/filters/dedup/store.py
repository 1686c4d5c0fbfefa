"""The persistent dedup index of published samples (``DATASET/dedup/``), crash-safe.

Layout::

    DATASET/dedup/index.json            # the commit point: segments, indexed shards, embedding model
    DATASET/dedup/seg-<id>.parquet      # key, url_hash, sha256, pixels, phash (uint64 fingerprints), shard,
                                        # crop (44 window pHashes, null = no thumbnail)
    DATASET/dedup/seg-<id>.emb.npy      # float16 unit image embeddings, one row per segment row
    DATASET/dedup/seg-<id>.thumb.npy    # uint8 (rows, 1056): 32x32 grey + 4x4 chromaticity (memory-mapped)
    DATASET/dedup/.lock                 # held while committing

``index.json`` carries ``format_version`` (2 since thumbnails were added, 3 since they carry colour).
An older index still opens (its rows simply have no usable thumbnails: pHash-only matching against
them, unverified); :func:`.rebuild.sync_index` rebuilds it from the published shards to add them.

``add()`` keeps rows in memory (pending); ``commit()`` writes the pending rows as a new segment
(temp file, fsync, rename), then replaces ``index.json`` the same way. A crash before the
``index.json`` rename leaves the previous index intact (the half-written segment is unreferenced
and removed by the next commit), so a killed run can never corrupt it. Segments are merged
like a binary counter (see ``_merge_tail``). Exact fingerprints are 64-bit (blake2b of the
normalised URL + caption, first 64 bits of sha256 and pixel hashes): a false match needs a 2^-64
collision.

The index of an ``s3://`` (any fsspec remote) dataset lives with it, in ``DATASET/dedup/``: every
file is written whole (an object appears when its PUT completes) and ``index.json`` is still the
commit point, written last. Segments are immutable (unique names), so they are read through a local
cache (``$CLIPCRAWL_CACHE`` or ``~/.cache/clipcrawl``, ``dedup-segments/<hash>/``) and memory-mapped
from there; a machine with an empty cache downloads them once. One writer at a time: the dataset
lock (:mod:`clipcrawl.pipelines.lock`, a lease on object stores) keeps writers apart; the ``.lock``
flock below only serialises processes of one machine on a local index. An index a remote dataset
kept in the old local place (``~/.cache/clipcrawl/dedup/<hash>``) is uploaded once on first open.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipcrawl.base.progress import log
from clipcrawl.base.storage import atomic_open, fs_and_path
from clipcrawl.filters.dedup.columns import Fingerprints, fill_image_hashes, fingerprints
from clipcrawl.filters.dedup.crops import THUMB_BYTES, WINDOWS_ID

FORMAT = "clipcrawl-dedup-index"
FORMAT_VERSION = 3  # 1: no thumbnails, 2: grey thumbnails (1024 bytes)
INDEX_FILE = "index.json"
MAX_SEGMENTS = 64  # hard cap; the binary-counter merge normally keeps ~log2(rows) segments



def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: str, write) -> None:
    with atomic_open(path, "wb") as f:  # temp name, fsync, rename
        write(f)


def _remote(directory: str) -> bool:
    return "://" in directory and not directory.startswith("file://")


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if _remote(directory) else os.path.join(directory, name)


def _cache_dir(directory: str) -> str:
    """The local cache of a remote index's (immutable) segment files."""
    import hashlib
    from pathlib import Path

    base = os.environ.get("CLIPCRAWL_CACHE") or str(Path.home() / ".cache" / "clipcrawl")
    return os.path.join(base, "dedup-segments", hashlib.sha256(directory.encode()).hexdigest()[:16])


def _local_file(directory: str, name: str) -> str:
    """A local path of segment file ``name`` (downloaded into the cache once for a remote index)."""
    if not _remote(directory):
        return os.path.join(directory, name)
    path = os.path.join(_cache_dir(directory), name)
    if not os.path.exists(path):
        fs, remote = fs_and_path(_join(directory, name))
        with atomic_open(path, "wb") as f, fs.open(remote, "rb") as src:
            while chunk := src.read(1 << 22):
                f.write(chunk)
    return path


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    if _remote(directory):  # one writer per dataset: the dataset lock (a lease) is held by the caller
        yield
        return
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "a+b") as f:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: single writer assumed
            pass
        yield


class DedupIndex:
    """Fingerprints (+ embeddings) of published samples: ``open(dir)``, ``add(table)``, ``commit()``.

    Queries see committed and pending rows alike (:attr:`data`), so one run also deduplicates
    across its own batches. ``directory=None`` keeps everything in memory.
    """

    def __init__(self, directory: str | None, manifest: dict, committed: Fingerprints):
        self.directory = directory
        self.manifest = manifest
        self.committed = committed
        self.pending: list[Fingerprints] = []
        self._pending_shards: set[str] = set()
        self._data: Fingerprints | None = None

    # ---------------------------------------------------------------- open / read
    @classmethod
    def memory(cls) -> DedupIndex:
        return cls(None, _empty_manifest(), Fingerprints.empty())

    @classmethod
    def open(cls, directory: str | os.PathLike[str] | None) -> DedupIndex:
        """Open (or start) the index in ``directory``; ``None`` gives an in-memory index."""
        if directory is None:
            return cls.memory()
        directory = os.fspath(directory).rstrip("/")
        directory = directory if _remote(directory) else directory.removeprefix("file://")
        if _remote(directory):
            _migrate_legacy(directory)
        manifest = _read_manifest(directory)
        segs = [_read_segment(directory, s) for s in manifest["segments"]]
        return cls(directory, manifest, Fingerprints.concat(segs))

    @property
    def data(self) -> Fingerprints:
        """Committed + pending rows (cached)."""
        if self._data is None:
            self._data = Fingerprints.concat([self.committed, *self.pending]) if self.pending else self.committed
        return self._data

    def __len__(self) -> int:
        return len(self.data)

    @property
    def shards(self) -> set[str]:
        return set(self.manifest["shards"])

    @property
    def embedding_model(self) -> str | None:
        return self.manifest.get("embedding_model")

    # ---------------------------------------------------------------- write
    def add(self, table: pa.Table | Fingerprints, embeddings: np.ndarray | None = None,
            embedding_model: str | None = None) -> int:
        """Remember rows (pending until :meth:`commit`). A table contributes its ``success`` rows."""
        if isinstance(table, Fingerprints):
            fp = table
        else:  # pixel/pHash computed from the ``image`` column where missing
            fp = fingerprints(fill_image_hashes(table, thumbnails=True), embeddings, only_success=True)
        if not len(fp):
            return 0
        model = embedding_model or fp.model
        if fp.emb is not None and model:
            known = self.manifest.get("embedding_model") or next((p.model for p in self.pending if p.model), None)
            if known and known != model:
                log.warning("dedup index: embeddings of %s are not comparable with the index's %s; not stored",
                            model, known)
                fp = fp.without_embeddings()
            else:
                fp.model = model
        self.pending.append(fp)
        self._data = None
        return len(fp)

    def note_shards(self, names) -> None:
        """Record shards as indexed at the next commit (also those without kept rows)."""
        self._pending_shards.update(names)

    def discard(self) -> None:
        self.pending.clear()
        self._pending_shards.clear()
        self._data = None

    def commit(self) -> None:
        """Write pending rows as a new segment, atomically (no-op in memory: pending becomes committed)."""
        if not self.pending and not self._pending_shards:
            return
        new = Fingerprints.concat(self.pending)
        shards = self._pending_shards | {s for s in new.shard if s}
        if self.directory is None:
            self.committed = Fingerprints.concat([self.committed, new])
            self.manifest["shards"] = sorted(set(self.manifest["shards"]) | shards)
            self.manifest["embedding_model"] = self.manifest.get("embedding_model") or new.model
        else:
            with _locked(self.directory):
                manifest = _read_manifest(self.directory)  # another writer may have committed meanwhile
                if [s["name"] for s in manifest["segments"]] != [s["name"] for s in self.manifest["segments"]]:
                    self.committed = Fingerprints.concat(
                        [_read_segment(self.directory, s) for s in manifest["segments"]])
                if len(new):
                    manifest["segments"].append(_write_segment(self.directory, new))
                    self.committed = Fingerprints.concat([self.committed, new])
                    self._merge_tail(manifest["segments"])
                manifest["shards"] = sorted(set(manifest["shards"]) | shards)
                manifest["embedding_model"] = manifest.get("embedding_model") or new.model
                self._write_manifest(manifest)
        self.pending, self._data = [], None
        self._pending_shards = set()

    def _merge_tail(self, segs: list[dict]) -> None:
        """Merge the newest segments while the one before is not larger (a binary counter): at most
        ~log2(rows) segments, each row rewritten O(log rows) times over the index's life."""
        assert self.directory is not None
        while len(segs) >= 2 and (segs[-2]["rows"] <= segs[-1]["rows"] or len(segs) > MAX_SEGMENTS):
            end = sum(s["rows"] for s in segs)
            start = end - segs[-1]["rows"] - segs[-2]["rows"]
            merged = _write_segment(self.directory, self.committed.take(np.arange(start, end)))
            segs[-2:] = [merged]

    def replace_all(self, fp: Fingerprints, shards: list[str]) -> None:
        """Atomically make ``fp`` the whole index (rebuild)."""
        self.pending, self._data = [], None
        if self.directory is None:
            self.committed, self.manifest = fp, {**_empty_manifest(), "shards": sorted(shards),
                                                 "embedding_model": fp.model}
            return
        with _locked(self.directory):
            manifest = {**_empty_manifest(), "shards": sorted(shards), "embedding_model": fp.model,
                        "version": _read_manifest(self.directory)["version"]}
            manifest["segments"] = [_write_segment(self.directory, fp)] if len(fp) else []
            self.committed = fp
            self._write_manifest(manifest)

    def _write_manifest(self, manifest: dict) -> None:
        assert self.directory is not None
        manifest["version"] = int(manifest.get("version", 0)) + 1
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        manifest["rows"] = int(sum(s["rows"] for s in manifest["segments"]))
        data = json.dumps(manifest, indent=1).encode()
        _atomic_write(_join(self.directory, INDEX_FILE), lambda f: f.write(data))
        if not _remote(self.directory):
            _fsync_dir(self.directory)
        self.manifest = manifest
        _remove_orphans(self.directory, manifest)


def _empty_manifest() -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "version": 0, "segments": [], "shards": [],
            "embedding_model": None}


def _read_manifest(directory: str) -> dict:
    path = _join(directory, INDEX_FILE)
    fs, p = fs_and_path(path)
    if _remote(directory):
        fs.invalidate_cache(p.rsplit("/", 1)[0])  # another machine may have committed since
    if not fs.exists(p):
        return _empty_manifest()
    with fs.open(p, "r", encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a clipcrawl dedup index (format {manifest.get('format')!r})")
    return manifest


def _read_segment(directory: str, seg: dict) -> Fingerprints:
    table = pq.read_table(_local_file(directory, seg["name"] + ".parquet"))
    emb = thumb = None
    if seg.get("dim"):
        emb = np.load(_local_file(directory, seg["name"] + ".emb.npy"), mmap_mode="r")
    if seg.get("thumbs"):
        thumb = np.load(_local_file(directory, seg["name"] + ".thumb.npy"), mmap_mode="r")
        if thumb.ndim != 2 or thumb.shape[1] != THUMB_BYTES:  # an older layout: rebuilt by sync_index
            thumb = None
    return Fingerprints.from_segment(table, emb, seg.get("model"), thumb, seg.get("windows") == WINDOWS_ID)


def _write_file(directory: str, name: str, write) -> None:
    """Write segment file ``name``; a remote one is written to the local cache first, then uploaded whole."""
    if not _remote(directory):
        _atomic_write(os.path.join(directory, name), write)
        return
    local = os.path.join(_cache_dir(directory), name)
    _atomic_write(local, write)
    fs, remote = fs_and_path(_join(directory, name))
    fs.put_file(local, remote)


def _write_segment(directory: str, fp: Fingerprints) -> dict:
    name = f"seg-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    table = fp.to_segment()
    _write_file(directory, name + ".parquet", lambda f: pq.write_table(table, f))
    seg = {"name": name, "rows": len(fp), "dim": None, "model": fp.model, "thumbs": False, "windows": WINDOWS_ID}
    if fp.thumb is not None and fp.has_thumb.any():
        thumb = np.ascontiguousarray(fp.thumb, dtype=np.uint8)
        _write_file(directory, name + ".thumb.npy", lambda f: np.save(f, thumb))
        seg["thumbs"] = True
    if fp.emb is not None:
        emb16 = np.asarray(fp.emb, dtype=np.float16)
        _write_file(directory, name + ".emb.npy", lambda f: np.save(f, emb16))
        seg["dim"] = int(emb16.shape[1])
    return seg


def _remove_orphans(directory: str, manifest: dict) -> None:
    """Delete segment and temp files the manifest does not reference (called under the lock)."""
    live = {s["name"] for s in manifest["segments"]}

    def dead(name: str) -> bool:
        stem = name.split(".", 1)[0]
        return (name.startswith("seg-") and stem not in live) or (name.startswith(".") and ".tmp-" in name)

    if _remote(directory):
        fs, path = fs_and_path(directory)
        fs.invalidate_cache(path)
        gone = [f for f in fs.ls(path, detail=False) if dead(f.rsplit("/", 1)[-1])]
        if gone:
            with contextlib.suppress(OSError):
                fs.rm(gone)
        directory = _cache_dir(directory)
        if not os.path.isdir(directory):
            return
    for name in os.listdir(directory):
        if dead(name):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))


def _migrate_legacy(directory: str) -> None:
    """A remote dataset's index used to live in ``~/.cache/clipcrawl/dedup/<hash>``: upload it once."""
    if not directory.endswith("/dedup"):
        return
    from clipcrawl.base.layout import DatasetLayout

    old = DatasetLayout(directory.removesuffix("/dedup")).legacy_dedup_index
    if not os.path.exists(os.path.join(old, INDEX_FILE)):
        return
    fs, path = fs_and_path(_join(directory, INDEX_FILE))
    if fs.exists(path):
        return
    manifest = _read_manifest(old)
    log.info("dedup index: moving the index of %s from its old local place %s into the dataset", directory, old)
    for seg in manifest["segments"]:
        for ext in (".parquet", ".thumb.npy", ".emb.npy"):
            src = os.path.join(old, seg["name"] + ext)
            if os.path.exists(src):
                fs.put_file(src, fs_and_path(_join(directory, seg["name"] + ext))[1])
    fs.put_file(os.path.join(old, INDEX_FILE), path)  # the commit point last
    import shutil

    shutil.rmtree(old, ignore_errors=True)
