from __future__ import annotations

import numpy as np
import pytest

from clipcrawl.filters.dedup import semantic
from clipcrawl.filters.dedup.semantic import EmbeddingIndex, self_pairs

pytest.importorskip("faiss")


def planted(n: int, d: int, n_dup: int, seed: int = 0):
    """Clustered unit vectors plus near copies (cosine ~0.97-0.995) of the first n_dup."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, d))
    x = centers[rng.integers(0, 20, n)] * 0.6 + rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    noise = rng.normal(size=(n_dup, d))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    dup = x[:n_dup] + noise * rng.uniform(0.1, 0.25, (n_dup, 1))
    return np.concatenate([x, dup / np.linalg.norm(dup, axis=1, keepdims=True)]).astype(np.float32)


def brute(x: np.ndarray, tau: float) -> set:
    s = x @ x.T
    a, b = np.nonzero(np.triu(s >= tau, 1))
    return set(zip(a.tolist(), b.tolist()))


def test_exact_self_pairs():
    x = planted(500, 64, 50)
    p = self_pairs(x, 0.95)
    assert set(zip(p.a.tolist(), p.b.tolist())) == brute(x, 0.95)
    assert np.all(p.score >= 0.95) and np.all(p.a < p.b)


def test_ivf_pca_path_finds_the_planted_pairs(monkeypatch):
    monkeypatch.setattr(semantic, "EXACT_WORK", 0)
    x = planted(6000, 128, 300)
    index = EmbeddingIndex(x, n_query_hint=len(x))
    assert not index.exact and index.pca is not None
    p = self_pairs(x, 0.95)
    truth = brute(x, 0.95)
    got = set(zip(p.a.tolist(), p.b.tolist()))
    assert got <= truth  # verified with exact cosines: never a false pair
    assert len(got) >= 0.98 * len(truth)


def test_invalid_rows_never_match():
    x = planted(50, 16, 5)
    x[3] = 0
    x[4] = np.nan
    p = EmbeddingIndex(x).search(x, 0.9)
    assert not set(p.a.tolist()) & {3, 4} and not set(p.b.tolist()) & {3, 4}
