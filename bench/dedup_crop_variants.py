"""Perceptual dedup on crop variants of real photos: which crops are caught, at what precision.

Sources: the real photos of /work/shared/testdata/images/photos and their 160/256 px tiles
(bench/dedup_quality.py's photo_sources). Per source one copy per variant:
  one-sided 10%   10% cut from the left and 10% from the top
  centred 5%/8%/10%   that fraction cut from every side (the image keeps its centre)
  centred 8% + q70   centred 8% crop, JPEG quality 70
Each variant set (sources + that variant) runs through MarkDuplicates (shipped perceptual rule:
pHash, crop-window candidates, thumbnail verification; exact rules off) on its own. recall =
variant copies marked duplicate of their source; precision = duplicate rows whose duplicate_of
is in their own group (over all variants, sources shuffled).

    python bench/dedup_crop_variants.py
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dedup_quality import encode, photo_sources  # noqa: E402

VARIANTS = {
    "one-sided 10%": lambda im: im.crop((int(im.width * 0.1), int(im.height * 0.1), im.width, im.height)),
    "centred 5%": lambda im: _centred(im, 0.05),
    "centred 8%": lambda im: _centred(im, 0.08),
    "centred 10%": lambda im: _centred(im, 0.10),
    "centred 8% + q70": lambda im: _centred(im, 0.08),
}


def _centred(im, f: float):
    dx, dy = int(round(im.width * f)), int(round(im.height * f))
    return im.crop((dx, dy, im.width - dx, im.height - dy))


def run_variant(sources, name) -> tuple[int, int, int, int]:
    import pyarrow as pa

    from clipcrawl.filters.dedup import MarkDuplicates
    from clipcrawl.schemas.config import DedupConfig

    images, group = [], []
    for g, im in enumerate(sources):
        images.append(encode(im))
        group.append(g)
        images.append(encode(VARIANTS[name](im), 70 if "q70" in name else 95))
        group.append(g)
    n = len(images)
    perm = np.random.default_rng(1).permutation(n)
    t = pa.table({"url": [f"http://x/{i}.jpg" for i in perm], "caption": [f"c{i}" for i in perm],
                  "key": [f"{i:020d}" for i in perm], "status": ["success"] * n, "error_message": [None] * n,
                  "image": [images[i] for i in perm]})
    cfg = DedupConfig(url=False, sha256=False, pixels=True, semantic=False, index=False)
    out = MarkDuplicates(cfg)(t)
    dup = [(int(k), int(d)) for k, d, s in zip(out["key"].to_pylist(), out["duplicate_of"].to_pylist(),
                                              out["status"].to_pylist()) if s == "duplicate"]
    good = sum(group[k] == group[d] for k, d in dup)
    caught = len({group[k] for k, d in dup if group[k] == group[d]})
    return caught, len(sources), good, len(dup)


def main() -> None:
    sources = photo_sources()
    print(f"{len(sources)} real photo sources (photos + tiles)")
    print("| variant | caught | recall | links | precision |")
    print("|---|---|---|---|---|")
    for name in VARIANTS:
        caught, total, good, links = run_variant(sources, name)
        print(f"| {name} | {caught}/{total} | {caught / total:.3f} | {links} | {good / max(1, links):.3f} |")


if __name__ == "__main__":
    main()
