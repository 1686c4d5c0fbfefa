"""Partitioned dedup index: lookup + insert throughput with P = 1 (the single index), 2, 4.

Two scenarios, each a persistent index of N published rows and then a run of ``--batches`` batches of
``--batch`` rows through :class:`MarkDuplicates` (lookups against the published rows and the run's
earlier batches, grouping within the batch, inserting the kept rows, committing after each batch):

* ``phash``: N structured 64-bit pHashes (bench/dedup_phash.py's generator) with url/sha256/pixels/pHash
  (no thumbnails: pHash-only matching, the crop windows and NCC verification need images); 2% of each
  batch are pHash near-copies (1-6 flipped bits) of published rows, 1% byte copies.
* ``semantic``: N x d unit embeddings with CLIP-like anisotropy (float16 in the index) with the exact methods + semantic
  (pHash off); 2% of each batch are near copies (cosine ~0.98) of published rows.

Reported per P: building the index (re-partitioning N rows and writing the segments), opening it
(a restart: partitions load in parallel), the reference lookups, the inserts (+ commits), the whole
stage per batch, rows/s, and whether every decision (status, duplicate_of, dedup_method, message)
equals the first row's (P = 1 first in the default order). ``--backend local`` runs partitions as
threads of this process, ``ray`` as actors of a local Ray instance (started on 127.0.0.2).

    python bench/dedup_partitioned.py --scenario phash --rows 200000 --parts 1,2,4
    python bench/dedup_partitioned.py --scenario semantic --rows 100000 --dim 512 --parts 1,2,4
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _hex(rng, n: int) -> np.ndarray:
    return np.array([f"{v:016x}" for v in rng.integers(0, 2**63, n, dtype=np.int64)], dtype=object)


_BASIS: dict = {}


def clip_like(rng, n: int, dim: int) -> np.ndarray:
    """Unit vectors with CLIP-like anisotropy: most variance in a few dozen directions (isotropic
    random vectors would make the 32-d PCA of semantic.py's IVF path keep almost no distance, so
    nearly every pair would become a candidate: a pathological case no real embedding has)."""
    if dim not in _BASIS:
        _BASIS[dim] = np.linalg.qr(np.random.default_rng(42).normal(size=(dim, 64)))[0].T.astype(np.float32)
    spectrum = (1.0 / np.sqrt(1 + np.arange(64))).astype(np.float32)
    x = (rng.normal(size=(n, 64)).astype(np.float32) * spectrum) @ _BASIS[dim]
    x += rng.normal(size=(n, dim)).astype(np.float32) * 0.02
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference(scenario: str, n: int, dim: int, seed: int = 0):
    from clipcrawl.filters.dedup.columns import Fingerprints

    rng = np.random.default_rng(seed)
    u = lambda: rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)  # noqa: E731
    ones = np.ones(n, dtype=bool)
    if scenario == "phash":
        from dedup_phash import make_codes

        codes = make_codes(n, 0, seed)[0]
        emb = None
    else:
        codes = u()
        emb = clip_like(rng, n, dim).astype(np.float16)
    keys = np.array([f"ref{i:09d}" for i in range(n)], dtype=object)
    return Fingerprints(keys, u(), u(), ones, u(), ones, codes, ones, np.full(n, "00000", dtype=object),
                        emb=emb, model="bench" if emb is not None else None)


def batches(ref, scenario: str, n_batches: int, size: int, dim: int, seed: int = 1) -> list[pa.Table]:
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n_batches):
        near = rng.choice(len(ref), size // 50, replace=False)
        copy = rng.choice(len(ref), size // 100, replace=False)
        sha = _hex(rng, size)
        sha[: len(copy)] = [f"{int(v):016x}" for v in ref.sha256[copy]]
        cols = {"key": [f"b{b}-{i:06d}" for i in range(size)], "url": [f"http://b{b}/{i}" for i in range(size)],
                "caption": ["c"] * size, "status": ["success"] * size, "error_message": [None] * size,
                "sha256": sha.tolist(), "pixel_hash": _hex(rng, size).tolist(),
                "clip_similarity": rng.uniform(0.2, 0.4, size).astype(np.float32)}
        if scenario == "phash":
            from dedup_phash import make_codes

            ph = make_codes(size, 0, seed + 100 + b)[0]
            flips = rng.integers(1, 7, len(near))
            masks = np.array([sum(1 << int(x) for x in rng.choice(64, f, replace=False)) for f in flips],
                             dtype=np.uint64)
            ph[len(copy): len(copy) + len(near)] = ref.phash[near] ^ masks
            cols["phash"] = pa.array(ph, pa.uint64())
        else:
            e = clip_like(rng, size, dim)
            base = np.asarray(ref.emb[near], np.float32)
            e[len(copy): len(copy) + len(near)] = base + rng.normal(size=base.shape).astype(np.float32) * 0.006
            e /= np.linalg.norm(e, axis=1, keepdims=True)
            cols["phash"] = pa.array(rng.integers(0, 2**63, size, dtype=np.int64).astype(np.uint64), pa.uint64())
            cols["image_embedding"] = pa.array(list(e), pa.list_(pa.float32(), dim))
        out.append(pa.table(cols))
    return out


def run(scenario: str, parts: int, ref, tables, backend: str) -> dict:
    from clipcrawl.filters.dedup import partitioned, stage
    from clipcrawl.filters.dedup.partitioned import open_index
    from clipcrawl.schemas.config import DedupConfig

    tmp = tempfile.mkdtemp(prefix="pdedup-")
    try:
        t = time.perf_counter()
        index = open_index(tmp, parts, backend)
        index.replace_all(ref, ["00000"])
        if parts > 1:
            index.close()
        build = time.perf_counter() - t
        cfg = DedupConfig(index_dir=tmp, partitions=parts, semantic=scenario == "semantic",
                          phash=scenario == "phash", semantic_tiny=True)
        st = stage.MarkDuplicates(cfg, sync=False)
        timing = {"lookup": 0.0, "insert": 0.0}

        def timed(fn, slot):
            def wrapper(*a, **kw):
                t0 = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    timing[slot] += time.perf_counter() - t0
            return wrapper

        old = (stage.MarkDuplicates._match_reference, partitioned.PartitionedIndex.lookup)
        stage.MarkDuplicates._match_reference = timed(old[0], "lookup")
        partitioned.PartitionedIndex.lookup = timed(old[1], "lookup")
        try:
            t = time.perf_counter()
            st.setup()
            opened = time.perf_counter() - t
            decisions, per_batch = [], []
            for tb in tables:
                t = time.perf_counter()
                out = st(tb)
                t1 = time.perf_counter()
                st.commit()
                timing["insert"] += time.perf_counter() - t1
                per_batch.append(time.perf_counter() - t)
                decisions.append([out.column(c).to_pylist() for c in
                                  ("status", "duplicate_of", "dedup_method", "error_message")])
            st.close()
        finally:
            stage.MarkDuplicates._match_reference, partitioned.PartitionedIndex.lookup = old
        rows = sum(tb.num_rows for tb in tables)
        return {"P": parts, "build_s": build, "open_s": opened, "lookup_s": timing["lookup"],
                "commit_s": timing["insert"], "stage_s": sum(per_batch), "rows_per_s": rows / sum(per_batch),
                "marked": {k: v for k, v in st.counts.items() if v}, "decisions": decisions}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", choices=["phash", "semantic"], default="phash")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--parts", default="1,2,4")
    ap.add_argument("--backend", choices=["local", "ray"], default="local")
    args = ap.parse_args()
    if args.backend == "ray":
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.2", log_to_driver=False,
                 _temp_dir=tempfile.mkdtemp(prefix="ray-"))
    print(f"# {args.scenario}: {args.rows} published rows, {args.batches} x {args.batch} batch rows, "
          f"backend {args.backend}, {os.cpu_count()} CPUs")
    parts = [int(x) for x in args.parts.split(",")]
    small = reference(args.scenario, 5000, args.dim, seed=9)  # warm-up (imports, first allocations): untimed
    for p in sorted(set(parts)):
        run(args.scenario, p, small, batches(small, args.scenario, 1, 1000, args.dim, seed=9),
            args.backend if p > 1 else "local")
    ref = reference(args.scenario, args.rows, args.dim)
    tables = batches(ref, args.scenario, args.batches, args.batch, args.dim)
    first = None
    print("| P | build s | open s | lookups s | inserts+commits s | stage s | rows/s | marked "
          "| same decisions as the first row |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in parts:
        r = run(args.scenario, p, ref, tables, args.backend if p > 1 else "local")
        first = first or r
        same = r["decisions"] == first["decisions"]
        print(f"| {p} | {r['build_s']:.1f} | {r['open_s']:.1f} | {r['lookup_s']:.1f} | {r['commit_s']:.1f} | "
              f"{r['stage_s']:.1f} | {r['rows_per_s']:.0f} | {r['marked']} | {same} |", flush=True)


if __name__ == "__main__":
    main()
