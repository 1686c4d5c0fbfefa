"""``clipcrawl verify`` throughput: a published dataset of S shards x M rows (about 80% success,
small JPEGs, every drop status) is written with ``write_shard`` + ``publish``, then verified
(in-process, ``verify()``, and through the CLI in a fresh process) R times; prints samples/s and
rows/s. A second pass corrupts one shard (a tar member removed) and checks the finding is reported.

    python bench/verify_bench.py --shards 20 --rows 1000 --repeat 3 [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipcrawl.base.shardfiles import ShardRef  # noqa: E402
from clipcrawl.pipelines.manifest import publish  # noqa: E402
from clipcrawl.pipelines.verify import verify  # noqa: E402
from clipcrawl.pipelines.writer import write_shard  # noqa: E402
from clipcrawl.schemas.keys import sample_key  # noqa: E402

DROPS = (("failed_to_download", "download: HTTP 404 Not Found"), ("failed_to_resize", "resize: too small"),
         ("filtered_text", "text: generic caption"), ("filtered_clip", "clip_threshold: 0.12 < 0.28"),
         ("duplicate", "dedup: sha256"))


def small_jpegs(n: int, size: int = 64) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        im = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((size, size))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def build(root: Path, shards: int, rows: int) -> int:
    images = small_jpegs(64)
    refs = []
    for s in range(shards):
        recs = []
        for i in range(rows):
            g = s * rows + i
            url, caption = f"https://img{g % 7}.example.org/{s}/{i}.jpg", f"a small picture number {g}"
            status, err = ("success", None) if g % 5 else DROPS[(g // 5) % len(DROPS)]
            recs.append({"url": url, "caption": caption, "key": sample_key(url, caption), "status": status,
                         "error_message": err, "width": 64, "height": 64, "run": 1,
                         "image": images[g % len(images)] if status == "success" else None})
        ref = ShardRef.of(f"{root}/shards", s)
        write_shard(ref, pa.Table.from_pylist(recs), start_time=0.0)
        refs.append(ref)
    publish(str(root), 1, refs, {"note": "verify bench"})
    return shards * rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--keep", type=Path, default=None, help="Build the dataset here and keep it.")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="verify-bench-"))
    root = a.keep or tmp / "ds"
    try:
        t0 = time.perf_counter()
        n = build(root, a.shards, a.rows)
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        print(f"built {n:,} rows in {a.shards} shards ({size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s; "
              f"cpus={os.cpu_count()}")
        for r in range(a.repeat):
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            rep = verify(str(root), workers=a.workers)
            dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            assert rep.clean, rep.findings
            print(f"verify() #{r + 1}: {rep.samples:,} samples / {rep.rows:,} rows in {dt:.2f}s wall, {cpu:.2f}s CPU "
                  f"-> {rep.samples / dt:,.0f} samples/s, {rep.rows / dt:,.0f} rows/s")
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "clipcrawl", "verify", str(root)], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        dt = time.perf_counter() - t0
        print(f"CLI (fresh process, imports included): exit {p.returncode} in {dt:.2f}s -> {rep.samples / dt:,.0f} "
              f"samples/s")
        # truth check: one sample removed from one tar is found, and only there
        tar = root / "shards" / f"{a.shards // 2:05d}.tar"
        with tarfile.open(tar) as t:
            members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
        victim = members[0][0].name.split(".")[0]
        with tarfile.open(tar, "w") as t:
            for m, data in members:
                if not m.name.startswith(victim):
                    t.addfile(m, io.BytesIO(data))
        rep = verify(str(root), workers=a.workers)
        found = [(f.code, Path(f.path).name) for f in rep.errors]
        print(f"after removing {victim} from {tar.name}: {found}")
        assert ("missing-sample", tar.name) in found
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
