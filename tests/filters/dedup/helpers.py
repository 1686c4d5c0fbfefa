"""Small generated images and sample tables for the dedup tests."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from clipcrawl.schemas.keys import sample_key


def picture(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A distinct picture: coloured ellipses and boxes on a coloured background."""
    r = np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(int(x) for x in r.integers(0, 256, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(8):
        x, y = int(r.integers(0, size[0])), int(r.integers(0, size[1]))
        box = (x, y, x + int(r.integers(15, size[0] // 2)), y + int(r.integers(15, size[1] // 2)))
        fill = tuple(int(v) for v in r.integers(0, 256, 3))
        (d.ellipse if r.random() < 0.5 else d.rectangle)(box, fill=fill)
    return im


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(seed: int, quality: int = 90, size: tuple[int, int] = (160, 120)) -> bytes:
    return encode(picture(seed, size), quality=quality)


def table(rows: list[dict]) -> pa.Table:
    """A samples table: each row gives url/caption (key derived), status (default success) and any
    other column (image, clip_similarity, original_width/height, image_embedding ...)."""
    cols: dict[str, list] = {}
    names = ["url", "caption", "key", "status", "error_message"]
    for r in rows:
        names += [k for k in r if k not in names]
    for name in names:
        vals = []
        for r in rows:
            if name == "key":
                vals.append(r.get("key") or sample_key(r["url"], r.get("caption")))
            elif name == "status":
                vals.append(r.get("status", "success"))
            else:
                vals.append(r.get(name))
        cols[name] = vals
    types = {"image": pa.binary(), "phash": pa.uint64(), "clip_similarity": pa.float32(),
             "original_width": pa.int32(), "original_height": pa.int32()}
    arrays = {}
    for name, vals in cols.items():
        if name == "image_embedding":
            d = len(next(v for v in vals if v is not None))
            arrays[name] = pa.array([None if v is None else np.asarray(v, np.float32) for v in vals],
                                    pa.list_(pa.float32(), d))
        else:
            arrays[name] = pa.array(vals, types.get(name))
    return pa.table(arrays)


def statuses(t: pa.Table) -> list[str]:
    return t.column("status").to_pylist()
