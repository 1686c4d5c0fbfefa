"""Downloader benchmark: clipcrawl download vs img2dataset on the same loopback URLs, in one run.

Serves N URLs of generated photo-like JPEGs (~170 KB, up to 1600x1200) from an in-memory aiohttp
server in its own process, then runs both tools with the same settings (256 px border, jpg q95,
1000 samples per shard, webdataset) and prints images/s (wall, whole command), the ratio and
the peak RSS of each (sum over the tool's process tree, sampled every 0.1 s).

img2dataset runs from its own venv (``python -m venv .venv-img2dataset &&
.venv-img2dataset/bin/pip install img2dataset``) with 2 processes x 32 threads and
``--disallowed_header_directives '[]'``; clipcrawl with its defaults (robots.txt and
X-Robots-Tag checks on) and --concurrency 64 --per-host-concurrency 64.

    python bench/download_bench.py --n 4000 --repeat 2
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZES = [(1600, 1200), (1200, 1600), (1600, 900), (1280, 960), (1024, 768), (1600, 1067), (800, 600), (1200, 1200)]


def make_photo(width: int, height: int, seed: int, target_kb: int = 170) -> bytes:
    """Smooth shapes + texture + grain, encoded at the quality that lands near ``target_kb``."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    mid = rng.integers(0, 256, (height // 24, width // 24, 3), dtype=np.uint8)
    tex = np.asarray(Image.fromarray(mid).resize((width, height), Image.Resampling.BILINEAR), np.float32)
    grain = rng.normal(0, 5, (height, width, 1)).astype(np.float32)
    a = np.clip(0.65 * base + 0.35 * tex + grain, 0, 255).astype(np.uint8)
    im = Image.fromarray(a)
    best = b""
    for q in (90, 85, 80, 75, 70, 60, 50):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q)
        best = buf.getvalue()
        if len(best) <= target_kb * 1024 * 1.1:
            break
    return best


def make_images(n_unique: int, cache: Path) -> list[bytes]:
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n_unique):
        f = cache / f"{i:04d}.jpg"
        if not f.exists():
            w, h = SIZES[i % len(SIZES)]
            f.write_bytes(make_photo(w, h, seed=i))
        out.append(f.read_bytes())
    return out


# ------------------------------------------------------------------ static server (own process)
def _serve(cache: str, n_unique: int, conn, latency: float = 0.0) -> None:  # noqa: ANN001
    """``latency``: seconds each response waits (a remote server's round trips + transfer, simulated)."""
    import asyncio

    from aiohttp import web

    bodies = [(Path(cache) / f"{i:04d}.jpg").read_bytes() for i in range(n_unique)]

    async def img(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        if latency:
            await asyncio.sleep(latency)
        return web.Response(body=bodies[i % n_unique], content_type="image/jpeg")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/img/{i}.jpg", img)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        conn.send(site._server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


# ------------------------------------------------------------------ measuring a command
def start_server(unique: int, latency: float = 0.0) -> tuple[mp.Process, int]:
    """Generate (or reuse) ``unique`` bench JPEGs and serve them from their own process: (process, port)."""
    cache = Path(tempfile.gettempdir()) / f"clipcrawl-bench-images-{unique}"
    make_images(unique, cache)
    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve, args=(str(cache), unique, child, latency), daemon=True)
    server.start()
    return server, parent.recv()


def _tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
    return total


