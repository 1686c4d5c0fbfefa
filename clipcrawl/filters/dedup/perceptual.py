"""Perceptual near-duplicates: candidates from pHashes, verified on aligned thumbnails.

Candidates are (1) pairs whose 64-bit pHashes are within ``k`` (exact multi-index search, catches
resizes, re-encodes, colour shifts) and (2) pairs where one image's thumbnail code is within
``crop_k`` of a window code of the other (:mod:`.crops`, catches crops/shifts up to ~10% per axis).
Every candidate whose two rows have thumbnails is then verified (:mod:`.verify`): kept when the
aligned thumbnail NCC is >= ``verify``. Rows without a thumbnail (an index written before
thumbnails were stored) keep the old rule: pHash within ``k``, unverified.

Within a batch, rows with identical pHashes form one node (each verified against the node's
best-ranked row, a failing row gets its own node), and edges between nodes are verified between
their best-ranked rows: work stays O(rows + candidate edges) even for an image repeated 1000 times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipcrawl.filters.dedup.columns import Fingerprints
from clipcrawl.filters.dedup.crops import CropIndex, crop_self_pairs, hint_boxes
from clipcrawl.filters.dedup.hamming import HammingIndex, popcount, self_join
from clipcrawl.filters.dedup.verify import colours, prepare, verify_pairs


@dataclass(frozen=True)
class Rule:
    k: int = 8  # full-image pHash distance
    crops: bool = True  # also window-code candidates
    crop_k: int = 10
    verify: float = 0.9  # aligned NCC threshold; <= 0: candidates are not verified


@dataclass
class Links:
    """Accepted pairs: rows ``a`` (query / first) and ``b`` (reference / second), their full pHash
    distance and aligned NCC (NaN when not verified)."""

    a: np.ndarray
    b: np.ndarray
    distance: np.ndarray
    score: np.ndarray

    @classmethod
    def empty(cls) -> Links:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), z.copy(), np.zeros(0, dtype=np.float32))

    def take(self, keep: np.ndarray) -> Links:
        return Links(self.a[keep], self.b[keep], self.distance[keep], self.score[keep])


def _unique(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(a):
        return a, b
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _prepared(fp: Fingerprints, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(sorted unique rows, their blurred grey thumbnails, their colour cells)."""
    uniq = np.unique(rows)
    thumbs = np.asarray(fp.thumb[uniq])
    return uniq, prepare(thumbs), colours(thumbs)


def verify_links(qa: Fingerprints, a: np.ndarray, rb: Fingerprints, b: np.ndarray, rule: Rule) -> Links:
    """Decide candidate pairs (qa rows a, rb rows b) by the rule (see the module doc)."""
    if not len(a):
        return Links.empty()
    d = popcount(qa.phash[a] ^ rb.phash[b]).astype(np.int64)
    by_phash = qa.has_phash[a] & rb.has_phash[b] & (d <= rule.k)
    score = np.full(len(a), np.nan, dtype=np.float32)
    both = qa.has_thumb[a] & rb.has_thumb[b]
    if rule.verify <= 0:
        keep = by_phash | both  # crop candidates have thumbnails on both sides
        return Links(a[keep], b[keep], d[keep], score[keep])
    idx = np.flatnonzero(both)
    if len(idx):
        ua, pa, ca = _prepared(qa, a[idx])
        ub, pb, cb = _prepared(rb, b[idx])
        box, _ = hint_boxes(qa.crop[a[idx]], rb.crop[b[idx]])
        score[idx] = verify_pairs(pa, np.searchsorted(ua, a[idx]), np.searchsorted(ub, b[idx]), box, pb, ca, cb)
    keep = np.where(both, score >= rule.verify, by_phash)
    return Links(a[keep], b[keep], d[keep], score[keep])


