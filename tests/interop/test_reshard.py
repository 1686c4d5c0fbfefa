"""``clipcrawl reshard``: kept samples of all shards, in order, into deterministic shards of N."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clipcrawl.base.shardfiles import ShardRef, iter_tar, list_shards, read_images
from clipcrawl.cli import main
from clipcrawl.pipelines.manifest import kept_samples, load_manifest
from clipcrawl.pipelines.passes.reshard import reshard
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas import SAMPLES, check
from tests.verify_helpers import assert_verified

from .fixtures import make_dataset, shard_table


def _digests(folder: Path, suffixes=(".tar", ".parquet")) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.suffix in suffixes}


def test_reshard_in_order(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=3, n=12, png_every=4)
    res = reshard(root, samples_per_shard=10)
    assert res.out == f"{root}/resharded" and res.samples == 24 and res.input_shards == 3
    assert [r.name for r in res.shards] == ["00000", "00001", "00002"]
    src, out = kept_samples(root), kept_samples(res.out)
    assert out.column("key").to_pylist() == src.column("key").to_pylist()  # same samples, same order
    assert out.column("shard").to_pylist() == ["00000"] * 10 + ["00001"] * 10 + ["00002"] * 4
    check(out, SAMPLES)
    # same image bytes, png members stay png; the json carries the new shard id
    old = {k: v for ref in list_shards(root) for k, v in read_images(ref).items()}
    new = {}
    for ref in res.shards:
        for s in iter_tar(ref.tar):
            assert set(s) - {"__key__"} in ({"jpg", "txt", "json"}, {"png", "txt", "json"})
            assert json.loads(s["json"])["shard"] == ref.name and s["txt"].decode().startswith("a ")
            new[s["__key__"]] = s.get("jpg") or s["png"]
    assert new == old
    stats = json.loads(Path(res.shards[0].stats).read_text())
    assert stats["count"] == stats["successes"] == 10 and stats["resharded_from"] == root
    m = load_manifest(res.out)
    assert m["totals"]["samples_kept"] == 24 and m["runs"][0]["summary"]["derived_from"] == root
    assert_verified(res.out)


def test_reshard_is_deterministic_and_shuffles_with_seed(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=3, n=12)
    a = reshard(root, str(tmp_path / "a"), 7, shuffle=True, seed=1)
    reshard(root, str(tmp_path / "b"), 7, shuffle=True, seed=1, workers=3)
    c = reshard(root, str(tmp_path / "c"), 7, shuffle=True, seed=2)
    da, db = _digests(tmp_path / "a" / "shards"), _digests(tmp_path / "b" / "shards")
    assert da == db and len(da) == 8  # byte-identical tars and Parquet files
    assert _digests(tmp_path / "a" / "samples") == _digests(tmp_path / "b" / "samples")
    keys = [kept_samples(r.out).column("key").to_pylist() for r in (a, c)]
    src = kept_samples(root).column("key").to_pylist()
    assert keys[0] != src and keys[0] != keys[1] and sorted(keys[0]) == sorted(src) == sorted(keys[1])


def test_reshard_only_reads_published_snapshot_and_skips_dropped(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=2)
    write_shard(ShardRef.of(f"{root}/shards", 2), shard_table(2), start_time=0.0)  # not published yet
    res = reshard(root, samples_per_shard=100)
    assert res.input_shards == 2 and res.samples == 16 and len(res.shards) == 1
    t = pq.read_table(res.shards[0].parquet)
    assert set(t.column("status").to_pylist()) == {"success"}


def test_reshard_plain_download_dir(tmp_path):
    """A plain download output (shards directly in DIR, no manifest) is read too."""
    for s in range(2):
        write_shard(ShardRef.of(str(tmp_path / "dl"), s), shard_table(s), start_time=0.0)
    res = reshard(str(tmp_path / "dl"), samples_per_shard=5)
    assert res.samples == 16 and len(res.shards) == 4 and res.out == f"{tmp_path}/dl/resharded"
    assert_verified(res.out)


def test_cli_reshard_exit_codes_and_overwrite(tmp_path, capsys):
    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=2)
    out = str(tmp_path / "out")
    assert main(["reshard", root, "--out", out, "--samples-per-shard", "5"]) == 0
    assert [r.name for r in list_shards(out)] == ["00000", "00001", "00002", "00003"]
    assert main(["reshard", root, "--out", out, "-n", "8"]) == 2  # would mix two reshards
    assert "--overwrite" in capsys.readouterr().err
    assert main(["reshard", root, "--out", out, "-n", "8", "--overwrite"]) == 0
    assert [r.name for r in list_shards(out, done_only=False)] == ["00000", "00001"]  # stale shards removed
    m = load_manifest(out)
    assert m["totals"] == {"runs": 1, "shards": 2, "samples_total": 16, "samples_kept": 16} and m["version"] == 1
    assert sorted(p.name for p in (tmp_path / "out" / "samples").iterdir()) == ["00000.parquet", "00001.parquet"]
    assert main(["reshard", str(tmp_path / "nothing"), "-n", "8"]) == 2
    assert main(["reshard", root, "--out", root, "-n", "8"]) == 2
    assert main(["reshard", root, "--out", out, "--storage-options", "{bad"]) == 2
    assert_verified(out)


def test_reshard_refuses_tarless_shards(tmp_path):
    write_shard(ShardRef.of(str(tmp_path / "p"), 0), shard_table(0), output_format="parquet")
    with pytest.raises(ValueError, match="webdataset"):
        reshard(str(tmp_path / "p"), samples_per_shard=4)
