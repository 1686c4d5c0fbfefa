"""pHash near-duplicate search at scale: 1M structured 64-bit hashes with planted near-duplicates.

Hashes are made the way pHash makes them: an 8x8 block of "DCT coefficients" (variance falling
with frequency, images drawn from 20k families that share part of their coefficients), one bit per
coefficient above the block's median, DC first. Near-duplicates re-threshold a copy's coefficients
after small noise (distances 0..~12, like re-encodes/resizes). We time the exact multi-index
self-join (clipcrawl.filters.dedup.hamming.self_join), report peak RSS and CPU time, check recall
on the planted pairs within k and exactness against brute force for sampled queries, and compare
with faiss IndexBinaryMultiHash and brute-force IndexBinaryFlat range search on a query sample
(extrapolated to all queries).

    python bench/dedup_phash.py [--n 1000000] [--k 8] [--planted 50000] [--baseline-queries 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np


def make_codes(n: int, planted: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, planted_a, planted_b): n codes whose last ``planted`` rows are near copies of rows planted_a."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    sigma = (1.0 / (1.0 + u + v) ** 1.2).ravel().astype(np.float32)
    sigma[0] = 3.0  # DC dominates, as in real pHashes
    n_base = n - planted
    families = rng.normal(size=(20_000, 64)).astype(np.float32)

    def to_codes(coef: np.ndarray) -> np.ndarray:
        bits = coef > np.median(coef, axis=1, keepdims=True)
        return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel()

    codes = np.empty(n, dtype=np.uint64)
    pa_ = rng.choice(n_base, planted, replace=False)
    pa_sorted = np.sort(pa_)
    near = np.empty(planted, dtype=np.uint64)
    step = 200_000
    for s in range(0, n_base, step):
        m = min(step, n_base - s)
        fam = families[rng.integers(0, len(families), m)]
        coef = (0.6 * fam + 0.8 * rng.normal(size=(m, 64)).astype(np.float32)) * sigma
        codes[s : s + m] = to_codes(coef)
        lo, hi = np.searchsorted(pa_sorted, [s, s + m])
        rows = pa_sorted[lo:hi] - s
        noisy = coef[rows] + rng.normal(size=(len(rows), 64)).astype(np.float32) * sigma * rng.uniform(
            0.02, 0.35, (len(rows), 1)).astype(np.float32)
        near[lo:hi] = to_codes(noisy)
    codes[n_base:] = near
    return codes, pa_sorted, np.arange(n_base, n)


def brute_check(codes: np.ndarray, k: int, pairs: set, n_queries: int, seed: int = 1) -> tuple[int, int]:
    """(pairs within k found by brute force for sampled queries, how many of them the index missed)."""
    from clipcrawl.filters.dedup.hamming import popcount

    rng = np.random.default_rng(seed)
    total = missed = 0
    for q in rng.choice(len(codes), n_queries, replace=False):
        d = popcount(codes ^ codes[q])
        for j in np.flatnonzero(d <= k):
            if j == q:
                continue
            total += 1
            missed += (min(q, j), max(q, j)) not in pairs
    return total, missed


def faiss_baselines(codes: np.ndarray, k: int, n_queries: int) -> dict:
    import faiss

    x = codes.astype(">u8").view(np.uint8).reshape(len(codes), 8)
    q = x[np.random.default_rng(2).choice(len(codes), n_queries, replace=False)]
    out = {}
    for name, index in (("faiss_multihash_3x21_nflip2", faiss.IndexBinaryMultiHash(64, 3, 21)),
                        ("faiss_flat_bruteforce", faiss.IndexBinaryFlat(64))):
        if hasattr(index, "nflip"):
            index.nflip = 2
        t = time.perf_counter()
        index.add(x)
        add = time.perf_counter() - t
        t = time.perf_counter()
        index.range_search(q, k + 1)  # faiss binary range search: distance < radius
        per_query = (time.perf_counter() - t) / n_queries
        out[name] = {"add_s": round(add, 1), "search_s_extrapolated": round(per_query * len(codes), 1)}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--planted", type=int, default=50_000)
    ap.add_argument("--check-queries", type=int, default=300)
    ap.add_argument("--baseline-queries", type=int, default=20_000, help="0 skips the faiss baselines")
    args = ap.parse_args(argv)
    from clipcrawl.filters.dedup.hamming import popcount, self_join

    codes, pa_, pb = make_codes(args.n, min(args.planted, args.n // 4))
    planted_d = popcount(codes[pa_] ^ codes[pb])
    cpu0, t0 = time.process_time(), time.perf_counter()
    pairs = self_join(codes, args.k)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    found = set(zip(pairs.a.tolist(), pairs.b.tolist()))
    within = planted_d <= args.k
    hit = sum((int(a), int(b)) in found for a, b in zip(pa_[within], pb[within]))
    total, missed = brute_check(codes, args.k, found, args.check_queries)
    res = {
        "n": args.n, "k": args.k, "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1),
        "self_join_wall_s": round(wall, 1), "self_join_cpu_s": round(cpu, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "pairs_found": len(pairs), "planted": len(pa_), "planted_within_k": int(within.sum()),
        "planted_recall": round(hit / max(int(within.sum()), 1), 4),
        "planted_distance_hist": np.bincount(planted_d, minlength=13)[:13].tolist(),
        "bruteforce_check": {"queries": args.check_queries, "pairs": total, "missed": missed},
    }
    if args.baseline_queries:
        res["baselines"] = faiss_baselines(codes, args.k, args.baseline_queries)
        for b in res["baselines"].values():
            b["ratio_vs_ours"] = round(b["search_s_extrapolated"] / max(wall, 1e-9), 1)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
