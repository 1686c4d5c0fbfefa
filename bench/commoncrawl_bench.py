"""Common Crawl reader benchmark: record iteration (FastWARC vs warcio) and pairs extraction, one run.

Generates a gzipped WARC of N HTML responses (Common Crawl layout: request + response + metadata
record per page; pages of ~12-25 KB with 12 ``<img>``, some with srcset/lazy attributes, some
without alt) and the matching WAT, then measures on the same files:

* iteration only (every record's block read): FastWARC vs warcio -> records/s, MB/s (uncompressed)
* clipcrawl's WARC path (HTTP parse + the crawler's HTML extractor) -> records/s, pairs/s
* clipcrawl's WAT path -> records/s, pairs/s, against a cc2dataset-style baseline (the whole file
  read into memory, FastWARC + json, IMG@/src links with alt, relative links resolved with urljoin)
* ``read_commoncrawl`` over 4 copies of the WARC with 1 and 2 worker processes

    python bench/commoncrawl_bench.py --pages 3000 --repeat 3
"""

from __future__ import annotations

import argparse
import gzip
import io
import itertools
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = ("red", "house", "garden", "river", "mountain", "city", "street", "cat", "dog", "portrait", "sunset",
         "beach", "market", "train", "bridge", "forest", "winter", "summer", "festival", "museum", "kitchen",
         "bicycle", "harbour", "lighthouse", "village")


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_page(i: int, rng: random.Random) -> bytes:
    imgs = []
    for j in range(12):
        alt = f' alt="{_text(rng, rng.randint(2, 8))}"' if j % 4 else ""
        if j % 5 == 0:
            imgs.append(f'<img src="/s/{i}-{j}-small.jpg" srcset="/s/{i}-{j}-640.jpg 640w, /s/{i}-{j}-1280.jpg 1280w"{alt}>')
        elif j % 7 == 0:
            imgs.append(f'<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/lazy/{i}-{j}.webp"{alt}>')
        else:
            imgs.append(f'<figure><img src="https://cdn{j % 3}.example.net/{i}/{j}.jpg" width="400" height="300"{alt}>'
                        f'<figcaption>{_text(rng, 6)}</figcaption></figure>' if j % 6 == 1 else
                        f'<img src="../img/{i}_{j}.png"{alt}>')
    paras = "".join(f"<p>{_text(rng, rng.randint(40, 120))}</p>" for _ in range(rng.randint(8, 20)))
    body = "".join(f"<div class='c'>{p}{im}</div>" for p, im in zip(paras.split("</p>"), imgs))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Page {i} {_text(rng, 4)}</title>'
            f'<script>var x = "{_text(rng, 30)}";</script></head><body>{body}</body></html>').encode()


def _record(kind: str, uri: str, block: bytes, ctype: str, extra: str = "") -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-05-18T01:58:10Z\r\n"
            f"WARC-Record-ID: <urn:uuid:{uuid.uuid4()}>\r\nContent-Type: {ctype}\r\n{extra}"
            f"Content-Length: {len(block)}\r\n\r\n").encode()
    return gzip.compress(head + block + b"\r\n\r\n", compresslevel=6)


def make_files(folder: Path, pages: int, seed: int = 0) -> tuple[Path, Path, int]:
    from selectolax.lexbor import LexborHTMLParser

    rng = random.Random(seed)
    warc, wat = folder / "bench.warc.gz", folder / "bench.warc.wat.gz"
    raw = 0
    with open(warc, "wb") as fw, open(wat, "wb") as ft:
        for i in range(pages):
            url = f"https://site{i % 97}.example.org/articles/{i}.html"
            html = make_page(i, rng)
            http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nServer: bench\r\n"
                    b"Content-Length: " + str(len(html)).encode() + b"\r\n\r\n" + html)
            req = f"GET /articles/{i}.html HTTP/1.1\r\nHost: site{i % 97}.example.org\r\n\r\n".encode()
            meta = b"fetchTimeMs: 120\r\ncharset-detected: UTF-8\r\n"
            fw.write(_record("request", url, req, "application/http; msgtype=request"))
            fw.write(_record("response", url, http, "application/http; msgtype=response",
                             "WARC-Identified-Payload-Type: text/html\r\n"))
            fw.write(_record("metadata", url, meta, "application/warc-fields"))
            raw += len(req) + len(http) + len(meta)
            links = [{"path": "IMG@/src", "url": n.attributes.get("src") or "",
                      **({"alt": n.attributes["alt"]} if n.attributes.get("alt") else {})}
                     for n in LexborHTMLParser(html.decode()).css("img")]
            doc = {"Container": {"Filename": warc.name}, "Envelope": {
                "WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Target-URI": url,
                                         "WARC-Date": "2024-05-18T01:58:10Z"},
                "Payload-Metadata": {"HTTP-Response-Metadata": {
                    "Response-Message": {"Status": "200"}, "Headers": {"Content-Type": "text/html"},
                    "HTML-Metadata": {"Head": {"Title": f"Page {i}"}, "Links": links}}}}}
            for kind in ("request", "response", "metadata"):
                d = doc if kind == "response" else {"Envelope": {"WARC-Header-Metadata": {"WARC-Type": kind}}}
                ft.write(_record("metadata", url, json.dumps(d).encode(), "application/json"))
    return warc, wat, raw


# ------------------------------------------------------------------ measurements
def iter_fastwarc(path: Path) -> int:
    from fastwarc.warc import ArchiveIterator

    n = 0
    for rec in ArchiveIterator(str(path), parse_http=False, fsspec_args=False):
        rec.reader.read()
        n += 1
    return n