class ReferenceSearch:
    """Perceptual matches of query rows against a fixed set of fingerprints (search structures
    built on first use and reused for every batch)."""

    def __init__(self, ref: Fingerprints, rule: Rule, n_query_hint: int = 1024):
        self.ref, self.rule = ref, rule
        self._phash_ids = np.flatnonzero(ref.has_phash)
        self._phash = HammingIndex(ref.phash[self._phash_ids], rule.k, n_query_hint=n_query_hint)
        self._crop_ids = np.flatnonzero(ref.has_thumb) if rule.crops and ref.crop is not None else np.zeros(0, int)
        self._crop = CropIndex(ref.crop[self._crop_ids], rule.crop_k) if len(self._crop_ids) else None

    def search(self, q: Fingerprints, rows: np.ndarray) -> Links:
        """Accepted pairs (query row, reference row)."""
        rows = rows[q.has_phash[rows] | q.has_thumb[rows]]
        parts_a, parts_b = [], []
        with_phash = rows[q.has_phash[rows]]
        if len(with_phash) and len(self._phash_ids):
            p = self._phash.search(q.phash[with_phash])
            parts_a.append(with_phash[p.a])
            parts_b.append(self._phash_ids[p.b])
        with_thumb = rows[q.has_thumb[rows]]
        if self._crop is not None and len(with_thumb) and q.crop is not None:
            p = self._crop.search(q.crop[with_thumb])
            parts_a.append(with_thumb[p.a])
            parts_b.append(self._crop_ids[p.b])
        if not parts_a:
            return Links.empty()
        a, b = _unique(np.concatenate(parts_a), np.concatenate(parts_b))
        return verify_links(q, a, self.ref, b, self.rule)


@dataclass
class SelfLinks:
    """Within-batch result: node per row (-1 = takes no part), accepted node edges (between the
    nodes' best-ranked rows) and, per row, the distance/score linking it to its node's best row."""

    node: np.ndarray
    edges: Links  # a, b are node ids
    member_distance: np.ndarray
    member_score: np.ndarray


def self_links(fp: Fingerprints, active: np.ndarray, rank: np.ndarray, rule: Rule) -> SelfLinks:
    n = len(fp)
    node = np.full(n, -1, dtype=np.int64)
    m_dist, m_score = np.zeros(n, dtype=np.int64), np.full(n, np.nan, dtype=np.float32)
    rows = np.flatnonzero(active & fp.has_phash)
    if not len(rows):
        return SelfLinks(node, Links.empty(), m_dist, m_score)
    rows = rows[np.lexsort((rank[rows], fp.phash[rows]))]  # by code, best rank first
    first = np.concatenate([[True], fp.phash[rows][1:] != fp.phash[rows][:-1]])
    head = np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))  # position of each row's head
    members = np.flatnonzero(~first)
    if len(members):  # identical pHash: verify every member against its head
        star = verify_links(fp, rows[members], fp, rows[head[members]], rule)
        ok = np.isin(rows[members], star.a)
        m_score[star.a] = star.score
        head[members[~ok]] = members[~ok]  # a failing member becomes a node of its own
    keys, node_of_pos = np.unique(head, return_inverse=True)
    node[rows] = node_of_pos
    heads = rows[keys]  # node id -> its best-ranked row
    codes = fp.phash[heads]
    pairs = self_join(codes, rule.k)
    a, b = pairs.a, pairs.b
    if rule.crops and fp.crop is not None:
        with_thumb = np.flatnonzero(fp.has_thumb[heads])
        cp = crop_self_pairs(fp.crop[heads[with_thumb]], rule.crop_k)
        a, b = np.concatenate([a, with_thumb[cp.a]]), np.concatenate([b, with_thumb[cp.b]])
    a, b = _unique(np.minimum(a, b), np.maximum(a, b))
    links = verify_links(fp, heads[a], fp, heads[b], rule)
    edges = Links(node[links.a], node[links.b], links.distance, links.score)
    return SelfLinks(node, edges, m_dist, m_score)
