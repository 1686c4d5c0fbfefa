from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.filters.dedup import DedupIndex, MarkDuplicates, sync_index
from clipcrawl.filters.dedup.columns import fingerprints
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas.config import DedupConfig

from .helpers import jpeg, statuses, table

pytest.importorskip("faiss")


def batch(prefix: str, seeds: list[int], shard: str, emb: np.ndarray | None = None) -> pa.Table:
    rows = [{"url": f"http://{prefix}/{s}.jpg", "caption": f"c{s}", "image": jpeg(s), "shard": shard}
            for s in seeds]
    if emb is not None:
        for r, e in zip(rows, emb):
            r["image_embedding"] = list(e)
            r["clip_model"] = "test-model"
    return table(rows)


def run_shard(ds: str, shard_id: int, t: pa.Table, cfg: DedupConfig | None = None) -> pa.Table:
    stage = MarkDuplicates(cfg or DedupConfig(), ds)
    out = stage(t)
    write_shard(ShardRef.of(f"{ds}/shards", shard_id), out)
    stage.commit()
    return out


def test_cross_run_dedup_against_published(tmp_path):
    ds = str(tmp_path / "ds")
    first = run_shard(ds, 0, batch("a", [1, 2, 3], "00000"))
    assert statuses(first) == ["success"] * 3
    idx = DedupIndex.open(f"{ds}/dedup")
    assert len(idx) == 3 and idx.shards == {"00000"}
    second = run_shard(ds, 1, batch("b", [2, 4], "00001") .slice(0, 2))
    assert statuses(second) == ["duplicate", "success"]
    assert second["duplicate_of"][0].as_py() == first["key"][1].as_py()
    assert second["error_message"][0].as_py().endswith("(published)")
    again = run_shard(ds, 2, batch("a", [1], "00002"))  # the same URL + caption again
    assert again["dedup_method"][0].as_py() == "url"
    assert DedupIndex.open(f"{ds}/dedup").shards == {"00000", "00001", "00002"}


def test_index_rebuilt_from_shards_and_embeddings(tmp_path):
    ds = str(tmp_path / "ds")
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 16)).astype(np.float32)
    first = run_shard(ds, 0, batch("a", [1, 2, 3], "00000", emb))
    # clip-retrieval layout, as the run writes it
    for sub in ("img_emb", "metadata"):
        os.makedirs(f"{ds}/embeddings/{sub}", exist_ok=True)
    np.save(f"{ds}/embeddings/img_emb/img_emb_00000.npy", emb.astype(np.float16))
    pa.parquet.write_table(pa.table({"key": first["key"]}), f"{ds}/embeddings/metadata/metadata_00000.parquet")
    import shutil

    shutil.rmtree(f"{ds}/dedup")
    near = emb[2] + 0.05 * rng.normal(size=16)
    out = run_shard(ds, 1, batch("b", [7], "00001", near[None].astype(np.float32)))
    assert statuses(out) == ["duplicate"] and out["dedup_method"][0].as_py() == "semantic"
    assert out["duplicate_of"][0].as_py() == first["key"][2].as_py()
    idx = DedupIndex.open(f"{ds}/dedup")
    assert len(idx) == 3 and idx.shards == {"00000", "00001"} and idx.data.emb is not None


def test_stale_index_is_rebuilt(tmp_path):
    ds = str(tmp_path / "ds")
    run_shard(ds, 0, batch("a", [1, 2], "00000"))
    run_shard(ds, 1, batch("a", [3], "00001"))
    for ext in (".tar", ".parquet", "_stats.json"):
        os.remove(f"{ds}/shards/00000{ext}")
    idx = DedupIndex.open(f"{ds}/dedup")
    assert sync_index(idx, ds) == 1
    assert idx.shards == {"00001"} and len(DedupIndex.open(f"{ds}/dedup")) == 1


def _child(directory: str, body: str) -> int:
    code = textwrap.dedent(f"""
        import os, signal, numpy as np
        from clipcrawl.filters.dedup import DedupIndex
        from tests.filters.dedup.helpers import jpeg, table
        idx = DedupIndex.open({directory!r})
        t = table([{{"url": f"http://k/{{i}}", "image": jpeg(i), "sha256": f"{{i:064x}}", "shard": "00009"}}
                   for i in range(5)])
        idx.add(t)
    """) + textwrap.dedent(body)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    return subprocess.run([sys.executable, "-c", code], cwd=root).returncode


def test_kill_between_add_and_commit_leaves_index_consistent(tmp_path):
    d = str(tmp_path / "dedup")
    idx = DedupIndex.open(d)
    idx.add(fingerprints(table([{"url": "http://x/1", "sha256": "aa" * 32, "shard": "00000"}])))
    idx.commit()
    assert _child(d, "os.kill(os.getpid(), signal.SIGKILL)") != 0
    again = DedupIndex.open(d)
    assert len(again) == 1 and again.shards == {"00000"}


def test_kill_during_commit_leaves_index_consistent(tmp_path):
    d = str(tmp_path / "dedup")
    idx = DedupIndex.open(d)
    idx.add(fingerprints(table([{"url": "http://x/1", "sha256": "aa" * 32, "shard": "00000"}])))
    idx.commit()
    body = """
        real = os.replace
        def replace(src, dst):
            if dst.endswith("index.json"):
                os.kill(os.getpid(), signal.SIGKILL)  # segment written, manifest not yet
            return real(src, dst)
        os.replace = replace
        idx.commit()
    """
    assert _child(d, body) != 0
    assert len([n for n in os.listdir(d) if n.startswith("seg-")]) >= 2  # orphans are there ...
    again = DedupIndex.open(d)
    assert len(again) == 1 and again.shards == {"00000"}  # ... but not part of the index
    again.add(fingerprints(table([{"url": "http://x/2", "sha256": "bb" * 32, "shard": "00001"}])))
    again.commit()
    segs = {s["name"] for s in again.manifest["segments"]}
    assert {n.split(".")[0] for n in os.listdir(d) if n.startswith("seg-")} == segs  # orphans removed
    assert len(DedupIndex.open(d)) == 2
    assert not [n for n in os.listdir(d) if ".tmp-" in n]


def test_child_commit_works(tmp_path):
    d = str(tmp_path / "dedup")
    assert _child(d, "idx.commit()") == 0
    idx = DedupIndex.open(d)
    assert len(idx) == 5 and idx.data.has_sha256.all() and idx.data.has_phash.all()


def test_segments_merge_like_a_binary_counter_and_memory_index(tmp_path):
    d = str(tmp_path / "dedup")
    idx = DedupIndex.open(d)
    for i in range(7):
        idx.add(fingerprints(table([{"url": f"http://x/{i}", "shard": f"{i:05d}"}])))
        idx.commit()
    assert [s["rows"] for s in idx.manifest["segments"]] == [4, 2, 1]
    again = DedupIndex.open(d)
    assert len(again) == 7 and list(again.data.key) == list(idx.data.key)
    assert len([n for n in os.listdir(d) if n.startswith("seg-")]) == 3
    mem = DedupIndex.open(None)
    mem.add(fingerprints(table([{"url": "http://x/1"}])))
    mem.commit()
    assert len(mem) == 1 and mem.directory is None
    assert io  # keep import for helpers
