"""Downscale quality and cost: clipcrawl's JPEG draft gap x resampling filter against img2dataset's own pixels.

The truth is img2dataset's ``Resizer`` (full OpenCV decode + ``INTER_AREA``), run in its own venv, both tools
writing PNG so no JPEG encoder sits between the pixels. For each variant: worst and median PSNR over the images,
mean |diff| (of 255), and CPU-ms per image of decode + resize + q95 JPEG encode, the benchmarks' settings
(process time, best of ``--repeat`` rounds).

    python bench/resample_quality.py --img2dataset-python .venv-img2dataset/bin/python

Images: the download benchmark's generated photos (800x600-1600x1200) and, when ``../shared/testdata`` is there,
its real photos that are larger than the output (PNGs re-encoded as JPEG q90, as they would be served).
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.download_bench import make_images  # noqa: E402
from clipcrawl.filters.images import resize as rz  # noqa: E402

TESTDATA = REPO.parent / "shared" / "testdata" / "images" / "photos"

I2D_SCRIPT = r"""
import io, os, pickle, sys
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
import cv2, numpy as np
from img2dataset.resizer import Resizer, ResizeMode
items = pickle.load(open(sys.argv[1], "rb"))
r = Resizer(image_size=int(sys.argv[3]), resize_mode=ResizeMode.border, resize_only_if_bigger=False, encode_format="png",
            encode_quality=1)
out = {}
for name, data in items:
    png, w, h, ow, oh, err = r(io.BytesIO(data))
    assert err is None, (name, err)
    out[name] = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
pickle.dump(out, open(sys.argv[2], "wb"))
"""


def load_items(n_bench: int, size: int) -> list[tuple[str, bytes]]:
    items = [(f"bench/{i}", b) for i, b in enumerate(
        make_images(200, Path(tempfile.gettempdir()) / "clipcrawl-bench-images-200")[:n_bench])]
    if TESTDATA.is_dir():
        for p in sorted(TESTDATA.iterdir()):
            im = Image.open(p)
            if min(im.size) <= size:
                continue
            if im.format == "JPEG":
                items.append((f"real/{p.name}", p.read_bytes()))
            elif im.format == "PNG":
                buf = io.BytesIO()
                im.convert("RGB").save(buf, "JPEG", quality=90)
                items.append((f"real/{p.name}.q90", buf.getvalue()))
    return items


def ours(data: bytes, size: int, gap: float, filt: str, fmt: str = "png") -> np.ndarray | None:
    """Our output's pixels (PNG); with ``fmt="jpg"`` the real work (q95 JPEG, as the benchmarks), no pixels."""
    opts = rz.ResizeOptions(image_size=size, resize_mode="border", encode_format=fmt, jpeg_draft_gap=gap,
                            downscale_interpolation=filt)
    r = rz.resize_image(data, opts, with_sha256=False)
    assert r.error is None, r.error
    return np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB")) if fmt == "png" else None


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(float) - b) ** 2).mean())
    return 99.0 if mse == 0 else 10 * float(np.log10(255**2 / mse))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--img2dataset-python", default=str(REPO.parent / ".venv-img2dataset" / "bin" / "python"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--bench-images", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    items = load_items(args.bench_images, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "items.pkl", Path(tmp) / "i2d.pkl"
        src.write_bytes(pickle.dumps(items))
        subprocess.run([args.img2dataset_python, "-c", I2D_SCRIPT, str(src), str(dst), str(args.size)], check=True)
        truth = pickle.loads(dst.read_bytes())

    # Pillow's filters under our interpolation names; "area" is whatever clipcrawl maps it to now.
    filters = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR, "hamming": Image.Resampling.HAMMING,
               "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
    rz.RESAMPLE.update(filters)
    variants = [(g, f) for g in (0, 2.0, 1.25) for f in ("box", "hamming", "bilinear")] + [(0, "lanczos")]
    results = []
    for group in ("bench", "real"):
        sel = [(n, d) for n, d in items if n.startswith(group)]
        if not sel:
            continue
        print(f"== {group}: {len(sel)} images, {args.size} px border, vs img2dataset's Resizer (PNG both sides)")
        for gap, filt in variants:
            outs = [ours(d, args.size, gap, filt) for _, d in sel]
            ps = [psnr(o, truth[n]) for o, (n, _) in zip(outs, sel)]
            md = float(np.mean([np.abs(o.astype(float) - truth[n]).mean() for o, (n, _) in zip(outs, sel)]))
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.process_time()
                for _, d in sel:
                    ours(d, args.size, gap, filt, "jpg")
                best = min(best, (time.process_time() - t0) / len(sel) * 1000)
            row = {"group": group, "gap": gap, "filter": filt, "worst_psnr": round(min(ps), 1),
                   "median_psnr": round(float(np.median(ps)), 1), "mean_abs_diff": round(md, 2), "ms_per_img": round(best, 2)}
            results.append(row)
            print(f"  gap {gap:<4} {filt:8s} worst {row['worst_psnr']:5.1f} dB  median {row['median_psnr']:5.1f} dB  "
                  f"mean|d| {md:.2f}  {best:.2f} ms/img (decode+resize+q95 JPEG)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
