"""Semantic near-duplicate search at scale: 1M x 512 float32 embeddings with planted near-duplicates.

Embeddings imitate CLIP's geometry: a shared mean direction (CLIP image embeddings of unrelated
photos have cosine ~0.2-0.5), 5000 topic clusters, a decaying spectrum, unit norm. Planted
near-duplicates are noisy copies with cosine 0.93-0.995 to their original (so some fall below
tau). We time clipcrawl.filters.dedup.semantic.self_pairs (PCA-64 + IVF candidates, exact cosine
verification), report peak RSS and CPU time, recall on the planted pairs with cosine >= tau, and
exactness against brute force for sampled queries; the baseline is exact IndexFlatIP range search
on a query sample, extrapolated to all queries.

    python bench/dedup_semantic.py [--n 1000000] [--d 512] [--tau 0.95] [--planted 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np


def make_embeddings(n: int, d: int, planted: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=d).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centers = rng.normal(size=(5000, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    spectrum = (1.0 / np.sqrt(1 + np.arange(d) / 16)).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    n_base = n - planted
    step = 100_000
    for s in range(0, n_base, step):
        m = min(step, n_base - s)
        noise = rng.standard_normal((m, d), dtype=np.float32) * spectrum
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        x[s : s + m] = 0.55 * mean + 0.6 * centers[rng.integers(0, len(centers), m)] + 0.75 * noise
    x[:n_base] /= np.linalg.norm(x[:n_base], axis=1, keepdims=True)
    a = np.sort(rng.choice(n_base, planted, replace=False))
    b = np.arange(n_base, n)
    target = rng.uniform(0.93, 0.995, planted).astype(np.float32)  # cosine to the original
    noise = rng.standard_normal((planted, d), dtype=np.float32)
    noise -= (noise * x[a]).sum(1, keepdims=True) * x[a]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x[b] = target[:, None] * x[a] + np.sqrt(1 - target**2)[:, None] * noise
    return x, a, b


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--tau", type=float, default=0.95)
    ap.add_argument("--planted", type=int, default=20_000)
    ap.add_argument("--check-queries", type=int, default=2000)
    args = ap.parse_args(argv)
    import faiss

    from clipcrawl.filters.dedup import semantic
    from clipcrawl.filters.dedup.semantic import self_pairs

    x, pa_, pb = make_embeddings(args.n, args.d, min(args.planted, args.n // 4))
    cos = (x[pa_] * x[pb]).sum(1)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu0, t0 = time.process_time(), time.perf_counter()
    p = self_pairs(x, args.tau)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    found = set(zip(p.a.tolist(), p.b.tolist()))
    want = cos >= args.tau
    hit = sum((int(a), int(b)) in found for a, b in zip(pa_[want], pb[want]))
    # exactness on sampled queries vs exact flat range search (also the baseline's timing)
    rng = np.random.default_rng(1)
    q = np.concatenate([pb[: args.check_queries // 2], rng.choice(args.n, args.check_queries // 2, replace=False)])
    flat = faiss.IndexFlatIP(args.d)
    flat.add(x)
    t = time.perf_counter()
    lims, _, idx = flat.range_search(x[q], args.tau)
    flat_s = (time.perf_counter() - t) / len(q) * args.n / 2  # each pair once
    truth = {(min(int(qi), int(j)), max(int(qi), int(j))) for i, qi in enumerate(q)
             for j in idx[lims[i]:lims[i + 1]] if j != qi}
    res = {
        "n": args.n, "d": args.d, "tau": args.tau, "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 1), "self_pairs_wall_s": round(wall, 1),
        "self_pairs_cpu_s": round(cpu, 1), "data_rss_mb": round(rss_data),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "index": "exact IndexFlatIP" if args.n**2 <= semantic.EXACT_WORK or args.n < 4096 else f"PCA-{semantic.PCA_DIM} + IVFFlat (HNSW quantizer)",
        "pairs_found": len(p), "planted": len(pa_), "planted_at_or_above_tau": int(want.sum()),
        "planted_recall": round(hit / max(int(want.sum()), 1), 4),
        "sampled_exact_pairs": len(truth), "sampled_recall": round(len(truth & found) / max(len(truth), 1), 4),
        "false_pairs": int(np.sum(p.score < args.tau)),
        "baseline_flat_exact_s_extrapolated": round(flat_s, 1), "ratio_vs_ours": round(flat_s / max(wall, 1e-9), 1),
    }
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
