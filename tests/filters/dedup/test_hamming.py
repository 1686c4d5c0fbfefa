from __future__ import annotations

import numpy as np
import pytest

from clipcrawl.filters.dedup.hamming import HammingIndex, plan_blocks, popcount, self_join


def _codes(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, size=n, dtype=np.int64).view(np.uint64) * np.uint64(2) + np.uint64(1)
    near = base.copy()
    for i in range(n):  # a near copy of every base code at distance 0..k+2
        for b in rng.choice(64, int(rng.integers(0, k + 3)), replace=False):
            near[i] ^= np.uint64(1) << np.uint64(int(b))
    return np.concatenate([base, near, base[: n // 10]])


@pytest.mark.parametrize("k", [0, 1, 3, 6, 8, 10, 12])
def test_self_join_and_search_are_exact(k):
    codes = _codes(250, k, k)
    d = popcount((codes[:, None] ^ codes[None, :]).ravel()).reshape(len(codes), -1)
    iu = np.triu_indices(len(codes), 1)
    truth = set(zip(*(x[d[iu] <= k].tolist() for x in iu)))
    p = self_join(codes, k)
    got = set(zip(p.a.tolist(), p.b.tolist()))
    assert len(got) == len(p) and got == truth
    assert all(d[a, b] == dist for a, b, dist in zip(p.a[:50], p.b[:50], p.distance[:50]))
    index = HammingIndex(codes[:300], k)
    q = codes[300:]
    p = index.search(q)
    truth = set(zip(*np.nonzero(d[300:, :300] <= k)))
    assert set(zip(p.a.tolist(), p.b.tolist())) == {(int(a), int(b)) for a, b in truth} and len(p) == len(truth)


@pytest.mark.parametrize("k", range(0, 17))
def test_block_plans_satisfy_pigeonhole(k):
    for n in (10, 10_000, 1_000_000):
        blocks = plan_blocks(k, n, n)
        assert sum(b.bits for b in blocks) == 64
        assert sum(b.radius + 1 for b in blocks) > k


def test_empty_and_single():
    assert len(self_join(np.zeros(0, np.uint64), 4)) == 0
    assert len(self_join(np.ones(1, np.uint64), 4)) == 0
    assert len(HammingIndex(np.zeros(0, np.uint64), 3).search(np.ones(3, np.uint64))) == 0
