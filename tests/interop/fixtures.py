"""Realistic shard rows for the interop tests: coloured-shape JPEGs (and a few PNGs) with captions
that describe them, a mix of statuses with stage error messages, and filled metadata columns."""

from __future__ import annotations

import hashlib
import io
import json
import random

import pyarrow as pa

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.pipelines.manifest import publish
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas.keys import sample_key

COLORS = {"red": (220, 50, 47), "green": (60, 160, 80), "blue": (38, 110, 210), "yellow": (235, 200, 40)}
SHAPES = ("circle", "square", "triangle")
DROPS = (("failed_to_download", "download: HTTP 404 Not Found"), ("filtered_text", "rules: too few words (1 < 2)"),
         ("filtered_clip", "clip: similarity 0.12 < 0.28"), ("duplicate", "dedup: phash distance 2"))


def draw(shape: str, color: str, size: int = 64, fmt: str = "JPEG", seed: int = 0) -> bytes:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    im = Image.new("RGB", (size, size), (245, 245, 240))
    d = ImageDraw.Draw(im)
    c, r = size / 2 + rng.uniform(-4, 4), size * rng.uniform(0.25, 0.4)
    box = [c - r, c - r, c + r, c + r]
    if shape == "circle":
        d.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        d.rectangle(box, fill=COLORS[color])
    else:
        d.polygon([(c, c - r), (c + r, c + r), (c - r, c + r)], fill=COLORS[color])
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def shard_table(shard_id: int, n: int = 12, png_every: int = 0, run: int = 1) -> pa.Table:
    """``n`` rows of shard ``shard_id``: two thirds success, the rest dropped by some stage."""
    rows = []
    for i in range(n):
        g = shard_id * 1000 + i
        shape, color = SHAPES[g % 3], list(COLORS)[(g // 3) % 4]
        url = f"https://img{g % 5}.example.org/{shard_id}/{i}.jpg"
        caption = f"a {color} {shape} on a white background, picture {g}"
        ok = i % 3 != 2
        status, error = ("success", None) if ok else DROPS[(g // 3) % len(DROPS)]
        png = bool(png_every) and ok and i % png_every == 0
        image = draw(shape, color, fmt="PNG" if png else "JPEG", seed=g) if status != "failed_to_download" else None
        rows.append({
            "url": url, "caption": caption, "key": sample_key(url, caption), "status": status,
            "error_message": error, "width": 64 if image else None, "height": 64 if image else None,
            "original_width": 640 if image else None, "original_height": 480 if image else None,
            "exif": json.dumps({"Make": "Canon"}) if g % 4 == 0 else None,
            "sha256": hashlib.sha256(image).hexdigest() if image else None,
            "page_url": f"https://www.example.org/page{g % 7}.html", "source": "crawl", "caption_source": "alt",
            "page_title": f"Shapes {g % 7}", "page_language": "en",
            "mime_type": ("image/png" if png else "image/jpeg") if image else None,
            "bytes": len(image) if image else None, "http_status": 200 if image else 404,
            "clip_similarity": 0.31 + (g % 10) / 100 if image else None,
            "clip_model": "tiny" if image else None,
            "phash": int(hashlib.sha256(url.encode()).hexdigest()[:16], 16) | 1 << 63 if image else None,
            "run": run, "image": image, "ext": "png" if png else "jpg",
        })
    cols = {k: [r[k] for r in rows] for k in rows[0] if k != "ext"}
    cols["phash"] = pa.array(cols["phash"], pa.uint64())
    return pa.table(cols)


def row_exts(table: pa.Table) -> list[str]:
    return ["png" if (img or b"")[:4] == b"\x89PNG" else "jpg" for img in table.column("image").to_pylist()]


def make_dataset(root: str, n_shards: int = 3, n: int = 12, run: int = 1, first: int = 0,
                 png_every: int = 0) -> list[ShardRef]:
    """Write ``n_shards`` shards into ``root/shards`` and publish them as run ``run``."""
    refs = []
    for s in range(first, first + n_shards):
        t = shard_table(s, n, png_every, run)
        ref = ShardRef.of(f"{root}/shards", s)
        write_shard(ref, t, image_exts=row_exts(t), start_time=0.0)
        refs.append(ref)
    publish(root, run, refs, {"note": "test"})
    return refs
