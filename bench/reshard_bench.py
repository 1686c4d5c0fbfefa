"""Output benchmarks: ``clipcrawl reshard`` vs a webdataset ShardWriter loop, and incremental publish
(``samples/`` per shard) vs rewriting one monolithic ``samples.parquet``, in one run.

Reshard: a dataset of S shards x M rows (two thirds kept) of ~20 KB 256 px JPEGs is resharded into
shards of N samples by (a) ``reshard()`` (tar + Parquet + stats + samples/ + manifest, deterministic)
and (b) the usual webdataset recipe, ``wds.WebDataset(tars) -> wds.ShardWriter(maxcount=N)``, which
writes tars only. Publish: the time to add one 10k-row shard to a dataset already holding R kept rows,
vs rewriting a single samples.parquet of R + 10k rows (what a monolithic layout costs per run).

    python bench/reshard_bench.py --shards 20 --rows 600 --per-shard 2000 --published-rows 1000000
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipcrawl.base.shardfiles import ShardRef, list_shards  # noqa: E402
from clipcrawl.pipelines.manifest import kept_rows, publish  # noqa: E402
from clipcrawl.pipelines.passes.reshard import reshard  # noqa: E402
from clipcrawl.pipelines.writer import write_shard  # noqa: E402
from tests.interop.fixtures import shard_table  # noqa: E402


def photo_jpegs(n: int, size: int = 256) -> list[bytes]:
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        arr = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        im = Image.fromarray(arr).resize((size, size), Image.BICUBIC).filter(ImageFilter.GaussianBlur(1))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_source(root: str, shards: int, rows: int, images: list[bytes]) -> int:
    refs = []
    for s in range(shards):
        t = shard_table(s, rows)
        imgs = [images[(s * rows + i) % len(images)] if img is not None else None
                for i, img in enumerate(t.column("image").to_pylist())]
        t = t.set_column(t.schema.get_field_index("image"), "image", pa.array(imgs, pa.binary()))
        refs.append(ShardRef.of(f"{root}/shards", s))
        write_shard(refs[-1], t, start_time=0.0)
    publish(root, 1, refs)
    return sum(pq.read_table(r.parquet, columns=["status"]).column(0).to_pylist().count("success") for r in refs)


def bench_wds(src: str, out: str, per_shard: int) -> int:
    import webdataset as wds

    Path(out).mkdir(parents=True)
    tars = [r.tar for r in list_shards(src)]
    n = 0
    with wds.ShardWriter(f"{out}/%05d.tar", maxcount=per_shard, verbose=0) as sink:
        for s in wds.WebDataset(tars, shardshuffle=False):
            sink.write({k: v for k, v in s.items() if k == "__key__" or not k.startswith("__")})
            n += 1
    return n


def timed(fn, *a, **kw):
    t = time.perf_counter()
    r = fn(*a, **kw)
    return time.perf_counter() - t, r


def bench_publish(tmp: str, published_rows: int) -> None:
    one = shard_table(0, 15_000)  # 10k kept rows
    kept = kept_rows(pa.table({k: one.column(k) for k in one.column_names if k != "image"}), "00000", 1)
    reps = max(1, published_rows // kept.num_rows)
    big = pa.concat_tables([kept] * reps)
    # monolithic: read the old samples.parquet, append the new shard's rows, rewrite it
    pq.write_table(big, f"{tmp}/samples.parquet")
    t_mono, _ = timed(lambda: pq.write_table(pa.concat_tables([pq.read_table(f"{tmp}/samples.parquet"), kept]),
                                             f"{tmp}/samples2.parquet"))
    # ours: the dataset already lists `reps` shards (manifest + samples/), publish one more
    root = f"{tmp}/pub"
    ref0 = ShardRef.of(f"{root}/shards", 0)
    write_shard(ref0, one, start_time=0.0)
    publish(root, 1, [ref0])
    for s in range(1, reps):  # same files under more names: only the manifest and samples/ matter
        for suffix in (".tar", ".parquet", "_stats.json"):
            shutil.copyfile(ref0.path(suffix), ShardRef.of(f"{root}/shards", s).path(suffix))
        shutil.copyfile(f"{root}/samples/00000.parquet", f"{root}/samples/{s:05d}.parquet")
    publish(root, 1, [ShardRef.of(f"{root}/shards", s) for s in range(reps)])
    new = ShardRef.of(f"{root}/shards", reps)
    write_shard(new, one, start_time=0.0)
    t_ours, _ = timed(publish, root, 2, [new])
    rows = reps * kept.num_rows
    print(f"publish one 10k-kept shard onto {rows:,} kept rows: samples/ {t_ours * 1000:.0f} ms, "
          f"monolithic samples.parquet rewrite {t_mono * 1000:.0f} ms -> {t_mono / t_ours:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--per-shard", type=int, default=2000)
    ap.add_argument("--published-rows", type=int, default=1_000_000)
    args = ap.parse_args()
    import webdataset  # noqa: F401 - imported (with torch) before any timing

    tmp = tempfile.mkdtemp(prefix="reshard-bench-")
    try:
        images = photo_jpegs(256)
        src = f"{tmp}/src"
        kept = make_source(src, args.shards, args.rows, images)
        mb = sum(Path(r.tar).stat().st_size for r in list_shards(src)) / 1e6
        print(f"source: {args.shards} shards x {args.rows} rows, {kept} kept samples, {mb:.0f} MB of tars, "
              f"avg image {np.mean([len(i) for i in images]) / 1e3:.1f} KB")
        t_wds, n_wds = timed(bench_wds, src, f"{tmp}/wds", args.per_shard)
        results = {"webdataset ShardWriter (tars only)": (t_wds, n_wds)}
        for label, kw in (("clipcrawl reshard, 1 worker", {"workers": 1}),
                          ("clipcrawl reshard, 2 workers", {"workers": 2}),
                          ("clipcrawl reshard --shuffle, 2 workers", {"workers": 2, "shuffle": True})):
            t, res = timed(reshard, src, f"{tmp}/out-{len(results)}", args.per_shard, **kw)
            results[label] = (t, res.samples)
        for label, (t, n) in results.items():
            print(f"{label:42s} {n:7d} samples {t:6.2f} s {n / t:8.0f} samples/s  {t_wds / t:.2f}x vs webdataset")
        bench_publish(tmp, args.published_rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
