"""Cosine range search over CLIP image embeddings with faiss, chosen by size.

* Small problems (``n_query * n_index <= EXACT_WORK``, e.g. 20k x 20k): exact ``IndexFlatIP``.
* Large ones: vectors are projected by PCA to ``PCA_DIM`` dimensions and searched with an
  ``IndexIVFFlat`` (L2, ``nlist ~ 4 sqrt(N)`` lists with an HNSW coarse quantizer from 1024 lists,
  ``nprobe`` probed; a self-join unions both directions of each pair) for squared distance
  ``<= 2 (1 - tau)``. For unit vectors ``|x - y|^2 = 2 - 2 cos`` and an orthogonal projection never
  lengthens a difference, so every pair with cosine >= tau is a candidate (the only loss is IVF
  probing); candidates are then verified with the exact cosine of the full vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_WORK = 4e8  # n_query * n_index up to which exact search is used
PCA_DIM = 32
NPROBE = 4
_TRAIN_MIN = 50_000


@dataclass
class ScoredPairs:
    a: np.ndarray  # query (or first) index
    b: np.ndarray  # indexed (or second) index
    score: np.ndarray  # cosine

    @classmethod
    def empty(cls) -> ScoredPairs:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), np.zeros(0, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.a)


def normalize(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows (float32) and a validity mask (finite, non-zero)."""
    x = np.ascontiguousarray(emb, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1) if x.size else np.zeros(len(x), dtype=np.float32)
    ok = np.isfinite(norms) & (norms > 1e-12)
    x = np.where(ok[:, None], x / np.where(ok, norms, 1)[:, None], 0).astype(np.float32)
    return np.ascontiguousarray(x), ok


class EmbeddingIndex:
    """Unit-vector index answering "which indexed vectors have cosine >= tau with each query"."""

    def __init__(self, emb: np.ndarray, n_query_hint: int = 1, *, nprobe: int = NPROBE, seed: int = 0):
        import faiss

        self.x, self.valid = normalize(emb)
        self.ids = np.flatnonzero(self.valid)
        n, d = len(self.ids), self.x.shape[1] if self.x.ndim == 2 else 0
        self.exact = n * max(n_query_hint, 1) <= EXACT_WORK or n < 4096
        self.pca = None
        data = self.x if n == len(self.x) else self.x[self.ids]
        if self.exact:
            self.index = faiss.IndexFlatIP(d)
            if n:
                self.index.add(data)
            return
        nlist = int(min(max(4 * np.sqrt(n), 64), 65536, n // 20))
        rng = np.random.default_rng(seed)
        train = data[np.sort(rng.choice(n, min(n, max(_TRAIN_MIN, 20 * nlist)), replace=False))]
        if d > PCA_DIM:
            self.pca = faiss.PCAMatrix(d, PCA_DIM)
            self.pca.train(train[:_TRAIN_MIN])
            train = self.pca.apply(train)
        dp = train.shape[1]
        # HNSW over the centroids makes assigning 1M vectors to thousands of lists cheap
        self.index = faiss.index_factory(dp, f"IVF{nlist}_HNSW32,Flat" if nlist >= 1024 else f"IVF{nlist},Flat")
        ivf = faiss.extract_index_ivf(self.index)
        ivf.cp.niter, ivf.cp.min_points_per_centroid, ivf.cp.seed = 10, 5, seed
        self.index.train(train)
        ivf.nprobe = min(nprobe, nlist)
        for s in range(0, n, 262_144):
            self.index.add(self._project(data[s : s + 262_144]))

    def _project(self, x: np.ndarray) -> np.ndarray:
        return self.pca.apply(x) if self.pca is not None else x

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, tau: float, *, chunk: int = 65_536) -> ScoredPairs:
        """Pairs (query row, indexed row, cosine) with cosine >= tau."""
        q, ok = normalize(queries)
        return self._search(q, ok, tau, chunk)

    def _search(self, q: np.ndarray, ok: np.ndarray, tau: float, chunk: int = 65_536) -> ScoredPairs:
        qids = np.flatnonzero(ok)
        if not len(qids) or not len(self.ids):
            return ScoredPairs.empty()
        parts_a, parts_b, parts_s = [], [], []
        for s in range(0, len(qids), chunk):
            sel = qids[s : s + chunk]
            qx = q[sel]
            if self.exact:
                lims, dist, idx = self.index.range_search(qx, float(tau) - 1e-4)
            else:
                lims, dist, idx = self.index.range_search(self._project(qx), 2.0 * (1.0 - float(tau)) + 1e-4)
            rows = np.repeat(np.arange(len(sel)), np.diff(lims).astype(np.int64))
            idx = idx.astype(np.int64)
            score = np.einsum("ij,ij->i", qx[rows], self.x[self.ids[idx]]) if len(idx) else dist
            keep = score >= tau
            parts_a.append(sel[rows[keep]])
            parts_b.append(self.ids[idx[keep]])
            parts_s.append(score[keep].astype(np.float32))
        return ScoredPairs(np.concatenate(parts_a), np.concatenate(parts_b), np.concatenate(parts_s))


def self_pairs(emb: np.ndarray, tau: float, *, nprobe: int = NPROBE) -> ScoredPairs:
    """All pairs ``a < b`` of rows with cosine >= tau."""
    n = len(emb)
    if n < 2:
        return ScoredPairs.empty()
    index = EmbeddingIndex(emb, n_query_hint=n, nprobe=nprobe)
    p = index._search(index.x, index.valid, tau)
    # each pair is searched from both ends; the union recovers pairs one end's probes missed
    lo, hi = np.minimum(p.a, p.b), np.maximum(p.a, p.b)
    keep = lo < hi
    code = np.unique(lo[keep] * n + hi[keep], return_index=True)[1]
    lo, hi, score = lo[keep][code], hi[keep][code], p.score[keep][code]
    return ScoredPairs(lo, hi, score)
