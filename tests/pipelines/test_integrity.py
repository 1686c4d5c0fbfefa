"""Passes never claim a sample that is not in its tar, never delete data with the test model, and
report a broken shard by name while processing the others (issue: dataset integrity)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clipcrawl.base.shardfiles import ShardRef, index_tar
from clipcrawl.base.storage import read_json, read_parquet
from clipcrawl.cli import main
from clipcrawl.pipelines.writer import write_shard
from tests.filters.dedup.helpers import jpeg, table

pytest.importorskip("open_clip")
TINY = ["--model", "tiny", "--precision", "fp32"]


def _dataset(root: Path, shards: int = 3) -> str:
    """``shards`` finished shards of 4 rows: 3 kept with images, 1 an earlier CLIP threshold filtered."""
    for s in range(shards):
        rows = [{"url": f"http://h/{s}/{i}.jpg", "caption": f"picture {s} {i}", "image": jpeg(10 * s + i)}
                for i in range(3)]
        rows.append({"url": f"http://h/{s}/f.jpg", "caption": "filtered", "status": "filtered_clip",
                     "error_message": "clip: similarity 0.1 < 0.2", "clip_similarity": 0.1})
        write_shard(ShardRef.of(str(root), s), table(rows))
    return str(root)


def _tar_keys(root: str, shard: int) -> set[str]:
    return set(index_tar(ShardRef.of(root, shard).tar))


def _success_keys(root: str, shard: int) -> set[str]:
    t = read_parquet(ShardRef.of(root, shard).parquet)
    return {k for k, s in zip(t["key"].to_pylist(), t["status"].to_pylist()) if s == "success"}


def _consistent(root: str, shards: int = 3) -> None:
    for s in range(shards):
        assert _tar_keys(root, s) == _success_keys(root, s), f"shard {s}: tar and Parquet disagree"
        stats = read_json(ShardRef.of(root, s).stats)
        assert stats["successes"] == len(_success_keys(root, s))


def test_score_without_threshold_keeps_filtered_rows(tmp_path):
    root = _dataset(tmp_path / "d")
    for extra in ([], ["--rescore"]):
        assert main(["score", root, *TINY, *extra]) == 0
        for s in range(3):
            t = read_parquet(ShardRef.of(root, s).parquet)
            assert t["status"].to_pylist() == ["success"] * 3 + ["filtered_clip"]
            assert t["error_message"][3].as_py() == "clip: similarity 0.1 < 0.2"
        _consistent(root)


def test_rethreshold_moves_images_and_never_claims_a_missing_one(tmp_path):
    root = _dataset(tmp_path / "d", shards=1)
    assert main(["score", root, *TINY, "--threshold", "1.0"]) == 0  # everything filtered
    assert _success_keys(root, 0) == set() and _tar_keys(root, 0) == set()
    assert len(index_tar(f"{root}/dropped/00000.tar")) == 3  # their images wait in dropped/
    _consistent(root, 1)
    assert main(["score", root, *TINY, "--threshold", "-1"]) == 0  # everything passes again
    t = read_parquet(ShardRef.of(root, 0).parquet)
    assert t["status"].to_pylist() == ["success"] * 3 + ["filtered_clip"]  # no image anywhere: stays filtered
    _consistent(root, 1)


def test_dedup_refuses_the_tiny_model_for_semantic_dedup(tmp_path, capsys):
    root = _dataset(tmp_path / "d", shards=1)
    before = Path(ShardRef.of(root, 0).parquet).read_bytes()
    assert main(["dedup", root, "--model", "tiny"]) == 2
    assert "tiny CLIP is a test model" in capsys.readouterr().err
    assert Path(ShardRef.of(root, 0).parquet).read_bytes() == before
    assert main(["dedup", root, "--model", "tiny", "--allow-tiny", "--semantic-threshold", "0.9999"]) == 0


@pytest.mark.unverified("a shard is broken on purpose")
@pytest.mark.parametrize("broken", ["parquet", "tar"])
@pytest.mark.parametrize("command", ["score", "dedup", "reshard"])
def test_a_broken_shard_is_named_and_the_others_are_processed(tmp_path, capsys, command, broken):
    root = _dataset(tmp_path / "d")
    bad = ShardRef.of(root, 1)
    if broken == "parquet":
        Path(bad.parquet).write_bytes(b"this is not parquet" * 10)
    else:
        data = Path(bad.tar).read_bytes()
        Path(bad.tar).write_bytes(data[: len(data) // 2])
    files = {p: p.read_bytes() for p in Path(root).glob("00001*")}
    args = {"score": ["score", root, *TINY, "--threshold", "-1", "--save-embeddings"],
            "dedup": ["dedup", root, "--no-semantic"],
            "reshard": ["reshard", root, "-n", "2", "--out", str(tmp_path / "re")]}[command]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert f"00001.{broken}" in err or "shard 00001" in err
    assert {p: p.read_bytes() for p in Path(root).glob("00001*")} == files  # nothing rewritten from partial data
    if command == "score":
        for s in (0, 2):
            sims = read_parquet(ShardRef.of(root, s).parquet)["clip_similarity"].to_pylist()
            assert None not in sims[:3]  # the other shards were scored
    if command == "reshard":
        assert read_json(str(tmp_path / "re" / "manifest.json"))["totals"]["samples_kept"] == 6


def test_copy_of_a_dataset_scores_the_same(tmp_path):
    root = _dataset(tmp_path / "d", shards=1)
    shutil.copytree(root, tmp_path / "e")
    assert main(["score", root, *TINY]) == 0 and main(["score", str(tmp_path / "e"), *TINY]) == 0
    a = read_parquet(ShardRef.of(root, 0).parquet)["clip_similarity"].to_pylist()
    assert a == read_parquet(ShardRef.of(str(tmp_path / "e"), 0).parquet)["clip_similarity"].to_pylist()


def test_passes_hold_the_dataset_lock_and_clear_temp_files(tmp_path, capsys):
    from clipcrawl.pipelines.lock import RunLock

    root = _dataset(tmp_path / "d", shards=1)
    with RunLock(root):  # a run (or another pass) holds the dataset
        for args in (["score", root, *TINY], ["dedup", root, "--no-semantic"]):
            assert main(args) == 3
    assert "locked" in capsys.readouterr().err
    left = Path(root) / ".00000.parquet.tmp-deadbeef"  # what a killed writer leaves
    left.write_bytes(b"partial")
    assert main(["dedup", root, "--no-semantic"]) == 0
    assert not left.exists()
    _consistent(root, 1)


def test_score_recut_uses_the_model_the_dataset_records(tmp_path, capsys, monkeypatch):
    """Issue 25 #5: ``score DIR --top-fraction`` without --model re-cuts with the dataset's (tiny) model,
    never the default ViT-B-32 (which would be downloaded)."""
    import clipcrawl.filters.clip.model as clip_model

    root = _dataset(tmp_path / "d", shards=2)
    assert main(["score", root, *TINY]) == 0
    real = clip_model.load_clip

    def only_tiny(model, *a, **k):
        assert model in clip_model.TINY_ALIASES or model == "tiny", f"tried to load {model}"
        return real(model, *a, **k)

    monkeypatch.setattr(clip_model, "load_clip", only_tiny)
    capsys.readouterr()
    assert main(["score", root, "--top-fraction", "0.5", "--precision", "fp32"]) == 0
    assert "using the model the dataset records: clipcrawl-tiny" in capsys.readouterr().err
    models = {m for s in range(2) for m in read_parquet(ShardRef.of(root, s).parquet)["clip_model"].to_pylist() if m}
    assert models == {clip_model.TINY_NAME}
    _consistent(root, 2)


def test_stats_reports_the_threshold_score_applied(tmp_path, capsys):
    """Issue 25 #8b: ``stats`` after ``score --threshold`` shows that threshold, not "unknown"."""
    import json

    root = _dataset(tmp_path / "d", shards=1)
    assert main(["score", root, *TINY, "--threshold", "1.0"]) == 0
    capsys.readouterr()
    assert main(["stats", root, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threshold"] == 1.0 and out["threshold_source"]