def run_measured(cmd: list[str], env: dict[str, str], log: Path,
                 on_poll: Callable[[int], float] | None = None) -> tuple[float, int, int, float]:
    """(wall seconds, peak tree RSS bytes, exit code, CPU seconds of the whole process tree). ``on_poll(pid)``
    runs every 0.1 s while the command runs and returns the CPU seconds of any processes it ran itself (our
    children too, so not counted as the command's)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    own = 0.0
    with open(log, "w") as lf:
        p = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT)
        peak = 0
        while p.poll() is None:
            peak = max(peak, _tree_rss(p.pid))
            if on_poll is not None:
                own += on_poll(p.pid)
            time.sleep(0.1)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for descendants included
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime) - own
    return wall, peak, p.returncode, cpu


def count_successes(out: Path) -> tuple[int, int]:
    ok = total = 0
    for f in out.glob("*_stats.json"):
        s = json.loads(f.read_text())
        ok += s["successes"]
        total += s["count"]
    return ok, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000, help="URLs to download")
    ap.add_argument("--unique", type=int, default=200, help="distinct images behind the URLs")
    ap.add_argument("--repeat", type=int, default=1, help="alternating runs of each tool; medians reported")
    ap.add_argument("--img2dataset", default=str(REPO / ".venv-img2dataset" / "bin" / "img2dataset"))
    ap.add_argument("--clipcrawl", default=str(Path(sys.executable).parent / "clipcrawl"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--only", choices=["clipcrawl", "img2dataset"], default=None)
    ap.add_argument("--clipcrawl-args", default="", help="extra args for clipcrawl download")
    ap.add_argument("--nice", type=int, default=0,
                    help="add to this process's niceness before starting anything (e.g. -10 as root, to keep "
                         "other work on a shared machine from skewing the comparison; applies to both tools)")
    args = ap.parse_args()
    if args.nice:
        os.nice(args.nice)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dlbench-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.gettempdir()) / f"clipcrawl-bench-images-{args.unique}"
    images = make_images(args.unique, cache)
    print(f"{args.unique} distinct JPEGs, mean {np.mean([len(b) for b in images]) / 1024:.0f} KB, "
          f"served as {args.n} URLs", flush=True)

    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve, args=(str(cache), args.unique, child), daemon=True)
    server.start()
    port = parent.recv()
    urls = work / "urls.txt"
    urls.write_text("".join(f"http://127.0.0.1:{port}/img/{i}.jpg\n" for i in range(args.n)))

    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    tools = {
        "img2dataset": lambda out: [
            args.img2dataset, "--url_list", str(urls), "--input_format", "txt", "--output_folder", str(out),
            "--processes_count", "2", "--thread_count", "32", "--image_size", "256", "--resize_mode", "border",
            "--encode_quality", "95", "--output_format", "webdataset", "--number_sample_per_shard", "1000",
            "--disallowed_header_directives", "[]", "--distributor", "multiprocessing"],
        "clipcrawl": lambda out: [
            args.clipcrawl, "--log-format", "text", "download", str(urls), "--out", str(out), "--image-size", "256",
            "--resize-mode", "border", "--encode-quality", "95", "--samples-per-shard", "1000",
            "--concurrency", "64", "--per-host-concurrency", "64", "--allow-private-networks",
            *args.clipcrawl_args.split()],
    }
    names = [args.only] if args.only else ["img2dataset", "clipcrawl"]
    results: dict[str, list[tuple[float, int, float]]] = {n: [] for n in names}
    try:
        for r in range(args.repeat):
            for name in names:
                out = work / f"{name}-{r}"
                shutil.rmtree(out, ignore_errors=True)
                load = os.getloadavg()[0]
                wall, rss, rc, cpu = run_measured(tools[name](out), env, work / f"{name}-{r}.log")
                ok, total = count_successes(out)
                rate = total / wall if wall else 0.0
                cpu_ms = 1000 * cpu / total if total else 0.0
                print(f"{name:12s} run {r}: {wall:6.1f}s {rate:7.1f} img/s  {cpu_ms:5.2f} CPU-ms/img  "
                      f"peak RSS {rss / 2**20:6.0f} MiB  success {ok}/{total} (exit {rc}, load before {load:.1f})",
                      flush=True)
                if rc != 0 or total != args.n:
                    print(f"  see {work / f'{name}-{r}.log'}", flush=True)
                results[name].append((rate, rss, cpu_ms))
    finally:
        server.kill()
    summary: dict[str, object] = {
        n: {"images_per_s": statistics.median(r for r, _, _ in v), "peak_rss_mib": max(m for _, m, _ in v) / 2**20,
            "cpu_ms_per_image": statistics.median(c for _, _, c in v)}
        for n, v in results.items()}
    if len(names) == 2:
        cc, i2d = summary["clipcrawl"], summary["img2dataset"]
        summary["ratio"] = cc["images_per_s"] / i2d["images_per_s"]  # type: ignore[index]
        summary["cpu_ratio"] = i2d["cpu_ms_per_image"] / cc["cpu_ms_per_image"]  # type: ignore[index]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
