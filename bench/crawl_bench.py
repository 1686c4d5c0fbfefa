"""Crawl rate on a loopback site, politeness off (no delay, high per-host concurrency).

The site (tests/crawler/site.py ``generated_site``: links, 3 captioned images per page, ~3 KB)
runs in its own process; the crawler runs the real pipeline (robots.txt, Fetcher, extraction,
SQLite frontier, Parquet chunks). The baseline in the same run is a bare aiohttp loop that GETs
the same pages with the same concurrency and does nothing else: the ceiling the server allows.

    python bench/crawl_bench.py [--pages 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _serve(n_pages: int, q) -> None:
    from tests.crawler.site import LoopbackServer, generated_site

    with LoopbackServer(generated_site(n_pages=n_pages, fanout=5)) as srv:
        q.put(srv.port)
        while True:
            time.sleep(3600)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), 0.0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


async def _bare(base: str, n: int, concurrency: int) -> float:
    import aiohttp

    urls = asyncio.Queue()
    for i in range(n):
        urls.put_nowait(f"{base}/p/{i}")

    async def worker(session):
        while not urls.empty():
            async with session.get(urls.get_nowait()) as r:
                await r.read()

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()

    from clipcrawl.crawler.crawl import crawl
    from clipcrawl.schemas.config import CrawlConfig

    q = mp.get_context("spawn").Queue()
    server = mp.get_context("spawn").Process(target=_serve, args=(args.pages, q), daemon=True)
    server.start()
    try:
        base = f"http://127.0.0.1:{q.get(timeout=60)}"
        cfg = CrawlConfig(seeds=[base + "/p/0"], max_pages=args.pages, max_depth=10_000,
                          allowed_networks=["127.0.0.0/8"], concurrency=args.concurrency,
                          per_host_concurrency=args.concurrency, delay=0.0, retries=0)
        load = _loadavg()
        with tempfile.TemporaryDirectory() as out:
            t0, cpu0, srv0 = time.perf_counter(), time.process_time(), _cpu_seconds(server.pid)
            s = crawl(cfg, out, progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            srv_cpu = _cpu_seconds(server.pid) - srv0
        bare = asyncio.run(_bare(base, args.pages, args.concurrency))
    finally:
        server.kill()
    rate, bare_rate = s.pages / wall, args.pages / bare
    per_cpu = s.pages / cpu
    print(f"machine: {os.cpu_count()} cores, load average before the crawl {load}; "
          f"site: {args.pages} pages served by a separate process")
    print(f"clipcrawl crawl : {s.pages} pages, {s.pairs} pairs in {wall:.2f}s wall = {rate:.0f} pages/s "
          f"(fetch loop alone {s.pages_per_s:.0f} pages/s); status {s.by_status}")
    print(f"  CPU: crawler {cpu:.2f}s ({per_cpu:.0f} pages per CPU-second), server {srv_cpu:.2f}s "
          f"({s.pages / max(srv_cpu, 1e-9):.0f} pages per CPU-second)")
    print(f"bare aiohttp GET: {args.pages} pages in {bare:.2f}s = {bare_rate:.0f} pages/s (fetch only, same server)")
    print(f"crawler / bare = {rate / bare_rate:.2f}; goal >= 200 pages/s on 2 cores: wall {'met' if rate >= 200 else 'NOT met'}, "
          f"CPU-bound rate of one crawler core {'met' if per_cpu >= 200 else 'NOT met'} ({per_cpu:.0f}/s)")


if __name__ == "__main__":
    main()
