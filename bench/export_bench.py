"""``clipcrawl export`` throughput (samples/s) and peak RSS per format, on a generated dataset.

A dataset of S shards x M rows (two thirds kept, ~6 KB 128 px JPEGs, the interop fixture's metadata) is
exported by ``python -m clipcrawl export`` once per format, each in its own process: wall time, samples/s
and the peak RSS of that process and its children (``os.wait4``; for MDS through ``--mds-python`` that
includes the MosaicML writer child). Baseline in the same run: ``read`` = the same kept samples streamed
from the shards (metadata + tar) with nothing written, the floor every format pays. Run twice with
different S to see whether memory grows with the dataset (it should not: one shard at a time).

    nice -n 10 python bench/export_bench.py --shards 12 --rows 900 --mds-python /work/.venv-streaming/bin/python
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipcrawl.base.shardfiles import ShardRef  # noqa: E402
from clipcrawl.pipelines.manifest import publish  # noqa: E402
from clipcrawl.pipelines.writer import write_shard  # noqa: E402
from tests.interop.fixtures import shard_table  # noqa: E402

READ_ONLY = """
import sys
from clipcrawl.pipelines.export.source import iter_samples, plan_source
plan = plan_source(sys.argv[1], None)
n = sum(1 for ref in plan.shards for _ in iter_samples(ref, plan.columns))
print(n)
"""


def jpegs(n: int, size: int = 128) -> list[bytes]:
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        arr = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        im = Image.fromarray(arr).resize((size, size), Image.BICUBIC).filter(ImageFilter.GaussianBlur(1))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def make_source(root: str, shards: int, rows: int) -> tuple[int, int]:
    images = jpegs(256)
    refs, kept, size = [], 0, 0
    for s in range(shards):
        t = shard_table(s, rows)
        imgs = [images[(s * rows + i) % len(images)] if img is not None else None
                for i, img in enumerate(t.column("image").to_pylist())]
        t = t.set_column(t.schema.get_field_index("image"), "image", pa.array(imgs, pa.binary()))
        t = t.append_column("uid", pa.array([f"{s:08x}{i:024x}" for i in range(rows)], pa.string()))
        refs.append(ShardRef.of(f"{root}/shards", s))
        write_shard(refs[-1], t, start_time=0.0)
        ok = [st == "success" for st in t.column("status").to_pylist()]
        kept += sum(ok)
        size += sum(len(b) for b, k in zip(imgs, ok) if k)
    publish(root, 1, refs)
    return kept, size


def run(cmd: list[str], env: dict) -> tuple[float, int, int]:
    """Wall seconds, peak RSS (MiB) of the process and its waited-for children, exit code."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(proc.stderr.read().decode()[-2000:] if proc.stderr else "", file=sys.stderr)
    return dt, usage.ru_maxrss // 1024, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=12)
    ap.add_argument("--rows", type=int, default=900)
    ap.add_argument("--formats", default="read,hf,litdata,mds,datacomp-uids")
    ap.add_argument("--mds-python", default=os.environ.get("CLIPCRAWL_MDS_PYTHON"))
    ap.add_argument("--chunk-mb", type=int, default=64)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="export-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_OFFLINE": "1"}
    try:
        src = str(tmp / "ds")
        t0 = time.perf_counter()
        kept, size = make_source(src, args.shards, args.rows)
        print(f"source: {args.shards} shards x {args.rows} rows, {kept} kept, {size / kept / 1024:.1f} KB/image "
              f"(made in {time.perf_counter() - t0:.1f}s)")
        results = []
        for fmt in args.formats.split(","):
            if fmt == "read":
                cmd = [sys.executable, "-c", READ_ONLY, src]
            else:
                out = tmp / f"out-{fmt}"
                cmd = [sys.executable, "-m", "clipcrawl", "-q", "export", src, "--format", fmt, "--out",
                       str(out / "uids.npy") if fmt == "datacomp-uids" else str(out), "--chunk-mb", str(args.chunk_mb)]
                if fmt == "mds":
                    if not args.mds_python:
                        print("mds: skipped (no --mds-python and streaming not importable)")
                        continue
                    cmd += ["--mds-python", args.mds_python]
            dt, rss, code = run(cmd, env)
            row = {"format": fmt, "samples": kept, "seconds": round(dt, 2), "samples_per_s": round(kept / dt, 1),
                   "peak_rss_mib": rss, "exit": code}
            if fmt not in ("read", "datacomp-uids"):
                row["out_mib"] = round(sum(p.stat().st_size for p in (tmp / f"out-{fmt}").rglob("*")
                                           if p.is_file()) / 2**20, 1)
            results.append(row)
            print(json.dumps(row))
        print("| format | samples | s | samples/s | peak RSS MiB | output MiB |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['format']} | {r['samples']} | {r['seconds']} | {r['samples_per_s']} | {r['peak_rss_mib']} "
                  f"| {r.get('out_mib', '')} |")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
