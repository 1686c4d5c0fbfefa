"""The partitioned dedup index: lookups and inserts on P partitions, the driver only routes and decides.

Design
------
Every reference row has a global sequence number ``s``: its position in the order the single index
(:class:`.store.DedupIndex`) would hold it (published rows in commit order, then this run's kept rows
batch by batch). Row ``s`` lives in partition ``s % P`` (round robin), so partitions stay balanced,
local row ``j`` of partition ``p`` is global row ``p + j * P``, and no order has to be stored: the
top-level ``partitions.json`` (P, total rows, indexed shards, embedding model) is the commit point,
and each partition keeps its rows under ``DATASET/dedup/part-NN/`` in the single index's
segment/commit format (:class:`.partition.IndexPartition`; a restart opens the partitions in parallel).

Per batch the driver (:class:`.stage.MarkDuplicates`) sends the batch's still-active fingerprints
(with thumbnails, crop codes, embeddings) to every partition at once (scatter-gather). The single
index searches a list of *ranges* one after the other: the published rows (fixed for the run), then
the run's earlier batches as layers merged like a binary counter; the first range with a match
decides, and within a range the best match wins (exact: the earliest row; pHash: the highest aligned
NCC, unverified by the smallest distance; semantic: the highest cosine; ties: the earliest row). The
ranges are contiguous sequence ranges, so the driver sends them along and each partition answers,
per method and per range, its best row with its sequence number; the driver merges by the same rule
(ties: smallest sequence number) and applies the ranges in order. Each match depends only on the query
row and the reference rows, so looking url/sha256/pixels/pHash up in one round (instead of after the
previous method's marks) gives the same decisions. Semantic lookups take one round per range with
the rows still active then, because the single index sizes each range's embedding index (exact or
IVF) by that count at its first use; the partitions make the same exact/IVF choice. Grouping within the batch (the keep rule) and the
evaluation sets stay on the driver; kept rows are then inserted (each to ``seq % P``) before the next
batch's lookup, so batch i sees every insert of batches < i.

Exact fingerprints are not routed by value: since pHash/semantic queries go to every partition
anyway, exact lookups ride in the same message (a ``searchsorted`` over n/P values per partition).
With only exact methods enabled a value-routed layout would send each query to one partition; this
one still broadcasts.

Same decisions as the single index: always for url/sha256/pixels and pHash (+ crops: the crop search
is approximate but per pair, so independent of which rows share a partition); for semantic wherever
the single index searches exactly (range rows x max(active rows, 1024) <= ``semantic.EXACT_WORK``,
e.g. 20k x 20k, 390k x 1024). Above that the single index uses an IVF trained on all the range's
rows and each partition an IVF of its own share (nprobe of ~4 sqrt(n/P) lists: each probes a larger
fraction of its rows), and a pair one IVF's probes miss can be found by the other (both verify candidates with the exact cosine,
so no pair below the threshold is ever accepted).

Limits: each partition holds its rows in memory (thumbnails 1.1 kB, crop codes 352 B, embeddings
2 B x d per row; stored thumbnails/embeddings are memory-mapped at open); a batch is sent to all P
partitions (~1.5 kB + 4 B x d per active row, each time); the decisions of one batch need every
partition's answer (no lookahead: batch i+1 is looked up after batch i's inserts). The keep-rule
grouping within a batch, the evaluation sets and ``clipcrawl dedup``'s all-rows-at-once decision
stay on the driver. Partition folders must be reachable from where the partitions run (Ray: a
shared path). ``P = 1`` is the single :class:`.store.DedupIndex`; changing P re-partitions the
stored rows once at open.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from clipcrawl.filters.dedup.columns import Fingerprints
from clipcrawl.filters.dedup.partition import Found, IndexPartition, share
from clipcrawl.filters.dedup.perceptual import Rule

TOP_FILE = "partitions.json"
FORMAT = "clipcrawl-dedup-partitions"


class _Local:
    """Partitions as in-process objects, called in parallel on a thread pool."""

    def __init__(self, parts: list[IndexPartition]):
        self.parts = parts
        self.pool = ThreadPoolExecutor(len(parts))

    def call(self, name: str, args: list[tuple]) -> list[Any]:
        return list(self.pool.map(lambda pa: getattr(pa[0], name)(*pa[1]), zip(self.parts, args)))

    def close(self) -> None:
        self.pool.shutdown()


class _Ray:
    """Partitions as Ray actors (``num_cpus=0``: they work when the driver asks, between batches)."""

    def __init__(self, parts: list[IndexPartition]):
        import ray

        cls = ray.remote(num_cpus=0)(IndexPartition)
        self.actors = [cls.remote(p.part, p.parts, p.directory) for p in parts]

    def call(self, name: str, args: list[tuple]) -> list[Any]:
        import ray

        return ray.get([getattr(a, name).remote(*x) for a, x in zip(self.actors, args)])

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)


def _backend(parts: list[IndexPartition], backend: str):
    if backend == "auto":
        try:
            import ray

            backend = "ray" if ray.is_initialized() else "local"
        except ImportError:
            backend = "local"
    return _Ray(parts) if backend == "ray" else _Local(parts)


def _empty_top(parts: int) -> dict:
    from clipcrawl.filters.dedup.store import FORMAT_VERSION

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "partitions": parts, "version": 0, "rows": 0,
            "shards": [], "embedding_model": None}


def _read_top(directory: str | None) -> dict | None:
    if directory is None or not os.path.exists(os.path.join(directory, TOP_FILE)):
        return None
    with open(os.path.join(directory, TOP_FILE), encoding="utf-8") as f:
        top = json.load(f)
    if top.get("format") != FORMAT:
        raise ValueError(f"{directory}/{TOP_FILE}: not a partitioned clipcrawl dedup index")
    return top


class PartitionedIndex:
    """Driver side: routes rows to partitions, merges their answers, commits ``partitions.json``.

    Offers what :func:`.rebuild.sync_index` and :class:`.stage.MarkDuplicates` use of a
    :class:`.store.DedupIndex` (``add``, ``note_shards``, ``commit``, ``replace_all``, ``shards``,
    ``manifest``, ``embedding_model``) plus :meth:`lookup`.
    """

    def __init__(self, directory: str | None, parts: int, backend: str = "auto"):
        self.directory, self.parts = directory, parts
        top = _read_top(directory)
        if top is not None and top["partitions"] != parts:
            raise ValueError(f"{directory}: has {top['partitions']} partitions, not {parts} (use open_index)")
        self.manifest = top or _empty_top(parts)
        dirs = [None if directory is None else os.path.join(directory, f"part-{p:02d}") for p in range(parts)]
        self.backend = _backend([IndexPartition(p, parts, d) for p, d in enumerate(dirs)], backend)
        self.total = int(self.manifest["rows"])  # rows committed
        got = self.backend.call("load", [(self.total,)] * parts)
        if min(got) < 0:  # a partition lost rows: start empty, sync_index rebuilds from the shards
            self.backend.call("replace_all", [(Fingerprints.empty(),)] * parts)
            self.total, self.manifest = 0, _empty_top(parts)
        self.rows = self.total  # committed + pending
        self._pending_shards: set[str] = set()
        self._pending_model: str | None = None

    # ---------------------------------------------------------------- DedupIndex-like
    @property
    def shards(self) -> set[str]:
        return set(self.manifest["shards"])

    @property
    def embedding_model(self) -> str | None:
        return self.manifest.get("embedding_model")

    @property
    def committed(self) -> range:  # sync_index only asks its length
        return range(self.total)

    def __len__(self) -> int:
        return self.rows

    def add(self, fp: Fingerprints) -> int:
        """Append rows (global sequence numbers ``rows ..``), each to partition ``seq % P``."""
        n = len(fp)
        if not n:
            return 0
        first = self.rows
        self.backend.call("add", [(fp.take(np.arange((p - first) % self.parts, n, self.parts)),)
                                  for p in range(self.parts)])
        self.rows += n
        if fp.emb is not None and fp.model and not self._pending_model:
            self._pending_model = fp.model
        return n

    def note_shards(self, names) -> None:
        self._pending_shards.update(names)

    def commit(self) -> None:
        """Partitions first (each atomically), then ``partitions.json``: a crash between leaves
        extra partition rows that the next open drops."""
        if self.rows == self.total and not self._pending_shards:
            return
        self.backend.call("commit", [()] * self.parts)
        self.manifest["shards"] = sorted(self.shards | self._pending_shards)
        self.manifest["embedding_model"] = self.manifest.get("embedding_model") or self._pending_model
        self.total = self.rows
        self._write_top()
        self._pending_shards, self._pending_model = set(), None

    def replace_all(self, fp: Fingerprints, shards: list[str]) -> None:
        self.backend.call("replace_all", [(fp.take(np.arange(p, len(fp), self.parts)),) for p in range(self.parts)])
        self.total = self.rows = len(fp)
        self.manifest.update(shards=sorted(shards), embedding_model=fp.model if fp.emb is not None else None)
        self._pending_shards, self._pending_model = set(), None
        self._write_top()

    def all_rows(self) -> Fingerprints:
        """Every row in global order (re-partitioning)."""
        parts = self.backend.call("rows", [()] * self.parts)
        seq = np.concatenate([p + np.arange(len(f)) * self.parts for p, f in enumerate(parts)])
        return Fingerprints.concat(parts).take(np.argsort(seq, kind="stable")) if len(seq) else Fingerprints.empty()

    def _write_top(self) -> None:
        if self.directory is None:
            return
        from clipcrawl.base.storage import atomic_open
        from clipcrawl.filters.dedup.store import _fsync_dir, _locked

        self.manifest.update(rows=self.total, version=int(self.manifest.get("version", 0)) + 1,
                             updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        data = json.dumps(self.manifest, indent=1).encode()
        with _locked(self.directory), atomic_open(os.path.join(self.directory, TOP_FILE)) as f:
            f.write(data)
        _fsync_dir(self.directory)

    def close(self) -> None:
        self.backend.close()

    # ---------------------------------------------------------------- lookups
    def lookup(self, q: Fingerprints, methods: list[str], ranges: list[tuple[int, int]], rule: Rule,
               tau: float, hint: int = 1024) -> dict[str, list[Found]]:
        """Per method, per range (in the given order): each query row's best match over all partitions
        (``hint``: the query rows the single index would size a new embedding index for)."""
        answers = self.backend.call("search", [(q, methods, ranges, rule, tau, hint)] * self.parts)
        return {m: [merge(m, [a[m][i] for a in answers]) for i in range(len(ranges))] for m in methods}


def _rank_key(method: str, f: Found) -> np.ndarray:
    """Larger is better (the single index's order within one reference)."""
    if method == "phash":
        return np.where(np.isnan(f.score), 1 - f.value / 64.0, f.score)
    if method == "semantic":
        return f.value
    return np.zeros(len(f.seq))


def merge(method: str, found: list[Found]) -> Found:
    """Best per row over partitions: highest rank key, ties the smallest sequence number."""
    best = Found(found[0].seq.copy(), found[0].key.copy(), found[0].value.copy(), found[0].score.copy())
    key = _rank_key(method, best)
    for f in found[1:]:
        k = _rank_key(method, f)
        ok = f.seq >= 0
        better = ok & ((best.seq < 0) | (k > key) | ((k == key) & (f.seq < best.seq)))
        best.seq[better], best.key[better] = f.seq[better], f.key[better]
        best.value[better], best.score[better], key[better] = f.value[better], f.score[better], k[better]
    return best


# ---------------------------------------------------------------- opening with a given P
def _single_files(directory: str) -> list[str]:
    return [n for n in os.listdir(directory) if n == "index.json" or n.startswith("seg-")]


def open_index(directory: str | None, partitions: int = 1, backend: str = "auto"):
    """The index in ``directory`` with ``partitions`` partitions: a :class:`.store.DedupIndex` for 1,
    else a :class:`PartitionedIndex`. A stored index of another layout is re-partitioned (its rows
    keep their order); ``partitions.json``, when present, is the authoritative layout."""
    from clipcrawl.filters.dedup.store import DedupIndex

    if directory is not None:
        directory = os.fspath(directory)
        directory = directory.removeprefix("file://")
    if partitions > 1 and directory is not None and "://" in directory:
        from clipcrawl.schemas.config import ConfigError

        raise ConfigError(
            f"dedup.partitions {partitions}: the partitioned index keeps its parts on a filesystem, not at "
            f"{directory} (fix: dedup.partitions 1 keeps the index with the s3:// dataset, or set dedup.index_dir "
            "to a shared path)")
    top = _read_top(directory) if directory is not None and "://" not in directory else None
    if partitions <= 1:
        index = DedupIndex.open(directory)
        if top is None:
            return index
        old = PartitionedIndex(directory, top["partitions"], "local")
        rows, shards = old.all_rows(), sorted(old.shards)
        old.close()
        index.replace_all(rows, shards)
        os.remove(os.path.join(directory, TOP_FILE))
        _remove_parts(directory)
        return index
    if top is not None and top["partitions"] == partitions:
        return PartitionedIndex(directory, partitions, backend)
    if top is not None:  # another P: read in order, rewrite
        old = PartitionedIndex(directory, top["partitions"], "local")
        rows, shards = old.all_rows(), sorted(old.shards)
        old.close()
        os.remove(os.path.join(directory, TOP_FILE))
        _remove_parts(directory)
    elif directory is not None and os.path.exists(os.path.join(directory, "index.json")):
        single = DedupIndex.open(directory)
        rows, shards = single.committed, sorted(single.shards)
    else:
        return PartitionedIndex(directory, partitions, backend)
    index = PartitionedIndex(directory, partitions, backend)
    index.replace_all(rows, shards)
    for name in _single_files(directory):
        os.remove(os.path.join(directory, name))
    return index


def _remove_parts(directory: str) -> None:
    for name in os.listdir(directory):
        if name.startswith("part-"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


__all__ = ["PartitionedIndex", "merge", "open_index", "share"]
