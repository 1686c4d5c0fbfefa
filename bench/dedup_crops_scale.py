"""Cost of the crop-window candidates at scale: codes for N published thumbnails, then the crop index
built over them and searched with 10k new rows (synthetic blocky 32x32 grey thumbnails).

    python bench/dedup_crops_scale.py [N]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from clipcrawl.filters.dedup.crops import N_CODES, THUMB, CropIndex, crop_codes


def thumbnails(n: int, seed: int, chunk: int = 50_000) -> np.ndarray:
    """(n, THUMB * THUMB) uint8: an 8x8 grid of random grey levels upsampled, plus noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, THUMB * THUMB), np.uint8)
    cell = THUMB // 8
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        base = np.kron(rng.random((m, 8, 8), dtype=np.float32), np.ones((cell, cell), np.float32)) * 255
        out[s : s + m] = (base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8).reshape(m, -1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, nargs="?", default=300_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--distance", type=int, default=10)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    codes = crop_codes(thumbnails(args.n, 0))
    t1 = time.perf_counter()
    queries = crop_codes(thumbnails(args.queries, 1))
    t2 = time.perf_counter()
    pairs = CropIndex(codes, args.distance).search(queries)
    t3 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{N_CODES} codes per image, {args.n} rows: codes {t1 - t0:.1f}s; index + search {args.queries} rows "
          f"{t3 - t2:.1f}s ({len(pairs)} candidate pairs); peak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
