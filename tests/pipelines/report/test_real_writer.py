"""The report reads shards written by clipcrawl's own writer (pipelines.writer / pipelines.manifest)."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest
from PIL import Image

from clipcrawl.base.shardfiles import ShardRef  # noqa: E402
from clipcrawl.pipelines.report.aggregate import aggregate
from clipcrawl.pipelines.report.layout import find_parts
from clipcrawl.pipelines.report.samples import pick_samples
from clipcrawl.pipelines.writer import write_shard  # noqa: E402
from clipcrawl.schemas.keys import sample_key

dataset = pytest.importorskip("clipcrawl.pipelines.manifest")


def _jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format="JPEG")
    return buf.getvalue()


def _table(n: int, offset: int) -> pa.Table:
    rows = []
    for i in range(offset, offset + n):
        url, cap = f"https://cdn{i % 2}.example.org/{i}.jpg", f"picture number {i}"
        st = ("success", "filtered_clip", "failed_to_download", "duplicate")[i % 4]
        rows.append({"url": url, "caption": cap, "key": sample_key(url, cap), "status": st,
                     "error_message": None if st == "success" else f"{st}: reason {i}",
                     "clip_similarity": None if st == "failed_to_download" else (0.2 if st == "filtered_clip" else 0.31),
                     "dedup_method": "phash" if st == "duplicate" else None,
                     "original_width": None if st == "failed_to_download" else 640,
                     "original_height": None if st == "failed_to_download" else 480,
                     "image": _jpeg((i * 20 % 255, 90, 160)) if st == "success" else None})
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("fmt", ["webdataset", "parquet", "files"])
def test_report_on_written_and_published_shards(tmp_path, fmt):
    root = tmp_path / "ds"
    refs = []
    for s in range(2):
        ref = ShardRef.of(str(root / "shards"), s)
        stats = write_shard(ref, _table(20, 20 * s), output_format=fmt, start_time=1_700_000_000.0 + s)
        assert stats["count"] == 20
        refs.append(ref)
    dataset.publish(str(root), 1, refs)
    agg = aggregate(find_parts(root), threshold=0.28)
    assert agg["statuses"] == {"success": 10, "filtered_clip": 10, "failed_to_download": 10, "duplicate": 10}
    assert agg["funnel"][-1]["count"] == 10 and agg["dedup"] == {"phash": 10}
    assert agg["throughput"]["count"] == 40 and agg["throughput"]["successes"] == 10
    manifest = json.loads((root / "manifest.json").read_text())
    run = next(r for r in agg["runs"] if r["run"] == "1")
    assert run["manifest_kept"] == manifest["totals"]["samples_kept"] == 10
    assert agg["manifest"]["fields"]["totals.samples_total"] == 40
    grids = pick_samples(find_parts(root), n_random=5)
    assert len(grids["random_kept"]) == 5 and all(c["image"] for c in grids["random_kept"])
    assert all(c["image"] is None for c in grids["top_dropped_clip"])  # writers keep no dropped images
