"""Hamming-radius search over 64-bit codes by multi-index hashing (Norouzi et al., CVPR 2012).

The 64 bits (after a fixed bit permutation that spreads correlated pHash bits) are split into
``m`` blocks with radii ``r_i`` such that ``sum(r_i + 1) > k``. By the pigeonhole principle two
codes within distance ``k`` agree within ``r_i`` bits on at least one block ``i``, so probing
every block value within ``r_i`` of a code finds all of its neighbours: the search is exact,
never all pairs. A pair is reported only from the first block where it qualifies (the
"canonical" block), so no pair is reported twice. Blocks of at most 24 bits use a dense
counting-sort table (O(1) probe); wider blocks fall back to binary search.

The block layout is chosen per call by a cost model (probes + expected candidates for
uniformly spread codes), which keeps 1M codes at k = 8 well under a minute on two cores
(bench/dedup_phash.py).

``probe_radius`` gives an *approximate* search instead (used for the crop windows of
:mod:`.crops`): three blocks of 21-22 bits, each probed within that radius only, then the full
distance checked against ``k``. Every pair within ``3 * (probe_radius + 1) - 1`` is still found;
a pair further apart (up to ``k``) is found when its differing bits leave one block within the
radius (radius 1: about 9 in 10 pairs at distance 6, half at distance 8, for random bits). Probing
67 instead of 762 buckets per code is what makes many codes per image affordable.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

_DENSE_MAX_BITS = 24
#: a dense bucket table only when it has at most this many buckets per indexed code: below that, building
#: 2**bits counters costs more than binary search saves (a 22-bit table over 45k crop codes: 1.2 s vs 10 ms)
_DENSE_BUCKETS_PER_CODE = 16
_CHUNK = 1 << 22  # candidate pairs materialised at once


def _bit_permutation() -> np.ndarray:
    return np.random.default_rng(0x5EED).permutation(64)


_PERM = _bit_permutation()


def permute_bits(codes: np.ndarray) -> np.ndarray:
    """Apply the fixed bit permutation (bit ``p`` of the input becomes bit ``_PERM[p]``)."""
    codes = np.asarray(codes, dtype=np.uint64)
    out = np.zeros_like(codes)
    one = np.uint64(1)
    for src, dst in enumerate(_PERM):
        out |= ((codes >> np.uint64(src)) & one) << np.uint64(dst)
    return out


_BYTE_COUNTS = np.array([bin(i).count("1") for i in range(256)], dtype=np.int8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64 (numpy >= 2 has a ufunc; older numpy uses a byte table)."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int8)
    return _BYTE_COUNTS[x.view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.int8)


@dataclass(frozen=True)
class Block:
    shift: int
    bits: int
    radius: int

    def values(self, codes: np.ndarray) -> np.ndarray:
        return ((codes >> np.uint64(self.shift)) & np.uint64((1 << self.bits) - 1)).astype(np.int64)

    def distance(self, xor: np.ndarray) -> np.ndarray:
        return popcount((xor >> np.uint64(self.shift)) & np.uint64((1 << self.bits) - 1))


def _ball(bits: int, radius: int) -> int:
    return sum(math.comb(bits, i) for i in range(radius + 1))


def _masks(bits: int, radius: int, *, include_zero: bool = True) -> np.ndarray:
    out = [0] if include_zero else []
    for r in range(1, radius + 1):
        for combo in itertools.combinations(range(bits), r):
            out.append(sum(1 << b for b in combo))
    return np.array(out, dtype=np.int64)


def plan_blocks(k: int, n_index: int, n_query: int, probe_radius: int | None = None) -> list[Block]:
    """Cheapest exact block layout for radius ``k`` (cost model: probes + expected candidates), or
    with ``probe_radius`` the approximate layout: blocks of 22, 21, 21 bits probed within it."""
    if k < 0:
        raise ValueError("Hamming radius must be >= 0")
    if probe_radius is not None and 3 * (probe_radius + 1) <= k:
        return [Block(0, 22, probe_radius), Block(22, 21, probe_radius), Block(43, 21, probe_radius)]
    best: tuple[float, list[Block]] | None = None
    for m in range(1, min(k + 1, 8) + 1):
        widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
        total = k + 1  # sum(r_i + 1) must reach k + 1
        radii = [total // m - 1 + (1 if i < total % m else 0) for i in range(m)]
        blocks, shift, cost = [], 0, 0.0
        for w, r in zip(widths, radii):
            blocks.append(Block(shift, w, r))
            shift += w
            ball = _ball(w, r)
            probe_cost = 1.0 if w <= _DENSE_MAX_BITS else 4.0 + math.log2(max(n_index, 2)) / 4
            cost += n_query * ball * probe_cost + n_query * n_index * ball / 2.0**w * 1.5
            if w <= _DENSE_MAX_BITS:
                cost += 2.0**w / 8  # building the dense table
        if best is None or cost < best[0]:
            best = (cost, blocks)
    assert best is not None
    return best[1]


@dataclass
class Pairs:
    """Pairs ``(a[i], b[i])`` at Hamming distance ``distance[i]``."""

    a: np.ndarray
    b: np.ndarray
    distance: np.ndarray

    @classmethod
    def empty(cls) -> Pairs:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), np.zeros(0, dtype=np.int8))

    @classmethod
    def concat(cls, parts: list[Pairs]) -> Pairs:
        parts = [p for p in parts if len(p.a)]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("a", "b", "distance")))

    def __len__(self) -> int:
        return len(self.a)


class _Table:
    """Codes sorted by one block's value, with a dense bucket table (or sorted values) to probe."""

    def __init__(self, block: Block, codes: np.ndarray, *, keep_values: bool = True):
        self.block = block
        vals = block.values(codes)
        order = np.argsort(vals, kind="stable")
        self.order = order.astype(np.int32) if len(codes) < 2**31 else order
        self.sorted_codes = codes[order]  # probes hit nearby memory when queries are sorted too
        self.dense = block.bits <= _DENSE_MAX_BITS and (1 << block.bits) <= _DENSE_BUCKETS_PER_CODE * len(codes)
        # sorted block values: needed for wide blocks and self_join; a dense index drops them (memory)
        self.sorted_vals = vals[order] if keep_values or not self.dense else None
        if self.dense:
            dtype = np.int32 if len(codes) < 2**31 else np.int64
            self.counts = np.bincount(vals, minlength=1 << block.bits).astype(dtype)
            self.starts = (np.cumsum(self.counts) - self.counts).astype(dtype)

    def probe(self, qidx: np.ndarray, qvals: np.ndarray, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Non-empty buckets of ``qvals ^ e``: (query index, bucket start, bucket size)."""
        target = qvals ^ e
        if self.dense:
            c = np.take(self.counts, target)
            nz = np.flatnonzero(c)
            return qidx[nz], np.take(self.starts, target[nz]).astype(np.int64), c[nz].astype(np.int64)
        lo = np.searchsorted(self.sorted_vals, target, "left")
        c = np.searchsorted(self.sorted_vals, target, "right") - lo
        nz = np.flatnonzero(c)
        return qidx[nz], lo[nz], c[nz]


def _expand(queries: np.ndarray, lo: np.ndarray, counts: np.ndarray):
    """Yield (query, table position) arrays for every position in [lo, lo + count), in chunks."""
    if not len(counts):
        return
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):
        base = int(ends[start - 1]) if start else 0
        stop = max(int(np.searchsorted(ends, base + _CHUNK, "right")), start + 1)
        c = counts[start:stop]
        total = int(ends[stop - 1]) - base
        pos = np.repeat(lo[start:stop] - (ends[start:stop] - c - base), c) + np.arange(total)
        yield np.repeat(queries[start:stop], c), pos
        start = stop


def _verify(a: np.ndarray, pos: np.ndarray, qcodes: np.ndarray, table: _Table, blocks: list[Block], i: int, k: int):
    """Keep candidate pairs (query a, table position pos) within k whose canonical block is ``i``."""
    xor = np.take(qcodes, a) ^ np.take(table.sorted_codes, pos)
    d = popcount(xor)
    ok = d <= k
    for prev in blocks[:i]:  # canonical block: drop pairs an earlier block already reports
        if ok.any():
            ok &= prev.distance(xor) > prev.radius
    if not ok.any():
        return None
    return Pairs(a[ok].astype(np.int64), np.take(table.order, pos[ok]).astype(np.int64), d[ok])


def _run(tasks: list, workers: int | None) -> Pairs:
    """Run probe tasks (callables returning lists of Pairs), on threads when ``workers > 1``.
    Default 1: the many short numpy calls hold the GIL often enough that two threads measured no
    faster than one (bench/dedup_phash.py); the option stays for larger arrays / free-threaded builds."""
    workers = workers or 1
    if workers <= 1 or len(tasks) <= 1:
        results = [t() for t in tasks]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda t: t(), tasks))
    return Pairs.concat([p for r in results for p in r if p is not None])


def _probe_task(table, blocks, i, k, qidx, qvals, qcodes, masks):
    def task() -> list:
        out = []
        for e in masks:
            for a, pos in _expand(*table.probe(qidx, qvals, int(e))):
                out.append(_verify(a, pos, qcodes, table, blocks, i, k))
        return out

    return task


def _mask_chunks(masks: np.ndarray, size: int = 16) -> list[np.ndarray]:
    return [masks[j : j + size] for j in range(0, len(masks), size)]


class HammingIndex:
    """Exact radius search of query codes against a fixed set of indexed codes."""

    def __init__(self, codes: np.ndarray, k: int, n_query_hint: int | None = None,
                 probe_radius: int | None = None):
        self.k = int(k)
        permuted = permute_bits(np.asarray(codes, dtype=np.uint64))
        self.n = n = len(permuted)
        self.blocks = plan_blocks(self.k, max(n, 1), n_query_hint or max(n, 1), probe_radius)
        self.tables = [_Table(b, permuted, keep_values=False) for b in self.blocks] if n else []

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        """Memory held by the search tables."""
        return sum(sum(getattr(t, f).nbytes for f in ("order", "sorted_codes", "sorted_vals", "counts", "starts")
                       if getattr(t, f, None) is not None) for t in self.tables)

    def search(self, queries: np.ndarray, workers: int | None = None) -> Pairs:
        """All (query index, indexed index) pairs within distance k."""
        q = permute_bits(np.asarray(queries, dtype=np.uint64))
        if not len(q) or not self.n:
            return Pairs.empty()
        tasks = []
        for i, table in enumerate(self.tables):
            vals = table.block.values(q)
            qorder = np.argsort(vals, kind="stable")  # sorted probes touch nearby buckets
            qv = vals[qorder]
            for chunk in _mask_chunks(_masks(table.block.bits, table.block.radius)):
                tasks.append(_probe_task(table, self.blocks, i, self.k, qorder, qv, q, chunk))
        return _run(tasks, workers)


def self_join(codes: np.ndarray, k: int, workers: int | None = None) -> Pairs:
    """All pairs ``a < b`` of distinct positions within distance k (identical codes included)."""
    c = permute_bits(np.asarray(codes, dtype=np.uint64))
    n = len(c)
    if n < 2:
        return Pairs.empty()
    k = int(k)
    blocks = plan_blocks(k, n, n)
    tasks = []
    for i, block in enumerate(blocks):
        table = _Table(block, c)
        sv = table.sorted_vals

        def same_bucket(table=table, sv=sv, i=i) -> list:
            # e == 0: pairs inside one bucket, each unordered pair once (later positions only).
            hi = np.searchsorted(sv, sv, "right")
            lo = np.arange(1, n + 1)
            nz = np.flatnonzero(hi > lo)
            return [_verify(a, p, c, table, blocks, i, k) for a, p in _expand(table.order[nz], lo[nz], (hi - lo)[nz])]

        tasks.append(same_bucket)
        # e != 0: probe only "upwards" (v ^ e > v) so each unordered pair is generated once.
        masks = _masks(block.bits, block.radius, include_zero=False)
        if not len(masks):
            continue
        top = np.floor(np.log2(masks)).astype(np.int64)
        for t in np.unique(top):
            sel = np.flatnonzero(((sv >> t) & 1) == 0)
            xs, xv = table.order[sel], sv[sel]
            for chunk in _mask_chunks(masks[top == t]):
                tasks.append(_probe_task(table, blocks, i, k, xs, xv, c, chunk))
    pairs = _run(tasks, workers)
    swap = pairs.a > pairs.b
    pairs.a[swap], pairs.b[swap] = pairs.b[swap], pairs.a[swap].copy()
    return pairs