def iter_warcio(path: Path) -> int:
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f, no_record_parse=True):
            rec.raw_stream.read()
            n += 1
    return n


def clipcrawl_file(path: Path, fmt: str) -> tuple[int, int]:
    from clipcrawl.crawler.commoncrawl.process import ReadOptions, process_file

    out = tempfile.mkdtemp()
    try:
        ids = itertools.count()
        rep = process_file(str(path), ReadOptions(format=fmt), out, lambda: next(ids))
        return rep.records, rep.pairs
    finally:
        shutil.rmtree(out)


def cc2dataset_style_wat(path: Path) -> tuple[int, int]:
    """The cc2dataset approach, re-implemented for comparison (not its code): whole file in memory,
    IMG@/src links with alt, relative URLs joined to the page URL, (uid=md5(alt+url), url, alt,
    page_url) rows written to Parquet (cc2dataset hands them to Spark, which writes Parquet)."""
    import hashlib
    from urllib.parse import urljoin

    import pyarrow as pa
    import pyarrow.parquet as pq
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    with open(path, "rb") as f:
        data = io.BytesIO(f.read())
    n = 0
    rows: dict[str, list[str]] = {"uid": [], "url": [], "alt": [], "page_url": []}
    for rec in ArchiveIterator(data, record_types=WarcRecordType.metadata, parse_http=False):
        n += 1
        try:
            doc = json.loads(rec.reader.read())
            env = doc["Envelope"]
            links = env["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]["Links"]
        except (KeyError, ValueError):
            continue
        base = env["WARC-Header-Metadata"]["WARC-Target-URI"]
        for link in links:
            if link.get("path") == "IMG@/src" and link.get("alt"):
                url = link["url"] if link["url"].startswith(("http://", "https://")) else urljoin(base, link["url"])
                if url.startswith("http"):
                    rows["uid"].append(hashlib.md5((link["alt"] + url).encode()).hexdigest())
                    rows["url"].append(url)
                    rows["alt"].append(link["alt"])
                    rows["page_url"].append(base)
    pq.write_table(pa.table(rows), io.BytesIO())
    return n, len(rows["url"])


def _cpu() -> float:
    """CPU seconds of this process and its (finished) children: on a shared, oversubscribed machine
    wall time says little about parallel overhead, CPU time does."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def timed(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from clipcrawl.crawler.commoncrawl import read_commoncrawl
    from clipcrawl.schemas.config import CommonCrawlConfig

    tmp = Path(tempfile.mkdtemp(prefix="ccbench-"))
    try:
        warc, wat, raw = make_files(tmp, args.pages)
        mb = raw / 1e6
        print(f"WARC: {args.pages} pages, {3 * args.pages} records, {mb:.1f} MB raw, "
              f"{warc.stat().st_size / 1e6:.1f} MB gzipped; WAT {wat.stat().st_size / 1e6:.1f} MB gzipped; "
              f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, median of {args.repeat}")
        clipcrawl_file(warc, "warc")  # warm-up: lazy imports of the extractor and pyarrow
        rows = []
        t_fw, n_fw = timed(lambda: iter_fastwarc(warc), args.repeat)
        t_wi, n_wi = timed(lambda: iter_warcio(warc), args.repeat)
        assert n_fw == n_wi == 3 * args.pages, (n_fw, n_wi)
        rows.append(("iterate WARC, FastWARC", n_fw / t_fw, None, f"{mb / t_fw:.0f} MB/s"))
        rows.append(("iterate WARC, warcio", n_wi / t_wi, None, f"{mb / t_wi:.0f} MB/s; FastWARC x{t_wi / t_fw:.1f}"))
        t_w, (n_w, p_w) = timed(lambda: clipcrawl_file(warc, "warc"), args.repeat)
        rows.append(("clipcrawl WARC path (1 process)", n_w / t_w, p_w / t_w, f"{p_w} pairs, {args.pages / t_w:.0f} pages/s"))
        t_t, (n_t, p_t) = timed(lambda: clipcrawl_file(wat, "wat"), args.repeat)
        rows.append(("clipcrawl WAT path (1 process)", n_t / t_t, p_t / t_t, f"{p_t} pairs"))
        t_c, (n_c, p_c) = timed(lambda: cc2dataset_style_wat(wat), args.repeat)
        rows.append(("cc2dataset-style WAT baseline", n_c / t_c, p_c / t_c,
                     f"{p_c} pairs; clipcrawl/baseline time x{t_t / t_c:.2f}"))
        copies = []
        for k in range(4):
            c = tmp / f"copy{k}.warc.gz"
            shutil.copy(warc, c)
            copies.append(str(c))
        for w in (1, 2):
            cpu: list[float] = []

            def run(w=w, cpu=cpu):
                out = tmp / f"out{w}"
                shutil.rmtree(out, ignore_errors=True)
                c0 = _cpu()
                s = read_commoncrawl(CommonCrawlConfig(paths=copies), out, workers=w, progress=False)
                cpu.append(_cpu() - c0)
                return s
            t_r, s = timed(run, args.repeat)
            rows.append((f"read_commoncrawl 4 WARCs, {w} worker(s)", s.records / t_r, s.pairs / t_r,
                         f"{t_r:.2f} s wall, {statistics.median(cpu):.2f} s CPU (all processes)"))
        print(f"{'what':44} {'records/s':>10} {'pairs/s':>10}  notes")
        for name, rps, pps, note in rows:
            print(f"{name:44} {rps:10,.0f} {'' if pps is None else f'{pps:10,.0f}':>10}  {note}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
