import pyarrow as pa

from clipcrawl.filters.images.rules import FilterImages, image_problems
from clipcrawl.schemas.config import ImageFilterConfig


def _table():
    return pa.table({
        "key": list("abcdefg"),
        "status": ["success"] * 6 + ["failed_to_download"],
        "error_message": [None] * 6 + ["download: HTTP 404"],
        "original_width": pa.array([640, 199, 900, 200, 640, None, None], pa.int32()),
        "original_height": pa.array([480, 400, 200, 600, 480, None, None], pa.int32()),
        "width": pa.array([256, 256, 256, 256, 256, 300, None], pa.int32()),
        "height": pa.array([256, 256, 256, 256, 256, 100, None], pa.int32()),
        "bytes": pa.array([50_000, 40_000, 30_000, 20_000, 4_999, 10_000, None], pa.int64()),
    })


def test_each_rule_exact_keep_set():
    cfg = ImageFilterConfig(min_side=200, max_aspect_ratio=3, min_bytes=5000)
    out = FilterImages(cfg)(_table())
    kept = [k for k, s in zip(out.column("key").to_pylist(), out.column("status").to_pylist()) if s == "success"]
    assert kept == ["a", "d"]  # d: 200x600 is exactly aspect 3 and side 200 -> kept
    msgs = dict(zip(out.column("key").to_pylist(), out.column("error_message").to_pylist()))
    assert msgs["b"] == "image: smaller side 199 < 200"
    assert msgs["c"] == "image: aspect ratio 4.50 > 3"
    assert msgs["e"] == "image: image has 4999 bytes < 5000"
    assert msgs["f"] == "image: smaller side 100 < 200"  # falls back to width/height
    assert msgs["g"] == "download: HTTP 404"
    assert set(out.column("status").to_pylist()) == {"success", "filtered_image", "failed_to_download"}


def test_defaults_keep_everything():
    assert image_problems(_table(), ImageFilterConfig()) == [None] * 7
