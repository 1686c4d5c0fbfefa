"""Face blurring on a real photo (before encoding), img2dataset's bbox path, and the blocklist stages."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from clipcrawl.filters.block import BlockHashes, BlockUrls
from clipcrawl.filters.images import ResizeOptions, resize_image

ASTRONAUT = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "images" / "photos" / "astronaut.png"


def _decode(b: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).astype(int)


def _grown(box, w, h, pad):
    """The pixels blur_boxes may touch for ``box``: +10% of the larger side, plus the feather radius."""
    x0, y0, x1, y1 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    side = max(x1 - x0, y1 - y0)
    g = 0.1 * side + pad
    return max(0, int(x0 - g)), max(0, int(y0 - g)), min(w, int(np.ceil(x1 + g)) + 1), min(h, int(np.ceil(y1 + g)) + 1)


@pytest.mark.skipif(not ASTRONAUT.is_file(), reason="shared testdata absent")
def test_face_blur_changes_pixels_only_inside_detected_faces():
    pytest.importorskip("cv2")
    data = ASTRONAUT.read_bytes()
    plain = resize_image(data, ResizeOptions(image_size=512, encode_format="png"))
    blurred = resize_image(data, ResizeOptions(image_size=512, encode_format="png", blur_faces=True))
    assert plain.error is None and blurred.error is None and plain.num_faces is None
    assert blurred.num_faces == 1 == len(blurred.face_bboxes)
    x0, y0, x1, y1 = blurred.face_bboxes[0]
    # Eileen Collins' face in the 512x512 photo sits around x 180-270, y 70-160
    assert 0.3 < x0 < 0.4 and 0.1 < y0 < 0.2 and 0.5 < x1 < 0.6 and 0.25 < y1 < 0.36
    a, b = _decode(plain.image), _decode(blurred.image)
    diff = np.abs(a - b).max(axis=2)
    h, w = diff.shape
    side = max(x1 - x0, y1 - y0) * w
    gx0, gy0, gx1, gy1 = _grown(blurred.face_bboxes[0], w, h, pad=np.ceil(0.1 * side) + 1)
    outside = diff.copy()
    outside[gy0:gy1, gx0:gx1] = 0
    assert outside.max() == 0, "pixels outside the face box changed"
    fx0, fy0, fx1, fy1 = (int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h))
    inside = diff[fy0:fy1, fx0:fx1]
    assert (inside > 0).mean() > 0.9 and inside.mean() > 5  # the face itself is really blurred
    assert blurred.sha256 == plain.sha256  # sha256 stays the downloaded bytes'


def test_bbox_col_boxes_are_blurred_before_encoding():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, "PNG")
    opts = ResizeOptions(image_size=100, resize_mode="no", encode_format="png")
    plain = _decode(resize_image(buf.getvalue(), opts).image)
    boxed = _decode(resize_image(buf.getvalue(), opts, bbox=[[0.5, 0.5, 0.8, 0.8]]).image)
    diff = np.abs(plain - boxed).max(axis=2)
    assert diff[55:75, 55:75].mean() > 20 and diff[:30, :30].max() == 0


def _table(**cols) -> pa.Table:
    n = len(next(iter(cols.values())))
    cols.setdefault("status", ["success"] * n)
    cols.setdefault("error_message", [None] * n)
    return pa.table(cols)


def test_block_stages(tmp_path):
    bad = b"bad image bytes"
    f = tmp_path / "list.txt"
    f.write_text(f"https://a.example/x.jpg\ndomain:evil.example\nsha256:{hashlib.sha256(bad).hexdigest()}\n")
    t = _table(url=["https://a.example/x.jpg", "https://cdn.evil.example/y.jpg", "https://ok.example/z.jpg",
                    "https://ok.example/w.jpg"],
               page_url=[None, None, "https://www.evil.example/page", None],
               status=["success", "success", "success", "failed_to_download"])
    out = BlockUrls([str(f)])(t)
    assert out.column("status").to_pylist() == ["blocked", "blocked", "blocked", "failed_to_download"]
    msgs = out.column("error_message").to_pylist()
    assert msgs[0] == "blocklist: blocklist list.txt:1: URL https://a.example/x.jpg"
    assert "list.txt:2: domain:evil.example" in msgs[1] and msgs[2].startswith("blocklist: page blocklist")
    t = _table(url=["u1", "u2"], sha256=[hashlib.sha256(bad).hexdigest(), "00" * 32], image=[bad, b"fine"])
    out = BlockHashes([str(f)])(t)
    assert out.column("status").to_pylist() == ["blocked", "success"]
    assert out.column("image").to_pylist() == [None, b"fine"] and "list.txt:3: sha256:" in out.column("error_message")[0].as_py()
