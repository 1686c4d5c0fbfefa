"""One partition of the partitioned dedup index (see :mod:`.partitioned` for the design).

An :class:`IndexPartition` holds the reference rows whose global sequence number ``s`` (the row's
position in the single index's order) satisfies ``s % P == part``: its local row ``j`` is global row
``part + j * P``. It answers one scatter-gather lookup per batch (:meth:`search`: per method and per
sequence range, each query row's best match here, by the single index's rule) and stores its rows in
``DATASET/dedup/part-NN/`` with :class:`.store.DedupIndex`'s segment/commit format. The same class
runs in-process (local engine) or as a Ray actor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipcrawl.filters.dedup.columns import _ARRAYS, Fingerprints
from clipcrawl.filters.dedup.match import Hits, Reference
from clipcrawl.filters.dedup.perceptual import Rule


@dataclass
class Found:
    """Best match per query row in one sequence range: global ``seq`` (-1 = none), the matched key,
    the distance/cosine (``value``) and the aligned NCC (``score``, NaN when not verified)."""

    seq: np.ndarray
    key: np.ndarray
    value: np.ndarray
    score: np.ndarray

    @classmethod
    def none(cls, n: int) -> Found:
        return cls(np.full(n, -1, dtype=np.int64), np.full(n, None, dtype=object), np.zeros(n), np.full(n, np.nan))


def share(total: int, part: int, parts: int) -> int:
    """Rows of ``part`` among global rows ``0..total-1`` (round robin)."""
    return max(0, -(-(total - part) // parts))


def view(fp: Fingerprints, a: int, b: int) -> Fingerprints:
    """Rows ``a:b`` as views (no copy; memory maps stay mapped)."""
    kw = {f: getattr(fp, f)[a:b] for f in _ARRAYS}
    opt = {n: (None if getattr(fp, n) is None else getattr(fp, n)[a:b]) for n in ("emb", "thumb", "crop")}
    return Fingerprints(**kw, **opt, model=fp.model)


class IndexPartition:
    """Rows ``part, part + P, part + 2P, ...`` of the index; cheap to construct, :meth:`load` reads."""

    def __init__(self, part: int, parts: int, directory: str | None):
        self.part, self.parts, self.directory = part, parts, directory
        self.store = None
        self._chunks: list[tuple[int, Fingerprints]] = []  # (first local row, rows) kept for searching
        self._rows = 0
        self._refs: dict[tuple[int, int], Reference] = {}

    # ---------------------------------------------------------------- rows
    def load(self, total: int) -> int:
        """Open the stored rows; keep exactly this partition's share of ``total`` global rows (a crash
        between the partition commits and the top-level commit leaves extra rows: they are dropped).
        Returns the rows kept, or -1 when fewer than expected are stored (the caller rebuilds)."""
        from clipcrawl.filters.dedup.store import DedupIndex

        self.store = DedupIndex.open(self.directory)
        want = share(total, self.part, self.parts)
        have = len(self.store.committed)
        if have < want:
            return -1
        if have > want:
            self.store.replace_all(self.store.committed.take(np.arange(want)), [])
        self._chunks, self._rows, self._refs = [], 0, {}
        if want:
            self._append(self.store.committed)
        return want

    def _append(self, fp: Fingerprints) -> None:
        self._chunks.append((self._rows, fp))
        self._rows += len(fp)

    def __len__(self) -> int:
        return self._rows

    def add(self, fp: Fingerprints) -> int:
        """Append rows (the driver sends this partition's rows of each kept batch, in order)."""
        if len(fp):
            self._append(fp)
            self.store.add(fp)
        return self._rows

    def commit(self) -> None:
        self.store.commit()

    def replace_all(self, fp: Fingerprints) -> int:
        self.store.replace_all(fp, [])
        self._chunks, self._rows, self._refs = [], 0, {}
        if len(fp):
            self._append(fp)
        return self._rows

    def rows(self) -> Fingerprints:
        """All rows of this partition, in order (for re-partitioning)."""
        return self._slice(0, self._rows)

    def _slice(self, a: int, b: int) -> Fingerprints:
        parts = []
        for start, fp in self._chunks:
            lo, hi = max(a, start), min(b, start + len(fp))
            if lo < hi:
                parts.append(view(fp, lo - start, hi - start))
        if len(parts) == 1:
            return parts[0]
        return Fingerprints.concat(parts) if parts else Fingerprints.empty()

    # ---------------------------------------------------------------- lookups
    def _local(self, lo: int, hi: int) -> tuple[int, int]:
        """Local rows holding the global sequence range [lo, hi)."""
        return min(share(lo, self.part, self.parts), self._rows), min(share(hi, self.part, self.parts), self._rows)

    def _reference(self, lo: int, hi: int) -> tuple[Reference, int]:
        a, b = self._local(lo, hi)
        if (lo, hi) not in self._refs:
            self._refs[(lo, hi)] = Reference(self._slice(a, b))
        return self._refs[(lo, hi)], a

    def search(self, q: Fingerprints, methods: list[str], ranges: list[tuple[int, int]], rule: Rule,
               tau: float, hint: int = 1024) -> dict[str, list[Found]]:
        """Per method, per range: each query row's best match among this partition's rows of that
        range (ties: the earliest row), as the single index's :class:`.match.Reference` decides."""
        self._refs = {r: ref for r, ref in self._refs.items() if r in ranges}  # merged layers are rebuilt
        active = np.ones(len(q), dtype=bool)
        out: dict[str, list[Found]] = {m: [] for m in methods}
        for lo, hi in ranges:
            ref, first = self._reference(lo, hi)
            for method in methods:
                if not len(ref) or not len(q):
                    out[method].append(Found.none(len(q)))
                    continue
                if method == "phash":
                    hits = ref.phash(q, active, rule)
                elif method == "semantic":
                    self._semantic_index(ref, hi - lo, hint)
                    hits = ref.semantic(q, active, tau)
                else:
                    hits = ref.exact(method, q, active)
                out[method].append(self._found(hits, ref, first))
        return out

    @staticmethod
    def _semantic_index(ref: Reference, n_global: int, hint: int) -> None:
        """Build the range's embedding index (once, like the single index's Reference) exact exactly
        where the single index is (``n * hint <= EXACT_WORK`` over the whole range, ``hint`` = the
        active query rows at its first use), so decisions match there; beyond, this partition trains an IVF
        of its own share (exact below 4096 rows), which may find pairs the single index's IVF missed, or
        miss some (bench/RESULTS.md: exact shares made P = 4 ten times slower on 2 cores)."""
        from clipcrawl.filters.dedup.semantic import EXACT_WORK, EmbeddingIndex

        if "semantic" in ref._cache or ref.fp.emb is None or not len(ref.fp):
            return
        if n_global * hint <= EXACT_WORK or n_global < 4096:
            ref._cache["semantic"] = EmbeddingIndex(ref.fp.emb, n_query_hint=1)  # n * 1 <= EXACT_WORK: flat
        else:  # IVF like the single index, even where this share alone would be searched exactly (P x the work)
            n = max(len(ref.fp), 1)
            ref._cache["semantic"] = EmbeddingIndex(ref.fp.emb, n_query_hint=max(hint, int(EXACT_WORK // n) + 1))

    def _found(self, hits: Hits, ref: Reference, first: int) -> Found:
        found = Found.none(len(hits.ref))
        rows = np.flatnonzero(hits.ref >= 0)
        local = hits.ref[rows]
        found.seq[rows] = self.part + (first + local) * self.parts
        found.key[rows] = ref.fp.key[local]
        found.value[rows] = hits.value[rows]
        if hits.score is not None:
            found.score[rows] = hits.score[rows]
        return found
