"""End-to-end ``clipcrawl run`` (download -> caption rules -> tiny CLIP -> dedup -> write) vs ``download`` alone.

Same loopback server and images as ``bench/download_bench.py`` (generated photo-like JPEGs served from
memory by an aiohttp server in its own process), the same URLs with captions (a TSV), the same download
settings (256 px border, jpg q95, 1000 samples per shard, concurrency 64). ``run`` reads the TSV as its
``urls`` source and adds caption rules, CLIP scoring with the shipped tiny model (threshold -1: every
pair is scored, none is cut, so both commands write the same images), exact + perceptual dedup and the
manifest. Reported: input URLs per second of each command (wall, startup included), the share
``run / download`` (issue 17's goal: >= 0.8), CPU-ms per URL and peak RSS of each process tree. Runs
alternate (download, run, download, run...) so both see the same neighbours on a shared box.

    python bench/run_vs_download.py --n 3000 --unique 3000 --repeat 2               # loopback: CPU-bound
    python bench/run_vs_download.py --n 3000 --unique 3000 --repeat 2 --latency 0.5 # network-bound
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from download_bench import _serve, make_images, run_measured  # noqa: E402

WORDS = ["a", "photo", "of", "hills", "river", "sunset", "city", "street", "red", "blue", "green", "forest",
         "beach", "mountain", "lake", "bridge", "market", "garden", "snow", "field"]


def caption(i: int) -> str:
    return " ".join(WORDS[(i * k + k) % len(WORDS)] for k in range(1, 7)) + f" number {i}"


def counts(dataset: Path) -> dict[str, int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out: dict[str, int] = {}
    for f in sorted(dataset.rglob("*.parquet")):
        if "shards" not in f.parts and f.parent != dataset:
            continue
        t = pq.read_table(f, columns=["status"])
        for item in pc.value_counts(t.column("status")).to_pylist():
            out[item["values"]] = out.get(item["values"], 0) + item["counts"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="URLs")
    ap.add_argument("--unique", type=int, default=3000, help="distinct images behind the URLs")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--clipcrawl", default=str(Path(sys.executable).parent / "clipcrawl"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--latency", type=float, default=0.0,
                    help="seconds the server waits before each image (simulated remote servers; 0: loopback speed)")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="e2ebench-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.gettempdir()) / f"clipcrawl-bench-images-{args.unique}"
    make_images(args.unique, cache)
    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve, args=(str(cache), args.unique, child, args.latency),
                                         daemon=True)
    server.start()
    port = parent.recv()
    tsv = work / "urls.tsv"
    tsv.write_text("url\tcaption\n" + "".join(
        f"http://127.0.0.1:{port}/img/{i}.jpg\t{caption(i)}\n" for i in range(args.n)))
    download = {"image_size": 256, "resize_mode": "border", "encode_quality": 95, "concurrency": 64,
                "per_host_concurrency": 64, "allow_private_networks": True}

    def run_cmd(out: Path) -> list[str]:
        cfg = {"dataset": str(out), "sources": {"urls": {"path": str(tsv)}}, "download": download,
               "filters": {"clip": {"model": "tiny", "pretrained": None, "threshold": -1.0, "precision": "fp32"}},
               "dedup": {"enabled": True, "semantic": False},
               "output": {"samples_per_shard": 1000}, "log_format": "text"}
        path = work / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return [args.clipcrawl, "run", str(path)]

    def download_cmd(out: Path) -> list[str]:
        return [args.clipcrawl, "--log-format", "text", "download", str(tsv), "--out", str(out),
                "--image-size", "256", "--resize-mode", "border", "--encode-quality", "95",
                "--samples-per-shard", "1000", "--concurrency", "64", "--per-host-concurrency", "64",
                "--allow-private-networks"]

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    tools = {"download": download_cmd, "run": run_cmd}
    res: dict[str, list[tuple[float, float, int]]] = {k: [] for k in tools}
    try:
        for r in range(args.repeat):
            for name, cmd in tools.items():
                out = work / f"{name}-{r}"
                shutil.rmtree(out, ignore_errors=True)
                load = os.getloadavg()[0]
                wall, rss, rc, cpu = run_measured(cmd(out), env, work / f"{name}-{r}.log")
                c = counts(out)
                rate = args.n / wall
                print(f"{name:8s} run {r}: {wall:6.1f}s {rate:7.1f} URL/s {1000 * cpu / args.n:6.2f} CPU-ms/URL "
                      f"peak RSS {rss / 2**20:6.0f} MiB exit {rc} load {load:.1f} statuses {c}", flush=True)
                if rc != 0:
                    print(f"  see {work / f'{name}-{r}.log'}", flush=True)
                res[name].append((rate, 1000 * cpu / args.n, rss))
    finally:
        server.kill()
    summary = {k: {"urls_per_s": statistics.median(x[0] for x in v), "cpu_ms_per_url": statistics.median(x[1] for x in v),
                   "peak_rss_mib": max(x[2] for x in v) / 2**20} for k, v in res.items()}
    pairs = [run[0] / dl[0] for dl, run in zip(res["download"], res["run"])]
    summary["run_share_per_pair"] = pairs
    summary["run_share_median"] = statistics.median(pairs)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
