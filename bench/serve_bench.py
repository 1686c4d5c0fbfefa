"""``clipcrawl serve`` over an index larger than memory: peak RSS, recall@10, latency, requests/s.

    nice -n 10 python bench/serve_bench.py --work /tmp/serve_bench --n 5000000 --d 512

Stages (each skipped when its output exists, so an interrupted run resumes; ``--stage`` runs one):

1. ``gen``: N random-but-clustered D-dim unit vectors (bench/index_bench.py's two-level
   "hier" structure: 1,000 topics x 100 sub-topics) written in parts of ``--part`` rows as float32
   ``.npy`` (5M x 512 = 10 GB), plus ``--queries`` held-out queries from the same distribution.
2. ``truth``: the exact top 10 of every query by chunked brute force over the parts.
3. ``train``: ``IVF{nlist},SQ8`` (inner product) trained on a ``--train`` sample.
4. ``add``: the parts added to it, written as ``DATASET/index/image.index`` in clipcrawl's index
   layout, with ``metadata/metadata_NNNNN.parquet`` (key, url, caption, punsafe; small row groups so
   a hit's row is read alone) and ``index.json``; then the ``.npy`` parts are deleted.
5. ``serve``: ``clipcrawl serve DATASET`` in a subprocess (the index opened memory-mapped: the
   inverted lists stay on disk, pages come in as the queries touch them); queries through
   ``POST /knn-service`` with ``embedding_input``: recall@10 against the exact top 10, p50/p95 latency
   at k=10 and k=2000 (one client), requests/s with 8 concurrent clients at k=10; the server's peak
   RSS (VmHWM) and its resident anonymous / file-backed memory at the end.

Prints one JSON object and appends it to ``WORK/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parts(work: Path) -> list[Path]:
    return sorted((work / "vectors").glob("part_*.npy"))


def stage_gen(a: argparse.Namespace, work: Path) -> None:
    from index_bench import Generator

    gen = Generator(a.d, "hier", seed=0)
    out = work / "vectors"
    out.mkdir(parents=True, exist_ok=True)
    nparts = (a.n + a.part - 1) // a.part
    for i in range(nparts):
        path = out / f"part_{i:05d}.npy"
        if path.exists():
            continue
        m = min(a.part, a.n - i * a.part)
        tmp = out / f".part_{i:05d}.npy"
        np.save(tmp, gen(m, seed=1000 + i))
        tmp.rename(path)
        log(f"gen: part {i + 1}/{nparts}")
    if not (work / "queries.npy").exists():
        np.save(work / "queries.npy", gen(a.queries, seed=7))


def stage_truth(a: argparse.Namespace, work: Path) -> None:
    q = np.load(work / "queries.npy")
    best_s = np.full((len(q), 10), -np.inf, np.float32)
    best_i = np.zeros((len(q), 10), np.int64)
    start = 0
    t0 = time.monotonic()
    for j, p in enumerate(parts(work)):
        x = np.load(p, mmap_mode="r")
        for s in range(0, len(x), 100_000):
            sims = q @ np.asarray(x[s:s + 100_000]).T
            top = np.argpartition(-sims, 10, axis=1)[:, :10]
            cs = np.concatenate([best_s, np.take_along_axis(sims, top, 1)], 1)
            ci = np.concatenate([best_i, top + start + s], 1)
            o = np.argsort(-cs, axis=1)[:, :10]
            best_s, best_i = np.take_along_axis(cs, o, 1), np.take_along_axis(ci, o, 1)
        start += len(x)
        log(f"truth: part {j + 1}, {time.monotonic() - t0:.0f}s")
    np.save(work / "truth.npy", best_i)
    np.save(work / "truth_sims.npy", best_s)


def stage_train(a: argparse.Namespace, work: Path) -> None:
    import faiss

    ps = parts(work)
    per = a.train // len(ps) + 1
    rng = np.random.default_rng(0)
    sample = []
    for p in ps:
        x = np.load(p, mmap_mode="r")
        sample.append(np.asarray(x[np.sort(rng.choice(len(x), min(per, len(x)), replace=False))]))
    xt = np.ascontiguousarray(np.concatenate(sample)[:a.train], dtype=np.float32)
    index = faiss.index_factory(a.d, f"IVF{a.nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
    t0 = time.monotonic()
    index.train(xt)
    log(f"train: IVF{a.nlist},SQ8 on {len(xt)} vectors in {time.monotonic() - t0:.0f}s")
    faiss.write_index(index, str(work / "trained.index"))
    (work / "train_seconds").write_text(f"{time.monotonic() - t0:.1f}")


def stage_add(a: argparse.Namespace, work: Path) -> None:
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds = work / "dataset"
    folder = ds / "index"
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    index = faiss.read_index(str(work / "trained.index"))
    t0, start, state_parts = time.monotonic(), 0, []
    rng = np.random.default_rng(3)
    for j, p in enumerate(parts(work)):
        x = np.load(p)
        index.add(x)
        n = len(x)
        ids = np.arange(start, start + n)
        name = f"{j:05d}"
        keys = pa.array([f"{i:09d}" for i in ids])
        table = pa.table({
            "key": keys,
            "url": pa.array([f"https://example.com/img/{i:09d}.jpg" for i in ids]),
            "caption": pa.array([f"a picture number {i}" for i in ids]),
            "punsafe": pa.array(rng.uniform(0, 0.6, n).astype(np.float32)),
            "shard": pa.array([name] * n),
        })
        pq.write_table(table, folder / "metadata" / f"metadata_{name}.parquet", row_group_size=a.row_group)
        state_parts.append({"part": name, "rows": n, "start": start, "embedding_rows": n})
        start += n
        log(f"add: part {j + 1}, {index.ntotal} vectors, {time.monotonic() - t0:.0f}s")
    faiss.write_index(index, str(folder / "image.index"))
    (folder / "index.json").write_text(json.dumps({
        "format": "clipcrawl-index", "version": 2, "kind": "ivfsq8", "factory": f"IVF{a.nlist},SQ8",
        "metric": "inner_product", "dim": a.d, "ntotal": int(index.ntotal), "trained_on": a.train,
        "nprobe": a.nprobe, "clip_model": None, "parts": state_parts, "shards": None}))
    (work / "add_seconds").write_text(f"{time.monotonic() - t0:.1f}")
    del index
    if not a.keep_vectors:
        shutil.rmtree(work / "vectors")
        log("add: vector parts deleted")


def _rss(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) // 1024  # MiB
    return out


def stage_serve(a: argparse.Namespace, work: Path) -> dict:
    import asyncio

    import aiohttp

    q = np.load(work / "queries.npy")
    truth = np.load(work / "truth.npy")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": str(a.threads)}
    port = a.port
    cmd = [sys.executable, "-m", "clipcrawl", "serve", str(work / "dataset"), "--port", str(port),
           "--nprobe", str(a.nprobe)]
    log("serve: " + " ".join(cmd))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    res: dict = {}
    try:
        async def main() -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
                while True:
                    try:
                        async with s.get(f"{url}/indices-list") as r:
                            names = await r.json()
                            break
                    except aiohttp.ClientConnectionError:
                        if proc.poll() is not None:
                            raise RuntimeError("serve exited") from None
                        await asyncio.sleep(0.5)
                res["startup_s"] = round(time.monotonic() - t0, 1)
                res["rss_after_start_mib"] = _rss(proc.pid)

                async def one(v: np.ndarray, k: int, num_images: int | None = None) -> tuple[float, list]:
                    body = {"embedding_input": v.tolist(), "modality": "image", "indice_name": names[0],
                            "num_images": num_images or k, "num_result_ids": k, "deduplicate": False}
                    t = time.perf_counter()
                    async with s.post(f"{url}/knn-service", json=body) as r:
                        got = await r.json()
                        assert r.status == 200, got
                    return time.perf_counter() - t, got

                lat10, recall = [], []
                for i, v in enumerate(q):
                    dt, got = await one(v, 10)
                    lat10.append(dt)
                    recall.append(len({h["id"] for h in got} & set(truth[i].tolist())) / 10)
                res["recall_at_10"] = round(float(np.mean(recall)), 4)
                res["k10_ms"] = {"p50": round(np.percentile(lat10, 50) * 1000, 1),
                                 "p95": round(np.percentile(lat10, 95) * 1000, 1)}
                lat2k, lat2k_ids = [], []
                for v in q[:a.big_queries]:
                    dt, got = await one(v, 2000)
                    assert len(got) == 2000 and all("url" in h for h in got), len(got)
                    lat2k.append(dt)
                    dt, got = await one(v, 2000, num_images=40)  # the front end's way: 40 rows of metadata
                    lat2k_ids.append(dt)
                res["k2000_ms"] = {"p50": round(np.percentile(lat2k, 50) * 1000, 1),
                                   "p95": round(np.percentile(lat2k, 95) * 1000, 1)}
                res["k2000_ids_40_meta_ms"] = {"p50": round(np.percentile(lat2k_ids, 50) * 1000, 1),
                                               "p95": round(np.percentile(lat2k_ids, 95) * 1000, 1)}
                # 8 concurrent clients, k=10, for --conc-seconds
                done, errors, lats = 0, 0, []
                stop = time.monotonic() + a.conc_seconds

                async def client(c: int) -> None:
                    nonlocal done, errors
                    i = c
                    while time.monotonic() < stop:
                        try:
                            dt, _ = await one(q[i % len(q)], 10)
                            lats.append(dt)
                            done += 1
                        except Exception:  # noqa: BLE001 - counted
                            errors += 1
                        i += 8
                t1 = time.monotonic()
                await asyncio.gather(*(client(c) for c in range(8)))
                el = time.monotonic() - t1
                res["concurrent8"] = {"requests": done, "errors": errors, "seconds": round(el, 1),
                                      "req_per_s": round(done / el, 1),
                                      "p50_ms": round(np.percentile(lats, 50) * 1000, 1),
                                      "p95_ms": round(np.percentile(lats, 95) * 1000, 1)}
                res["rss_end_mib"] = _rss(proc.pid)

        asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(30)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/serve_bench")
    ap.add_argument("--n", type=int, default=5_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--part", type=int, default=250_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--big-queries", type=int, default=30)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--train", type=int, default=60_000)
    ap.add_argument("--row-group", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--port", type=int, default=18765)
    ap.add_argument("--conc-seconds", type=float, default=30)
    ap.add_argument("--keep-vectors", action="store_true")
    ap.add_argument("--stage", choices=["gen", "truth", "train", "add", "serve"])
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    index_done = (work / "dataset" / "index" / "index.json").exists()
    stages = [a.stage] if a.stage else ["gen", "truth", "train", "add", "serve"]
    t0 = time.monotonic()
    for st in stages:
        ts = time.monotonic()
        if st == "gen" and not index_done:
            stage_gen(a, work)
        elif st == "truth" and not (work / "truth.npy").exists():
            stage_truth(a, work)
        elif st == "train" and not (work / "trained.index").exists():
            stage_train(a, work)
        elif st == "add" and not index_done:
            stage_add(a, work)
        elif st == "serve":
            res = stage_serve(a, work)
            out = {"n": a.n, "d": a.d, "factory": f"IVF{a.nlist},SQ8", "nprobe": a.nprobe, "train": a.train,
                   "queries": a.queries, "threads": a.threads, "cpus": os.cpu_count(),
                   "index_bytes": (work / "dataset" / "index" / "image.index").stat().st_size,
                   "train_s": float((work / "train_seconds").read_text()) if (work / "train_seconds").exists() else None,
                   "add_s": float((work / "add_seconds").read_text()) if (work / "add_seconds").exists() else None,
                   **res}
            print(json.dumps(out, indent=1))
            with open(work / "results.jsonl", "a") as f:
                f.write(json.dumps(out) + "\n")
        log(f"stage {st}: {time.monotonic() - ts:.0f}s")
    log(f"total {time.monotonic() - t0:.0f}s")


if __name__ == "__main__":
    main()
