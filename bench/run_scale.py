"""Scale-out benchmark: does ``clipcrawl run`` keep flat memory and throughput as the URL count grows?

``bench/run_vs_download.py``'s setup (its captions and run config; ``download_bench.py``'s in-memory loopback
server and generated photo-like JPEGs): a URL-list TSV source, 256 px border, jpg q95, concurrency 64, caption
rules, tiny CLIP (fp32, threshold -1), exact + perceptual dedup, 1000 samples per shard. Runs ``clipcrawl run``
at each size (default 3k, 12k, 48k URLs over ``--unique`` distinct images: URL i serves image i mod unique, so
from the second pass over the images on, dedup marks them duplicates - the index grows only by the kept ones).
Prints per run: URL/s (wall of the whole command), CPU-ms/URL, peak RSS of the process tree, the load average
at the start, the statuses; then ratios to the smallest size in the same invocation. ``--tree NAME=PATH`` runs
another checkout's code (``PYTHONPATH=PATH python -P -m clipcrawl``); trees alternate at each size, each size
``--repeat`` times.

    python bench/run_scale.py --sizes 3000,12000,48000 --repeat 2 --tree before=/work/main --tree after=.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from download_bench import _tree_rss, start_server  # noqa: E402
from run_vs_download import caption, counts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_config(dataset: Path, tsv: Path, samples_per_shard: int = 1000) -> dict:
    """run_vs_download.py's ``run`` config."""
    download = {"image_size": 256, "resize_mode": "border", "encode_quality": 95, "concurrency": 64,
                "per_host_concurrency": 64, "allow_private_networks": True}
    return {"dataset": str(dataset), "sources": {"urls": {"path": str(tsv)}}, "download": download,
            "filters": {"clip": {"model": "tiny", "pretrained": None, "threshold": -1.0, "precision": "fp32"}},
            "dedup": {"enabled": True, "semantic": False},
            "output": {"samples_per_shard": samples_per_shard}, "log_format": "text"}


def run_sampled(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, int, int, float, list[int]]:
    """download_bench.run_measured plus the peak tree RSS of each quarter of the wall time (growth within
    a run: a leak shows as rising quarters): (wall s, peak RSS bytes, exit code, tree CPU s, quarters)."""
    import resource
    import subprocess
    import time

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    samples: list[tuple[float, int]] = []
    with open(log, "w") as lf, open(log.with_suffix(".rss.tsv"), "w") as rf:  # the RSS timeline, as it goes
        p = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT)
        while p.poll() is None:
            samples.append((time.monotonic() - t0, _tree_rss(p.pid)))
            rf.write(f"{samples[-1][0]:.1f}\t{samples[-1][1] / 2**20:.0f}\n")
            time.sleep(0.1)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    quarters = [max((r for t, r in samples if q * wall / 4 <= t < (q + 1) * wall / 4), default=0) for q in range(4)]
    return wall, max((r for _, r in samples), default=0), p.returncode, (r1.ru_utime - r0.ru_utime) + (
        r1.ru_stime - r0.ru_stime), quarters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="3000,12000,48000")
    ap.add_argument("--unique", type=int, default=3000, help="distinct images behind the URLs")
    ap.add_argument("--repeat", default="2", help="runs per size: one number, or one per size (2,2,1)")
    ap.add_argument("--tree", action="append", default=[], help="NAME=PATH of a checkout to run (repeatable)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--samples-per-shard", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="keep the datasets (default: removed after each run)")
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(REPO)}
    sizes = [int(s) for s in args.sizes.split(",")]
    repeats = [int(r) for r in args.repeat.split(",")]
    repeats = repeats * len(sizes) if len(repeats) == 1 else repeats

    work = Path(args.workdir or tempfile.mkdtemp(prefix="runscale-"))
    work.mkdir(parents=True, exist_ok=True)
    server, port = start_server(args.unique)
    rows: list[dict] = []
    try:
        for n, repeat in zip(sizes, repeats):
            tsv = work / f"urls-{n}.tsv"
            tsv.write_text("url\tcaption\n" + "".join(
                f"http://127.0.0.1:{port}/img/{i}.jpg\t{caption(i)}\n" for i in range(n)))
            for r in range(repeat):
                for name, path in trees.items():
                    out = work / f"{name}-{n}-{r}"
                    shutil.rmtree(out, ignore_errors=True)
                    cfg = work / f"{out.name}.yaml"
                    cfg.write_text(yaml.safe_dump(run_config(out, tsv, args.samples_per_shard)))
                    env = {**os.environ, "PYTHONPATH": str(Path(path).resolve()), "PYTHONWARNINGS": "ignore"}
                    cmd = [sys.executable, "-P", "-m", "clipcrawl", "run", str(cfg)]
                    load = os.getloadavg()[0]
                    wall, rss, rc, cpu, quarters = run_sampled(cmd, env, work / f"{out.name}.log")
                    c = counts(out)
                    row = {"tree": name, "urls": n, "repeat": r, "wall_s": wall, "urls_s": n / wall,
                           "cpu_ms": 1000 * cpu / n, "rss_mib": rss / 2**20, "rc": rc, "load": load, "statuses": c,
                           "rss_quarters_mib": [round(q / 2**20) for q in quarters]}
                    rows.append(row)
                    print(f"{name:8s} {n:6d} URLs run {r}: {wall:7.1f}s {row['urls_s']:6.1f} URL/s "
                          f"{row['cpu_ms']:6.2f} CPU-ms/URL peak RSS {row['rss_mib']:6.0f} MiB exit {rc} "
                          f"load {load:.1f} RSS by quarter {row['rss_quarters_mib']} statuses {c}", flush=True)
                    if rc != 0:
                        print(f"  see {work / f'{out.name}.log'}", flush=True)
                    if not args.keep:
                        shutil.rmtree(out, ignore_errors=True)
    finally:
        server.kill()
    print(json.dumps(rows, indent=2))
    base = sizes[0]
    print("\n| tree | URLs | URL/s (runs) | CPU-ms/URL | peak RSS MiB (runs) | load | RSS / smallest | URL/s / smallest |")
    print("|---|---:|---|---:|---|---|---:|---:|")
    for name in trees:
        med = {n: (statistics.median(x["urls_s"] for x in rows if x["tree"] == name and x["urls"] == n),
                   max(x["rss_mib"] for x in rows if x["tree"] == name and x["urls"] == n)) for n in sizes}
        for n in sizes:
            mine = [x for x in rows if x["tree"] == name and x["urls"] == n]

            def cells(key: str, fmt: str, mine: list[dict] = mine) -> str:
                return ", ".join(format(x[key], fmt) for x in mine)

            print(f"| {name} | {n:,} | {cells('urls_s', '.1f')} | "
                  f"{statistics.median(x['cpu_ms'] for x in mine):.2f} | {cells('rss_mib', '.0f')} | "
                  f"{cells('load', '.1f')} | {med[n][1] / med[base][1]:.2f}x | {med[n][0] / med[base][0]:.2f}x |")


if __name__ == "__main__":
    main()
