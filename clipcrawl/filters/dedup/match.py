"""Finding duplicates: within a batch (grouped by the keep rule) and against a reference set
(the persistent index or an evaluation set), one method at a time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipcrawl.filters.dedup.columns import Fingerprints
from clipcrawl.filters.dedup.groups import Leaders, greedy_leaders
from clipcrawl.filters.dedup.perceptual import Links, ReferenceSearch, Rule, self_links
from clipcrawl.filters.dedup.semantic import EmbeddingIndex, normalize, self_pairs

EXACT_FIELDS = {"url": ("url_hash", None), "sha256": ("sha256", "has_sha256"), "pixels": ("pixels", "has_pixels")}


@dataclass
class Hits:
    """Best reference match per query row: ``ref[i]`` (-1 = none), its distance or cosine, and for
    perceptual matches the aligned thumbnail NCC (NaN when not verified)."""

    ref: np.ndarray
    value: np.ndarray
    score: np.ndarray | None = None

    @classmethod
    def none(cls, n: int) -> Hits:
        return cls(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float64), np.full(n, np.nan))


def _present(fp: Fingerprints, method: str) -> np.ndarray:
    if method in EXACT_FIELDS:
        flag = EXACT_FIELDS[method][1]
        return np.ones(len(fp), dtype=bool) if flag is None else getattr(fp, flag)
    if method == "phash":
        return fp.has_phash
    if fp.emb is None:
        return np.zeros(len(fp), dtype=bool)
    return normalize(np.asarray(fp.emb))[1]


class Reference:
    """A fixed set of fingerprints with lazily built search structures (cached per parameter)."""

    def __init__(self, fp: Fingerprints):
        self.fp = fp
        self._cache: dict = {}

    def __len__(self) -> int:
        return len(self.fp)

    def _sorted(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        if method not in self._cache:
            values = getattr(self.fp, EXACT_FIELDS[method][0])
            ids = np.flatnonzero(_present(self.fp, method))
            order = ids[np.argsort(values[ids], kind="stable")]
            self._cache[method] = (values[order], order)
        return self._cache[method]

    def exact(self, method: str, q: Fingerprints, active: np.ndarray) -> Hits:
        hits = Hits.none(len(q))
        sorted_vals, order = self._sorted(method)
        rows = np.flatnonzero(active & _present(q, method))
        if not len(rows) or not len(order):
            return hits
        vals = getattr(q, EXACT_FIELDS[method][0])[rows]
        pos = np.searchsorted(sorted_vals, vals)
        pos_c = np.minimum(pos, len(sorted_vals) - 1)
        found = sorted_vals[pos_c] == vals
        hits.ref[rows[found]] = order[pos_c[found]]
        return hits

    def phash(self, q: Fingerprints, active: np.ndarray, rule: Rule) -> Hits:
        """Perceptual matches (pHash / crop candidates, verified on thumbnails; see .perceptual)."""
        hits = Hits.none(len(q))
        rows = np.flatnonzero(active & (q.has_phash | q.has_thumb))
        if not len(rows) or not len(self.fp):
            return hits
        key = ("phash", rule)
        if key not in self._cache:
            self._cache[key] = ReferenceSearch(self.fp, rule, n_query_hint=max(len(rows), 1024))
        links = self._cache[key].search(q, rows)
        return _best_perceptual(hits, links)

    def semantic(self, q: Fingerprints, active: np.ndarray, tau: float) -> Hits:
        hits = Hits.none(len(q))
        if q.emb is None or self.fp.emb is None or not len(self.fp):
            return hits
        if q.emb.shape[1] != self.fp.emb.shape[1]:
            return hits
        rows = np.flatnonzero(active)
        if not len(rows):
            return hits
        if "semantic" not in self._cache:
            self._cache["semantic"] = EmbeddingIndex(self.fp.emb, n_query_hint=max(len(rows), 1024))
        p = self._cache["semantic"].search(np.asarray(q.emb)[rows], tau)
        return _best(hits, rows[p.a], p.b, p.score.astype(np.float64), smaller_is_better=False)


def _best(hits: Hits, rows: np.ndarray, refs: np.ndarray, values: np.ndarray, *, smaller_is_better: bool) -> Hits:
    """Per row keep the closest reference (ties: earliest reference)."""
    if not len(rows):
        return hits
    v = values if smaller_is_better else -values
    order = np.lexsort((refs, v, rows))
    rows, refs, values = rows[order], refs[order], values[order]
    first = np.concatenate([[True], rows[1:] != rows[:-1]])
    hits.ref[rows[first]] = refs[first]
    hits.value[rows[first]] = values[first]
    return hits


def _best_perceptual(hits: Hits, links: Links) -> Hits:
    """Per query row the reference with the highest NCC (unverified: smallest distance)."""
    if not len(links.a):
        return hits
    verified = ~np.isnan(links.score)
    key = np.where(verified, links.score, 1 - links.distance / 64.0)
    order = np.lexsort((links.b, -key, links.a))
    a = links.a[order]
    first = order[np.concatenate([[True], a[1:] != a[:-1]])]
    rows = links.a[first]
    hits.ref[rows], hits.value[rows], hits.score[rows] = links.b[first], links.distance[first], links.score[first]
    return hits


# ---------------------------------------------------------------- within a batch
@dataclass
class Groups:
    """Greedy grouping result plus the value linking each duplicate to its leader."""

    leaders: Leaders
    value: np.ndarray  # pHash distance / cosine to the leader (0 / 1 when sharing a node)
    score: np.ndarray | None = None  # perceptual: aligned thumbnail NCC (NaN when not verified)


def group_exact(fp: Fingerprints, method: str, active: np.ndarray, rank: np.ndarray) -> Groups:
    present = active & _present(fp, method)
    values = getattr(fp, EXACT_FIELDS[method][0])
    node = np.full(len(fp), -1, dtype=np.int64)
    if present.any():
        _, inv = np.unique(values[present], return_inverse=True)
        node[present] = inv
    z = np.zeros(0, dtype=np.int64)
    return Groups(greedy_leaders(node, rank, z, z), np.zeros(len(fp)))


def group_phash(fp: Fingerprints, active: np.ndarray, rank: np.ndarray, rule: Rule) -> Groups:
    sl = self_links(fp, active, rank, rule)
    leaders = greedy_leaders(sl.node, rank, sl.edges.a, sl.edges.b)
    value, score = sl.member_distance.astype(np.float64), sl.member_score.copy()
    linked = leaders.via >= 0
    value[linked] = sl.edges.distance[leaders.via[linked]]
    score[linked] = sl.edges.score[leaders.via[linked]]
    return Groups(leaders, value, score)


def group_semantic(fp: Fingerprints, active: np.ndarray, rank: np.ndarray, tau: float) -> Groups:
    node = np.full(len(fp), -1, dtype=np.int64)
    value = np.ones(len(fp))
    if fp.emb is None:
        z = np.zeros(0, dtype=np.int64)
        return Groups(greedy_leaders(node, rank, z, z), value)
    x, ok = normalize(np.asarray(fp.emb))
    rows = np.flatnonzero(active & ok)
    node[rows] = np.arange(len(rows))  # one node per row
    pairs = self_pairs(x[rows], tau)
    leaders = greedy_leaders(node, rank, pairs.a, pairs.b)
    linked = leaders.via >= 0
    value[linked] = pairs.score[leaders.via[linked]]
    return Groups(leaders, value)
