from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from clipcrawl.base.shardfiles import ShardRef, iter_tar, list_shards
from clipcrawl.base.storage import read_json, read_parquet
from clipcrawl.filters.dedup import DedupIndex
from clipcrawl.pipelines.manifest import kept_samples, load_manifest, publish
from clipcrawl.pipelines.passes.dedup import dedup_dataset
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas.config import DedupConfig
from tests.verify_helpers import assert_verified

from .helpers import encode, jpeg, picture, table

pytest.importorskip("faiss")


def make_shards(root: str) -> None:
    """Two shards, no pHash/pixel columns: a resized copy across shards, an exact copy within one."""
    big = picture(1, (256, 192))
    s0 = table([
        {"url": "http://a/1", "caption": "one", "image": encode(big, "JPEG", quality=90), "original_width": 256,
         "original_height": 192, "sha256": "11" * 32},
        {"url": "http://a/2", "caption": "two", "image": jpeg(2), "sha256": "22" * 32},
        {"url": "http://a/3", "caption": "bad", "status": "failed_to_download", "error_message": "download: 404"},
    ])
    s1 = table([
        {"url": "http://b/1", "caption": "one small", "image": encode(big.resize((128, 96)), "JPEG", quality=60),
         "original_width": 128, "original_height": 96, "sha256": "33" * 32},
        {"url": "http://b/2", "caption": "two again", "image": jpeg(2), "sha256": "22" * 32},
        {"url": "http://b/3", "caption": "three", "image": jpeg(3), "sha256": "44" * 32},
    ])
    for i, t in enumerate((s0, s1)):
        write_shard(ShardRef.of(root, i), t.drop_columns(["phash", "pixel_hash"]) if "phash" in t.column_names else t)


def test_pass_over_a_download_folder(tmp_path):
    root = str(tmp_path / "out")
    make_shards(root)
    r = dedup_dataset(root, DedupConfig(semantic=False))
    assert r.shards == 2 and r.rows == 6 and r.considered == 5
    assert r.counts == {"sha256": 1, "phash": 1} and r.rewritten == 2
    t1 = read_parquet(f"{root}/00001.parquet")
    assert t1["status"].to_pylist() == ["duplicate", "duplicate", "success"]
    keys0 = read_parquet(f"{root}/00000.parquet")["key"].to_pylist()
    assert t1["duplicate_of"].to_pylist()[:2] == [keys0[0], keys0[1]]
    assert read_parquet(f"{root}/00000.parquet")["phash"].null_count == 1  # only the failed row
    assert [s["__key__"] for s in iter_tar(f"{root}/00001.tar")] == [t1["key"][2].as_py()]
    stats = read_json(f"{root}/00001_stats.json")
    assert stats["successes"] == 1 and stats["duplicate"] == 2
    again = dedup_dataset(root, DedupConfig(semantic=False))
    assert again.marked == 0 and again.rewritten == 0
    assert_verified(root)


@pytest.mark.unverified("--keep-tars leaves dropped samples in the tar by design")
def test_dataset_is_republished_and_index_rebuilt(tmp_path):
    ds = str(tmp_path / "ds")
    make_shards(f"{ds}/shards")
    publish(ds, 1, list_shards(ds))
    assert load_manifest(ds)["totals"]["samples_kept"] == 5
    r = dedup_dataset(ds, DedupConfig(semantic=False), keep_tars=True)
    assert r.marked == 2
    assert load_manifest(ds)["totals"]["samples_kept"] == 3 and kept_samples(ds).num_rows == 3
    assert len(list(iter_tar(f"{ds}/shards/00001.tar"))) == 3  # --keep-tars
    idx = DedupIndex.open(f"{ds}/dedup")
    assert len(idx) == 3 and idx.shards == {"00000", "00001"}


def test_cli_dry_run_exclude_near_and_counts(tmp_path):
    root = str(tmp_path / "out")
    make_shards(root)
    evals = tmp_path / "eval"
    evals.mkdir()
    (evals / "three.png").write_bytes(encode(picture(3), "PNG"))
    before = read_parquet(f"{root}/00001.parquet")
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "dedup", root, "--no-semantic", "--exclude-near",
                        str(evals), "--phash-distance", "6", "--dry-run"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "duplicates marked: 3 (eval_set 1, phash 1, sha256 1)" in r.stdout
    assert read_parquet(f"{root}/00001.parquet").equals(before)
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "dedup", str(tmp_path / "nothing")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no finished shards" in r.stderr


@pytest.mark.slow
def test_semantic_with_computed_tiny_embeddings(tmp_path):
    pytest.importorskip("open_clip")
    root = str(tmp_path / "out")
    make_shards(root)
    r = dedup_dataset(root, DedupConfig(phash=False, pixels=False, sha256=False, semantic_threshold=0.97),
                      model="tiny", pretrained=None, device="cpu", dry_run=True, allow_tiny=True)
    assert r.semantic.startswith("embeddings of clipcrawl-tiny")
    assert r.counts.get("semantic", 0) >= 1  # the exact copy (jpeg(2)) has cosine 1
    assert np.isfinite(r.considered) and pa is not None


def test_semantic_report_names_the_real_embeddings_path(tmp_path):
    """Issue 25 item 9b: no literal DIR/embeddings in what the user reads."""
    root = str(tmp_path / "out")
    make_shards(root)
    r = dedup_dataset(root, DedupConfig(), dry_run=True)
    assert f"{root}/embeddings" in r.semantic and "DIR/" not in r.semantic
    assert "--model" in r.semantic and "--no-semantic" in r.semantic


def test_tiny_embeddings_hint_names_the_real_flag(caplog):
    """Issue 25 item 9b: the skip message names --allow-tiny (and the run config key), which work."""
    from clipcrawl.filters.dedup import MarkDuplicates

    from .helpers import table

    e = np.ones(8, np.float32)
    rows = [{"url": f"http://a/{i}", "image_embedding": list(e), "clip_model": "clipcrawl-tiny"} for i in range(2)]
    cfg = dict(index=False, sha256=False, pixels=False, phash=False)
    with caplog.at_level("INFO", logger="clipcrawl"):
        out = MarkDuplicates(DedupConfig(**cfg))(table(rows))
    assert out["status"].to_pylist() == ["success", "success"]
    assert "--allow-tiny" in caplog.text and "semantic_tiny: true" in caplog.text
    out = MarkDuplicates(DedupConfig(**cfg, semantic_tiny=True))(table(rows))
    assert out["status"].to_pylist() == ["success", "duplicate"]


def test_allow_tiny_also_covers_stored_tiny_embeddings(tmp_path, monkeypatch):
    """--allow-tiny without --model (embeddings already in DATASET/embeddings) sets semantic_tiny."""
    import clipcrawl.pipelines.passes.dedup as mod

    seen = []
    monkeypatch.setattr(mod, "_dedup", lambda layout, refs, config, *a: seen.append(config) or mod.DedupReport())
    root = str(tmp_path / "out")
    make_shards(root)
    dedup_dataset(root, DedupConfig(), dry_run=True, allow_tiny=True)
    dedup_dataset(root, DedupConfig(), dry_run=True)
    assert [c.semantic_tiny for c in seen] == [True, False]
