"""Shard files: atomic, deterministic, img2dataset-compatible, readable by webdataset."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipcrawl.base.shardfiles import ShardRef, iter_tar, list_shards, next_shard_id, read_images
from clipcrawl.base.stage import Stage
from clipcrawl.pipelines.writer import TarShardWriter, shard_stats, write_shard
from clipcrawl.schemas import SAMPLES, Status, check, sample_key


def _jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "JPEG")
    return buf.getvalue()


def _table() -> pa.Table:
    urls = [f"http://example.com/{i}.jpg" for i in range(4)]
    caps = ["a red square", "a blue circle", None, "a green star"]
    return pa.table(
        {
            "url": urls,
            "caption": caps,
            "key": [sample_key(u, c) for u, c in zip(urls, caps)],
            "status": ["success", "failed_to_download", "success", "filtered_clip"],
            "error_message": [None, "download: HTTP 404 Not Found", None, "clip: 0.1 < 0.28"],
            "image": [_jpeg("red"), None, _jpeg("blue"), _jpeg("green")],
            "width": [8, None, 8, 8],
            "my_extra": [1, 2, 3, 4],
        }
    )


def test_write_shard_webdataset(tmp_path):
    ref = ShardRef.of(str(tmp_path), 3)
    stats = write_shard(ref, _table())
    assert stats["count"] == 4 and stats["successes"] == 2 and stats["failed_to_download"] == 1
    assert stats["filtered_clip"] == 1 and stats["status_dict"]["success"] == 2
    assert stats["status_dict"]["download: HTTP 404 Not Found"] == 1
    assert json.loads((tmp_path / "00003_stats.json").read_text())["count"] == 4
    t = pq.read_table(tmp_path / "00003.parquet")
    check(t, SAMPLES)  # the schema is the source of truth
    assert t.num_rows == 4 and "image" not in t.column_names and t.column_names[-1] == "my_extra"
    samples = list(iter_tar(str(tmp_path / "00003.tar")))
    assert len(samples) == 2 and set(samples[0]) == {"__key__", "jpg", "txt", "json"}
    assert json.loads(samples[0]["json"])["status"] == "success"
    assert list_shards(str(tmp_path)) == [ref] and next_shard_id(str(tmp_path)) == 4
    assert set(read_images(ref)) == {s["__key__"] for s in samples}
    # no temp files are left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00003.parquet", "00003.tar", "00003_stats.json"]


def test_tar_is_deterministic_and_safe(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_shard(ShardRef.of(str(a), 0), _table())
    write_shard(ShardRef.of(str(b), 0), _table())
    digest = [hashlib.sha256((d / "00000.tar").read_bytes()).hexdigest() for d in (a, b)]
    assert digest[0] == digest[1]
    with tarfile.open(a / "00000.tar") as tar:
        for m in tar.getmembers():
            assert m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and "/" not in m.name
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            TarShardWriter(io.BytesIO()).add(bad, {"txt": "x"})


def test_webdataset_reads_our_tar(tmp_path):
    wds = pytest.importorskip("webdataset")
    write_shard(ShardRef.of(str(tmp_path), 0), _table())
    ds = wds.WebDataset(str(tmp_path / "00000.tar"), shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json")
    got = list(ds)
    assert len(got) == 2 and got[0][0].size == (8, 8) and got[0][1] == "a red square"


def test_parquet_and_files_formats(tmp_path):
    write_shard(ShardRef.of(str(tmp_path / "p"), 0), _table(), output_format="parquet")
    t = pq.read_table(tmp_path / "p" / "00000.parquet")
    assert t.column("jpg").null_count == 2
    write_shard(ShardRef.of(str(tmp_path / "f"), 0), _table(), output_format="files")
    files = sorted(p.suffix for p in (tmp_path / "f" / "00000").iterdir())
    assert files == [".jpg", ".jpg", ".json", ".json", ".txt", ".txt"]


def test_stats_of_empty_table():
    s = shard_stats(SAMPLES.empty_table(), 1.0, 2.0)
    assert s["count"] == 0 and s["duration"] == 1.0 and s["status_dict"] == {}
    assert all(k in s for k in ("successes", "failed_to_download", "failed_to_resize", "start_time", "end_time"))
    assert Status.DUPLICATE.value in s


class _Heavy(Stage):
    name = "heavy"
    _transient = ("session", "model")

    def __init__(self):
        self.config = {"a": 1}
        self.session = object()
        self.model = None


def test_stage_pickles_without_heavy_state():
    import pickle

    s = pickle.loads(pickle.dumps(_Heavy()))
    assert s.config == {"a": 1} and s.session is None and s.model is None and not s._is_setup
