"""Benchmark ``clipcrawl stats --html`` on a synthetic 1M-sample dataset.

Writes ``--rows`` samples (SAMPLES schema, realistic statuses/scores/captions) into ``--shards``
shard Parquet files with their ``_stats.json`` and a tar of kept images per shard (a tiny JPEG
per kept sample, so tar scanning costs are real), then times, each in a fresh process:

- ``clipcrawl stats DIR --html FILE`` (the report) and ``clipcrawl stats DIR --json``;
- a naive baseline: pandas reads every column of every shard and computes the status counts,
  domains and caption lengths (what a notebook would do).

Prints seconds and peak RSS of each and the ratios. Usage::

    python bench/stats_bench.py --rows 1000000 --shards 100
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipcrawl.schemas.keys import shard_name
from clipcrawl.schemas.tables import SAMPLES, conform

STATUSES = np.array(["success", "failed_to_download", "failed_to_resize", "filtered_text", "failed_to_score",
                     "filtered_clip", "duplicate"])
P_STATUS = [0.45, 0.2, 0.04, 0.06, 0.01, 0.17, 0.07]
ERRORS = {"failed_to_download": ["download: HTTP {n} for https://h{n}.example.com/a/{n}.jpg",
                                 "download: timeout after {n}.0s", "download: X-Robots-Tag noai"],
          "failed_to_resize": ["resize: image too small ({n}x{n} < 64)", "resize: cannot identify image file"],
          "filtered_text": ["text_filter: too few words ({n} < 2)", "text_filter: generic caption 'IMG_{n}.jpg'"],
          "failed_to_score": ["clip: cannot read image"],
          "filtered_clip": ["clip: similarity 0.{n} < 0.28"],
          "duplicate": ["dedup: phash duplicate of {n:020x}", "dedup: sha256 duplicate of {n:020x}"]}
WORDS = np.array(["a", "the", "red", "blue", "green", "photo", "of", "cat", "dog", "house", "car", "tree", "sky", "small", "large", "old", "new", "view", "at", "night", "with", "on", "in", "beautiful", "garden", "city", "street", "portrait", "painting"])


def _tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (40, 120, 200)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def make_dataset(root: Path, rows: int, shards: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sdir = root / "shards"
    sdir.mkdir(parents=True, exist_ok=True)
    jpeg = _tiny_jpeg()
    per = -(-rows // shards)
    t0 = 1_717_000_000.0
    for s in range(shards):
        n = min(per, rows - s * per)
        ids = np.arange(s * per, s * per + n)
        status = rng.choice(STATUSES, size=n, p=P_STATUS)
        hosts = rng.zipf(1.6, size=n) % 5000
        nwords = rng.integers(1, 16, size=n)
        caps = [" ".join(rng.choice(WORDS, size=k)) for k in nwords]
        urls = [f"https://img{h % 7}.site{h}.com/p/{i}.jpg" for h, i in zip(hosts, ids)]
        keys = [f"{i:020x}" for i in ids]
        fetched = status != "failed_to_download"
        scored = ~np.isin(status, ["failed_to_download", "failed_to_resize", "filtered_text", "failed_to_score"])
        clip = np.where(status == "filtered_clip", rng.normal(0.2, 0.04, n).clip(max=0.279),
                        rng.normal(0.32, 0.03, n).clip(min=0.28))
        errs = [None if st == "success" else ERRORS[st][i % len(ERRORS[st])].format(n=int(i % 997))
                for st, i in zip(status, ids)]
        w = rng.choice([256, 640, 800, 1024, 1920, 4000], size=n)
        h = (w / rng.choice([0.5, 0.75, 1.0, 1.333, 1.777], size=n)).astype(int)
        table = pa.table({
            "url": urls, "caption": caps, "key": keys, "status": status, "error_message": errs,
            "original_width": pa.array(w, mask=~fetched), "original_height": pa.array(h, mask=~fetched),
            "page_language": rng.choice(["en", "en", "de", "fr", "es", "ja", "zh-CN", None], size=n),
            "clip_similarity": pa.array(clip, pa.float32(), mask=~scored),
            "punsafe": pa.array(rng.beta(1, 30, n), pa.float32(), mask=~scored),
            "pwatermark": pa.array(rng.beta(1.2, 6, n), pa.float32(), mask=~scored),
            "dedup_method": pa.array(rng.choice(["url", "sha256", "phash", "semantic"], size=n),
                                     mask=status != "duplicate"),
            "shard": [shard_name(s)] * n, "run": np.full(n, 1 + s * 3 // shards, dtype=np.int32),
        })
        pq.write_table(conform(table, SAMPLES), sdir / f"{shard_name(s)}.parquet")
        start = t0 + s * 30.0
        with tarfile.open(sdir / f"{shard_name(s)}.tar", "w") as tf:
            for k in np.asarray(keys)[status == "success"]:
                info = tarfile.TarInfo(f"{k}.jpg")
                info.size, info.mtime = len(jpeg), int(start)
                tf.addfile(info, io.BytesIO(jpeg))
        (sdir / f"{shard_name(s)}_stats.json").write_text(json.dumps({
            "count": int(n), "successes": int((status == "success").sum()), "start_time": start,
            "end_time": start + 55.0, "duration": 55.0}))
    (root / "config.yaml").write_text("filters:\n  clip:\n    threshold: 0.28\n")


def _timed(code: str) -> tuple[float, float, float]:
    """Run python ``code`` in a fresh process; return (wall seconds, CPU seconds, peak RSS MiB).

    Wall and CPU time include the interpreter start and imports; CPU is user + system of all threads.
    """
    wrapper = (f"import resource, sys, time\nt0 = time.perf_counter()\n{code}\n"
               "r = resource.getrusage(resource.RUSAGE_SELF)\n"
               "sys.stderr.write('\\nBENCH %f %f %f\\n' % (time.perf_counter() - t0, r.ru_utime + r.ru_stime, "
               "r.ru_maxrss / 1024))\n")
    res = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{res.stderr[-3000:]}")
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("BENCH ")][-1]
    secs, cpu, rss = map(float, line.split()[1:])
    return secs, cpu, rss


BASELINE = """
import glob, pandas as pd
from urllib.parse import urlsplit
df = pd.concat([pd.read_parquet(f) for f in sorted(glob.glob({dir!r} + '/shards/*.parquet'))])
counts = df['status'].value_counts()
hosts = df['url'].map(lambda u: urlsplit(u).hostname).value_counts().head(20)
chars = df['caption'].str.len().describe(); words = df['caption'].str.split().str.len().describe()
clip = df['clip_similarity'].describe()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=None, help="Reuse/keep the dataset here (default: a temp dir).")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    tmp = None
    root = args.dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="stats_bench_")
        root = Path(tmp.name)
    if not (root / "shards").is_dir():
        t = time.perf_counter()
        make_dataset(root, args.rows, args.shards)
        print(f"generated {args.rows:,} rows in {args.shards} shards in {time.perf_counter() - t:.1f}s at {root}")
    html = root / "report.html"
    results = {}
    results["stats --html"] = _timed(
        f"from clipcrawl.cli import main\nassert main(['-q', 'stats', {str(root)!r}, '--html', {str(html)!r}]) == 0")
    results["stats --json"] = _timed(
        "import contextlib, io\nfrom clipcrawl.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['stats', {str(root)!r}, '--json']) == 0")
    if not args.no_baseline:
        results["pandas baseline"] = _timed(BASELINE.format(dir=str(root)))
    print(f"\n{args.rows:,} samples, {args.shards} shards; HTML {html.stat().st_size / 1024:.0f} KB")
    print(f"{'step':<18} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13}")
    for name, (secs, cpu, rss) in results.items():
        print(f"{name:<18} {secs:>8.2f} {cpu:>8.2f} {rss:>13.0f}")
    if "pandas baseline" in results:
        b, r = results["pandas baseline"], results["stats --html"]
        print(f"pandas baseline / stats --html: wall x{b[0] / r[0]:.2f}, CPU x{b[1] / r[1]:.2f}, "
              f"RSS x{b[2] / r[2]:.2f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
