"""The crawl frontier at scale (issue 26): insert / claim / complete cost and bytes per URL, 100k to 10M URLs.

The frontier (clipcrawl/crawler/frontier.py) is one SQLite database: ``urls`` (an index on (state, depth, id);
URLs found through an in-memory table from their hash to row ids, earlier versions: a UNIQUE(url) index),
``pages`` and ``pairs``. This grows one frontier per size (``--sequential``: one frontier through the sizes)
the way a crawl does (URLs arrive as the links of
processed pages, ~50 per page, on ~1,000 hosts, with ~30 % already known), and at each size measures, over a
fixed sample so the figures compare:

- insert: ``Frontier.add`` of 50k more links (in page-sized batches of 50), microseconds per URL; then, split,
  10k links that are all known and 10k that are all new (CPU per URL of each kind);
- claim: ``Frontier.claim(64, window=512, take=...)`` (the crawler's call: skips busy hosts), per URL claimed
  (1,000 URLs);
- complete: ``Frontier.complete`` of each claimed URL with 5 pairs and 50 links, per page;
- bytes per URL: the database files (main + WAL) / URLs in it; the key table's size; the time to open the
  largest frontier (which loads the key table).

Insert, claim and complete are reported as wall time and as this process's CPU time (user + system): on a shared
machine the CPU time is the steadier figure. Each size is measured ``--passes`` times (3), the sizes in turn
(100k, 1M, 10M, 100k, ...; ``--sequential``: one size after the other), and each figure is the median of the
passes (a burst of other work on a shared machine moved a single pass by up to 1.6x; taken in turn, it hits one
pass of one size). The last lines give each figure's ratio, largest size / smallest.
To measure another version of the frontier, put its tree first on PYTHONPATH (the key layout is printed).

    python bench/frontier_scale.py --sizes 100000 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from clipcrawl.crawler.frontier import Frontier

HOSTS = 1000
LINKS_PER_PAGE = 50
ROUNDS = 10  # the insert's CPU is also given as the median of its tenths (steadier on a shared machine)


def _url(i: int) -> str:
    """URL number ``i`` (its host is a function of ``i``, so a link to an earlier URL names the same URL)."""
    host = (i * 2654435761 % 2**32) % HOSTS
    return f"https://www.site{host:04d}.example/section/{i % 97}/article-{i}.html?ref=nav"


def _grow(f: Frontier, start: int, stop: int) -> None:
    batch = []
    for i in range(start, stop):
        batch.append(_url(i))
        if len(batch) == 10_000:
            f.add(batch, 1)
            batch = []
    if batch:
        f.add(batch, 1)


def _db_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("frontier.sqlite*"))


def measure(f: Frontier, state: Path, n: int, rng: random.Random, next_id: int) -> dict:
    # insert: links of processed pages, 30 % of them already known (generated before the clock starts)
    m, new = 50_000, 0
    pages_links = []
    for _ in range(m // LINKS_PER_PAGE):
        links = []
        for _ in range(LINKS_PER_PAGE):
            if rng.random() < 0.3:
                links.append(_url(rng.randrange(n)))  # URLs 0..n-1 are in the frontier
            else:
                links.append(_url(next_id))
                next_id += 1
        pages_links.append(links)
    t0, c0 = time.perf_counter(), time.process_time()
    rounds = []  # CPU us/URL of each tenth
    for i, links in enumerate(pages_links):
        new += f.add(links, 2)
        if (i + 1) % (len(pages_links) // ROUNDS) == 0:
            rounds.append((time.process_time() - c0) * 1e6)
    insert_us = (time.perf_counter() - t0) / m * 1e6
    insert_cpu_us = (time.process_time() - c0) / m * 1e6
    insert_rounds = [(b - a) / (m / ROUNDS) for a, b in zip([0.0] + rounds, rounds)]
    split = {}
    for kind in ("known", "new"):  # the two kinds of link apart, 200 pages of each (median of 4 rounds of 50)
        batches = []
        for _ in range(200):
            if kind == "known":
                batches.append([_url(rng.randrange(n)) for _ in range(LINKS_PER_PAGE)])
            else:
                batches.append([_url(next_id + k) for k in range(LINKS_PER_PAGE)])
                next_id += LINKS_PER_PAGE
        per = []
        for r in range(4):
            c0 = time.process_time()
            for links in batches[r * 50:(r + 1) * 50]:
                f.add(links, 2)
            per.append((time.process_time() - c0) / (50 * LINKS_PER_PAGE) * 1e6)
        split[kind] = round(statistics.median(per), 2)
    # claim + complete, as the crawler does
    busy: set[str] = set()

    def take(url: str) -> bool:
        host = url.split("/", 3)[2]
        if host in busy:
            return False
        busy.add(host)
        return True

    claimed, t_claim, c_claim, t_complete, c_complete, pages = 0, 0.0, 0.0, 0.0, 0.0, 0
    claim_calls: list[float] = []  # CPU us per URL of each claim call
    complete_pages: list[float] = []  # CPU ms of each complete
    while claimed < 1_000:
        busy.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        batch = f.claim(64, max_depth=3, take=take, window=512)
        t_claim += time.perf_counter() - t0
        c_claim += time.process_time() - c0
        if not batch:
            break
        claim_calls.append((time.process_time() - c0) / len(batch) * 1e6)
        claimed += len(batch)
        for c in batch:
            pairs = [{"key": f"{c.id}-{k}", "url": f"https://img.example/{c.id}/{k}.jpg", "caption": "a caption",
                      "page_url": c.url} for k in range(5)]
            links = [_url(next_id + k) for k in range(LINKS_PER_PAGE)]
            next_id += LINKS_PER_PAGE
            t0, c0 = time.perf_counter(), time.process_time()
            f.complete(c, {"url": c.url, "status": 200, "fetched_at": time.time()}, pairs, links, ok=True)
            t_complete += time.perf_counter() - t0
            c_complete += time.process_time() - c0
            complete_pages.append((time.process_time() - c0) * 1e3)
            pages += 1
    urls = f.db.execute("SELECT count(*) FROM urls").fetchone()[0]
    return {"size": n, "urls": urls, "insert_us_per_url": round(insert_us, 2),
            "insert_cpu_us_per_url": round(insert_cpu_us, 2), "insert_new_share": round(new / m, 3),
            "insert_cpu_median_us": round(statistics.median(insert_rounds), 2),
            "insert_known_cpu_us": split["known"], "insert_new_cpu_us": split["new"],
            "claim_cpu_median_us": round(statistics.median(claim_calls), 2) if claim_calls else None,
            "complete_cpu_median_ms": round(statistics.median(
                sum(complete_pages[i:i + 100]) / len(complete_pages[i:i + 100])
                for i in range(0, len(complete_pages), 100)), 3) if complete_pages else None,
            "claim_us_per_url": round(t_claim / max(claimed, 1) * 1e6, 2),
            "claim_cpu_us_per_url": round(c_claim / max(claimed, 1) * 1e6, 2),
            "complete_ms_per_page": round(t_complete / max(pages, 1) * 1e3, 3),
            "complete_cpu_ms_per_page": round(c_complete / max(pages, 1) * 1e3, 3),
            "bytes_per_url": round(_db_bytes(state) / urls, 1), "db_mb": round(_db_bytes(state) / 2**20, 1),
            "_next_id": next_id}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--passes", type=int, default=3,
                    help="measurements at each size; the figures are their medians (default 3)")
    ap.add_argument("--sequential", action="store_true",
                    help="one frontier grown through the sizes, each size measured before the next is grown (the "
                         "earlier tables); default: one frontier per size, grown first, the passes taken in turn")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="frontier-scale-"))
    sizes, n_passes = sorted(args.sizes), max(1, args.passes)
    rng = random.Random(0)
    link_id = 10**9  # URLs first seen as links while measuring
    passes: dict[int, list[dict]] = {n: [] for n in sizes}
    grow_s: dict[int, float] = {}
    key_mb: dict[int, float] = {}

    def one_pass(f: Frontier, state: Path, n: int) -> None:
        nonlocal link_id
        p = measure(f, state, n, rng, link_id)
        link_id = p.pop("_next_id")
        keys = getattr(f, "_keys", None)
        key_mb[n] = round(keys.nbytes() / 2**20, 1) if keys is not None else 0
        passes[n].append(p)
        print(json.dumps(p), flush=True)

    def grown(f: Frontier, start: int, n: int) -> None:
        t0 = time.perf_counter()
        _grow(f, start, n)
        grow_s[n] = round(time.perf_counter() - t0, 1)
        f.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def describe(f: Frontier) -> None:
        cols = {r[1] for r in f.db.execute("PRAGMA table_info(urls)")}
        key = "96-bit URL key (h, h2)" if "h2" in cols else "64-bit URL hash" if "h" in cols else "UNIQUE(url)"
        print(f"frontier: {sys.modules[Frontier.__module__].__file__} ({key}); "
              f"{'sequential' if args.sequential else 'one frontier per size, passes in turn'}", flush=True)

    if args.sequential:
        state = work / "state"
        shutil.rmtree(state, ignore_errors=True)
        states = {n: state for n in sizes}
        with Frontier(state) as f:
            describe(f)
            have = 0  # URLs _url(0 .. have-1) are in the frontier (beside the links added while measuring)
            for n in sizes:
                grown(f, have, max(have, n))
                have = max(have, n)
                for _ in range(n_passes):
                    one_pass(f, state, n)
    else:  # a burst of other work on a shared machine then hits one pass of one size, which the median drops
        states = {n: work / f"state-{n}" for n in sizes}
        fronts = {}
        try:
            for n in sizes:
                shutil.rmtree(states[n], ignore_errors=True)
                fronts[n] = Frontier(states[n])
                grown(fronts[n], 0, n)
            describe(fronts[sizes[0]])
            for _ in range(n_passes):
                for n in sizes:
                    one_pass(fronts[n], states[n], n)
        finally:
            for f in fronts.values():
                f.close()
    rows = []
    for n in sizes:
        ps = passes[n]
        r = {k: (round(statistics.median(p[k] for p in ps), 3) if k.endswith(("_us", "_ms", "_per_url", "_per_page"))
                 and k != "bytes_per_url" else ps[-1][k]) for k in ps[-1]}
        for k in ("urls", "bytes_per_url", "db_mb"):  # the size the first pass measured at (later ones grew it)
            r[k] = ps[0][k]
        r["urls_after_passes"] = ps[-1]["urls"]
        r["insert_cpu_passes"] = [p["insert_cpu_us_per_url"] for p in ps]
        r["insert_cpu_min"] = min(r["insert_cpu_passes"])
        r["claim_cpu_passes"] = [p["claim_cpu_us_per_url"] for p in ps]
        r["complete_cpu_passes"] = [p["complete_cpu_ms_per_page"] for p in ps]
        r["grow_s"], r["key_table_mb"] = grow_s.get(n, 0.0), key_mb[n]
        rows.append(r)
    largest = states[sizes[-1]]
    t0, c0 = time.perf_counter(), time.process_time()
    with Frontier(largest) as f:
        have = f.db.execute("SELECT count(*) FROM urls").fetchone()[0]
    print(f"open (with the key table's load) at {have:,} URLs: {time.perf_counter() - t0:.1f} s "
          f"({time.process_time() - c0:.1f} s CPU)", flush=True)

    def each(v: list[float]) -> str:
        return " / ".join(str(round(x, 3)) for x in v)

    print(f"\nmedians of {n_passes} passes (each pass in brackets)")
    print("\n| URLs | insert us/URL | insert CPU us/URL | known CPU us/URL | new CPU us/URL | claim CPU us/URL "
          "| complete CPU ms/page | bytes/URL | db MB | key table MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['urls']:,} | {r['insert_us_per_url']} | {r['insert_cpu_us_per_url']} ({each(r['insert_cpu_passes'])}) "
              f"| {r['insert_known_cpu_us']} | {r['insert_new_cpu_us']} "
              f"| {r['claim_cpu_us_per_url']} ({each(r['claim_cpu_passes'])}) "
              f"| {r['complete_cpu_ms_per_page']} ({each(r['complete_cpu_passes'])}) | {r['bytes_per_url']} "
              f"| {r['db_mb']} | {r['key_table_mb']} |")
    if len(rows) > 1:
        keys = ("insert_us_per_url", "insert_cpu_us_per_url", "insert_cpu_min", "insert_cpu_median_us",
                "insert_known_cpu_us", "insert_new_cpu_us", "claim_us_per_url", "claim_cpu_us_per_url", "claim_cpu_median_us",
                "complete_ms_per_page", "complete_cpu_ms_per_page", "complete_cpu_median_ms", "bytes_per_url")
        print("\nlargest / smallest: " + ", ".join(f"{k} {rows[-1][k] / rows[0][k]:.2f}x" for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
