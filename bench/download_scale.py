"""Scale-out benchmark: does ``clipcrawl download`` keep flat memory and throughput as the URL count grows?

Serves URLs of the same generated photo-like JPEGs as ``download_bench.py`` (same in-memory aiohttp server in
its own process) and runs ``clipcrawl download`` at each size (default 3k, 12k, 48k URLs) with the default
samples per shard (10,000) and download_bench's settings (256 px border, jpg q95, --concurrency 64
--per-host-concurrency 64). Prints per run: img/s (wall of the whole command), CPU-ms/img (user+sys of the
process tree), peak RSS of the process tree; and the ratios to the smallest size. ``--tree NAME=PATH`` runs the
code of another checkout (``PYTHONPATH=PATH python -m clipcrawl``), e.g. main before a change, in the same
invocation; sizes run in order, the trees alternate at each size.

    python bench/download_scale.py --sizes 3000,12000,48000 --tree before=/work/wt-old-stream --tree after=.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from download_bench import count_successes, run_measured, start_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="3000,12000,48000")
    ap.add_argument("--unique", type=int, default=200, help="distinct images behind the URLs")
    ap.add_argument("--tree", action="append", default=[], help="NAME=PATH of a checkout to run (repeatable)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--extra", default="", help="extra args for clipcrawl download")
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(REPO)}
    sizes = [int(s) for s in args.sizes.split(",")]

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dlscale-"))
    work.mkdir(parents=True, exist_ok=True)
    server, port = start_server(args.unique)
    results: dict[str, dict[int, dict[str, float]]] = {t: {} for t in trees}
    try:
        for n in sizes:
            urls = work / f"urls-{n}.txt"
            urls.write_text("".join(f"http://127.0.0.1:{port}/img/{i}.jpg\n" for i in range(n)))
            for name, path in trees.items():
                out = work / f"{name}-{n}"
                shutil.rmtree(out, ignore_errors=True)
                # -P: the checkout on PYTHONPATH, not the current folder, provides clipcrawl
                env = {**os.environ, "PYTHONPATH": str(Path(path).resolve()), "PYTHONWARNINGS": "ignore"}
                cmd = [sys.executable, "-P", "-m", "clipcrawl", "--log-format", "text", "download", str(urls), "--out",
                       str(out), "--image-size", "256", "--resize-mode", "border", "--encode-quality", "95",
                       "--concurrency", "64", "--per-host-concurrency", "64", "--allow-private-networks",
                       *args.extra.split()]
                load = os.getloadavg()[0]
                wall, rss, rc, cpu = run_measured(cmd, env, work / f"{name}-{n}.log")
                ok, total = count_successes(out)
                r = {"img_s": total / wall if wall else 0.0, "cpu_ms": 1000 * cpu / total if total else 0.0,
                     "rss_mib": rss / 2**20, "wall_s": wall, "ok": ok, "total": total, "rc": rc, "load": load}
                results[name][n] = r
                print(f"{name:8s} {n:6d} URLs: {wall:7.1f}s {r['img_s']:6.1f} img/s {r['cpu_ms']:6.2f} CPU-ms/img "
                      f"peak RSS {r['rss_mib']:6.0f} MiB success {ok}/{total} (exit {rc}, load before {load:.1f})",
                      flush=True)
                shutil.rmtree(out, ignore_errors=True)  # 48k images at 256 px are ~1 GB
    finally:
        server.kill()
    base = sizes[0]
    for rs in results.values():
        for r in rs.values():
            r["rss_ratio"] = r["rss_mib"] / rs[base]["rss_mib"]
            r["img_s_ratio"] = r["img_s"] / rs[base]["img_s"]
            r["cpu_ratio"] = r["cpu_ms"] / rs[base]["cpu_ms"]
    print(json.dumps(results, indent=2))
    print("\n| tree | URLs | img/s | CPU-ms/img | peak RSS MiB | RSS / smallest | img/s / smallest |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rs in results.items():
        for n, r in rs.items():
            print(f"| {name} | {n:,} | {r['img_s']:.1f} | {r['cpu_ms']:.2f} | {r['rss_mib']:.0f} | "
                  f"{r['rss_ratio']:.2f}x | {r['img_s_ratio']:.2f}x |")


if __name__ == "__main__":
    main()
