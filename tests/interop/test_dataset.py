"""Dataset level: samples/ + manifest.json, published atomically and idempotently."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.base.shardfiles import ShardRef, list_shards
from clipcrawl.pipelines.manifest import (
    kept_samples,
    load_manifest,
    publish,
    rebuild,
    refresh,
    samples_files,
)
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas import SAMPLES, check

from .fixtures import make_dataset, shard_table


def _snapshot(root) -> dict[str, tuple[bytes, int]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = (Path(p).read_bytes(), os.stat(p).st_mtime_ns)
    return out


def test_publish_layout_and_counts(tmp_path):
    root = str(tmp_path / "ds")
    (tmp_path / "ds" / "runs" / "0001").mkdir(parents=True)
    (tmp_path / "ds" / "runs" / "0001" / "config.yaml").write_text("dataset: ds\n")
    make_dataset(root, n_shards=2, n=12)
    make_dataset(root, n_shards=1, n=6, run=2, first=2)
    m = load_manifest(root)
    assert m["version"] == 2 and m["format"] == "clipcrawl-dataset"
    assert [r["run"] for r in m["runs"]] == [1, 2]
    r1 = m["runs"][0]
    assert r1["shards"] == ["00000", "00001"] and r1["shards_added"] == 2
    assert (r1["samples_total"], r1["samples_kept"]) == (24, 16) and r1["summary"] == {"note": "test"}
    assert len(r1["config_hash"]) == 64 and m["runs"][1]["config_hash"] is None  # sha256 of runs/0001/config.yaml
    assert m["totals"] == {"runs": 2, "shards": 3, "samples_total": 30, "samples_kept": 20}
    assert m["shards"]["00002"]["run"] == 2 and m["shards"]["00000"]["tar_bytes"] > 0
    t = kept_samples(root)
    check(t, SAMPLES)
    assert t.num_rows == 20 and set(t.column("status").to_pylist()) == {"success"}
    assert t.column("shard").to_pylist()[:8] == ["00000"] * 8 and t.column("run").to_pylist()[-1] == 2
    assert kept_samples(root, ["key"]).column_names == ["key"]
    # the folder is a plain Parquet dataset
    assert pq.read_table(tmp_path / "ds" / "samples").num_rows == 20


def test_publish_twice_changes_nothing(tmp_path):
    root = str(tmp_path / "ds")
    refs = make_dataset(root, n_shards=2)
    before = _snapshot(root)
    entry = publish(root, 1, refs, {"note": "test"})
    assert _snapshot(root) == before  # same bytes and same mtimes: nothing was rewritten
    assert entry == load_manifest(root)["runs"][0]


def test_publish_after_crash_before_manifest(tmp_path):
    """A crash between samples/ and manifest.json: readers still see the old snapshot; a retry
    completes it and equals an uninterrupted publish."""
    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=1)
    refs = []
    for s in (1, 2):
        refs.append(ShardRef.of(f"{root}/shards", s))
        write_shard(refs[-1], shard_table(s), start_time=0.0)
    publish(root, 2, refs)
    manifest_v1 = tmp_path / "ds" / "manifest.json"
    after = json.loads(manifest_v1.read_text())
    after["runs"] = after["runs"][:1]  # roll the commit point back: samples/ already written
    after["shards"] = {"00000": after["shards"]["00000"]}
    manifest_v1.write_text(json.dumps(after))
    assert len(samples_files(root)) == 1 and kept_samples(root).num_rows == 8  # orphans are invisible
    publish(root, 2, refs)
    assert len(samples_files(root)) == 3 and kept_samples(root).num_rows == 24
    assert load_manifest(root)["totals"]["samples_kept"] == 24


@pytest.mark.unverified("hand-made rows (non-success without an error_message)")
def test_republishing_a_rewritten_shard_updates_it(tmp_path):
    root = str(tmp_path / "ds")
    refs = make_dataset(root, n_shards=1)
    t = shard_table(0)
    t = t.set_column(t.schema.get_field_index("status"), "status",
                     pa.array(["success"] * 2 + ["duplicate"] * (t.num_rows - 2)))
    write_shard(refs[0], t, start_time=0.0)
    publish(root, 1, refs, {"note": "rescored"})
    m = load_manifest(root)
    assert m["totals"]["samples_kept"] == 2 and kept_samples(root).num_rows == 2 and m["version"] == 2


def test_rebuild_adopts_unpublished_shards(tmp_path):
    root = str(tmp_path / "ds")
    for s in range(2):
        write_shard(ShardRef.of(f"{root}/shards", s), shard_table(s), start_time=0.0)
    assert load_manifest(root)["version"] == 0 and kept_samples(root).num_rows == 0
    rebuild(root)
    assert load_manifest(root)["totals"]["shards"] == 2 and kept_samples(root).num_rows == 16


def test_publish_refuses_foreign_or_unfinished_shards(tmp_path):
    other = ShardRef.of(str(tmp_path / "elsewhere"), 0)
    write_shard(other, shard_table(0))
    with pytest.raises(ValueError, match="not in"):
        publish(str(tmp_path / "ds"), 1, [other])
    ref = ShardRef.of(str(tmp_path / "ds" / "shards"), 0)
    write_shard(ref, shard_table(0))
    os.remove(ref.stats)
    with pytest.raises(ValueError, match="not finished"):
        publish(str(tmp_path / "ds"), 1, [ref])
    assert list_shards(str(tmp_path / "ds")) == []


@pytest.mark.unverified("hand-made rows (non-success without an error_message)")
def test_refresh_after_an_in_place_rewrite(tmp_path):
    """``clipcrawl score --threshold`` rewrites shard Parquet files in place: refresh follows."""
    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=2)
    make_dataset(root, n_shards=1, run=2, first=2)
    t = shard_table(1)
    status = ["filtered_clip" if s == "success" and i % 2 else s for i, s in enumerate(t.column("status").to_pylist())]
    t = t.set_column(t.schema.get_field_index("status"), "status", pa.array(status))
    write_shard(ShardRef.of(f"{root}/shards", 1), t, start_time=0.0)
    before = _snapshot(root)
    entries = refresh(root, ["00001"])
    assert [e["run"] for e in entries] == [1] and entries[0]["samples_kept"] == 8 + 4
    assert entries[0]["summary"] == {"note": "test"} and entries[0]["shards"] == ["00000", "00001"]
    after = _snapshot(root)
    assert after["samples/00000.parquet"] == before["samples/00000.parquet"]  # untouched
    assert after["samples/00001.parquet"] != before["samples/00001.parquet"]
    m = load_manifest(root)
    assert m["totals"]["samples_kept"] == 8 + 4 + 8 and kept_samples(root).num_rows == 20
    assert refresh(root) and _snapshot(root) == after  # nothing left to change
