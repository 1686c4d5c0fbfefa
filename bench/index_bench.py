"""``clipcrawl index`` / search at scale: build time, query latency and recall@10 against exact search.

    python bench/index_bench.py --n 1000000 --d 512 --threads 2

Writes N random D-dim embeddings in the layout scoring writes (``DATASET/embeddings/img_emb/
img_emb_NNNNN.npy`` float16 + ``metadata/metadata_NNNNN.parquet``, 100k rows a part) into a temp
dataset, runs the real :func:`build_index` (auto: IVF-PQ above 200k), then times single queries
through :class:`Searcher` (index search + metadata lookup) with faiss on ``--threads`` threads, and
compares the top 10 with an exact ``IndexFlatIP`` over the same (fp16-rounded) vectors.

Data: uniform random unit vectors have no neighbours worth finding (every pair is ~0 cosine) and
real CLIP embeddings are not like that, so the vectors have two-level cluster structure: 1,000
"topics", 100 "sub-topics" each (sub-centre = topic + noise 0.7), points = sub-centre + noise with
a per-point scale in [0.25, 0.7], L2-normalised. The mean top-1 / top-10 cosine of a query is
printed (~0.86 / ~0.70; LAION ViT-B/32 image neighbours are in the same range). ``--structure
flat`` draws 2,000 equal Gaussian clusters (noise 0.8): every member of a cluster is ~equally near
(top-1 0.67, top-10 0.65), a much harder case for any compressed index.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Generator:
    def __init__(self, d: int, structure: str, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.d, self.structure = d, structure
        if structure == "hier":
            topics = unit(rng.standard_normal((1000, d)))
            self.centres = unit(np.repeat(topics, 100, 0) + 0.7 * rng.standard_normal((100_000, d)) / np.sqrt(d))
        else:
            self.centres = unit(rng.standard_normal((2000, d)))

    def __call__(self, m: int, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        lab = r.integers(0, len(self.centres), m)
        scale = r.uniform(0.25, 0.7, (m, 1)) if self.structure == "hier" else np.full((m, 1), 0.8)
        noise = r.standard_normal((m, self.d)).astype(np.float32) / np.sqrt(self.d)
        return unit(self.centres[lab] + scale.astype(np.float32) * noise)


def write_dataset(root: Path, gen: Generator, n: int, part_rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for sub in ("img_emb", "metadata"):
        (root / "embeddings" / sub).mkdir(parents=True, exist_ok=True)
    for p, start in enumerate(range(0, n, part_rows)):
        m = min(part_rows, n - start)
        np.save(root / "embeddings" / "img_emb" / f"img_emb_{p:05d}.npy", gen(m, 1000 + p).astype(np.float16))
        keys = [f"{start + i:012d}" for i in range(m)]
        pq.write_table(pa.table({"image_path": keys, "caption": keys, "url": keys, "key": keys}),
                       root / "embeddings" / "metadata" / f"metadata_{p:05d}.parquet")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--structure", choices=("hier", "flat"), default="hier")
    ap.add_argument("--part-rows", type=int, default=100_000)
    ap.add_argument("--kind", default="auto", choices=("auto", "flat", "ivfpq"))
    ap.add_argument("--sweep", action="store_true", help="Also time nprobe x k_factor settings.")
    ap.add_argument("--keep", help="Keep the dataset in this folder (default: a temp folder, removed).")
    args = ap.parse_args()

    import faiss

    from clipcrawl.pipelines.inspect.index import build_index, load_vectors, set_search_params
    from clipcrawl.pipelines.inspect.search import Searcher

    faiss.omp_set_num_threads(args.threads)
    root = Path(args.keep or tempfile.mkdtemp(prefix="index-bench-"))
    gen = Generator(args.d, args.structure)
    t0 = time.perf_counter()
    write_dataset(root, gen, args.n, args.part_rows)
    t_write = time.perf_counter() - t0

    t0 = time.perf_counter()
    rep = build_index(str(root), kind=args.kind)
    t_build = time.perf_counter() - t0
    index_bytes = (root / "index" / "image.index").stat().st_size

    s = Searcher(root)
    queries = gen(args.queries, 99)
    sweep = {}
    settings = [(None, None)] + [(n, k) for n in (16, 32, 64) for k in (4, 16, 32, 64)] if args.sweep else [(None, None)]
    for nprobe, k_factor in settings:
        if nprobe is not None and rep.kind == "ivfpq":
            set_search_params(s.index, nprobe, k_factor)
        elif nprobe is not None:
            continue
        lat, got = [], []
        for q in queries:
            t = time.perf_counter()
            hits = s.search(q[None], 10)
            lat.append(time.perf_counter() - t)
            got.append([h["id"] for h in hits])
        sweep["default" if nprobe is None else f"nprobe={nprobe},k_factor={k_factor}"] = (np.array(lat) * 1e3, got)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    del s

    exact = faiss.IndexFlatIP(args.d)
    for f in sorted((root / "embeddings" / "img_emb").glob("*.npy")):
        exact.add(load_vectors(str(f)))
    t = time.perf_counter()
    sims, truth = exact.search(queries, 10)
    t_exact = (time.perf_counter() - t) / args.queries
    lat1 = []
    for q in queries[:20]:
        t = time.perf_counter()
        exact.search(q[None], 10)
        lat1.append(time.perf_counter() - t)
    state = json.loads((root / "index" / "index.json").read_text())
    out = {
        "n": args.n, "d": args.d, "structure": args.structure, "threads": args.threads, "cpus": os.cpu_count(),
        "load_avg": os.getloadavg()[0], "index": rep.factory, "default_nprobe": state.get("nprobe"),
        "default_k_factor": state.get("k_factor"), "write_s": round(t_write, 1), "build_s": round(t_build, 1),
        "index_mb": round(index_bytes / 1e6, 1), "exact_ms_per_query_batched": round(t_exact * 1e3, 2),
        "exact_ms_single_query_p50": round(float(np.median(lat1)) * 1e3, 2),
        "top1_cos": round(float(sims[:, 0].mean()), 3), "top10_cos": round(float(sims[:, 9].mean()), 3),
        "peak_rss_gb_before_exact": round(rss_gb, 2), "settings": {},
    }
    for name, (lat_ms, got) in sweep.items():
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth.tolist(), got)]))
        out["settings"][name] = {"recall_at_10": round(recall, 4), "p50_ms": round(float(np.median(lat_ms)), 2),
                                 "p95_ms": round(float(np.percentile(lat_ms, 95)), 2)}
    print(json.dumps(out, indent=2))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
