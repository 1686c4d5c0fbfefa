"""``clipcrawl reshard`` carries the embeddings (issue 25 item 4): after ``score --save-embeddings`` the
resharded dataset has one embedding part per new shard whose rows are exactly its shard's rows, in order;
it verifies clean, indexes, searches only its own keys, and its card states the source's rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from clipcrawl.cli import main
from clipcrawl.pipelines.manifest import kept_samples, load_manifest
from tests.verify_helpers import assert_verified


def _emb_rows(out: Path, part: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    keys = pq.read_table(out / "embeddings" / "metadata" / f"metadata_{part}.parquet").column("key").to_pylist()
    img = np.load(out / "embeddings" / "img_emb" / f"img_emb_{part}.npy")
    txt = np.load(out / "embeddings" / "text_emb" / f"text_emb_{part}.npy")
    return keys, img, txt


def _src_vectors(src: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for meta in sorted((src / "embeddings" / "metadata").glob("metadata_*.parquet")):
        part = meta.stem[len("metadata_"):]
        keys, img, txt = _emb_rows(src, part)
        out.update((k, (img[i], txt[i])) for i, k in enumerate(keys))
    return out


def test_reshard_carries_embeddings_index_search_card(demo_dataset, tmp_path, capsys):
    out = tmp_path / "re"
    assert main(["-q", "reshard", str(demo_dataset), "--out", str(out), "-n", "2", "--shuffle", "--seed", "3"]) == 0
    m = load_manifest(str(out))
    shards = sorted(m["shards"])
    assert len(shards) > 2
    src_vec = _src_vectors(Path(demo_dataset))
    kept_src = set(kept_samples(str(demo_dataset)).column("key").to_pylist())
    parts = sorted(p.stem[len("img_emb_"):] for p in (out / "embeddings" / "img_emb").glob("img_emb_*.npy"))
    assert parts == shards  # one part per OUT shard
    out_keys: list[str] = []
    for name in shards:
        shard_keys = [k for k, s in zip(*pq.read_table(out / "shards" / f"{name}.parquet", columns=["key", "status"])
                                        .to_pydict().values()) if s == "success"]
        keys, img, txt = _emb_rows(out, name)
        assert keys == shard_keys and len(keys) == img.shape[0] == txt.shape[0]  # same set, same order
        assert img.dtype == np.float16 and txt.dtype == np.float16
        meta = pq.read_table(out / "embeddings" / "metadata" / f"metadata_{name}.parquet")
        assert set(meta.column("shard").to_pylist()) == {name}
        for i, k in enumerate(keys):  # the source's vectors, unchanged
            assert np.array_equal(img[i], src_vec[k][0]) and np.array_equal(txt[i], src_vec[k][1])
        out_keys += shard_keys
    assert set(out_keys) == kept_src  # kept samples only, every one of them
    assert m["runs"][-1]["summary"]["missing_embeddings"] == 0
    assert_verified(out)

    assert main(["-q", "index", str(out)]) == 0
    assert_verified(out)
    capsys.readouterr()
    assert main(["search", str(out), "a red circle", "-k", "50", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and {h["key"] for h in hits} <= set(out_keys)

    card = tmp_path / "README.md"
    assert main(["-q", "card", str(out), "--out", str(card)]) == 0
    text = card.read_text()
    rules = text.split("## Filtering rules and thresholds", 1)[1].split("##", 1)[0]
    assert "Not recorded" not in rules


def test_reshard_skips_samples_without_embeddings_and_replaces_on_overwrite(demo_dataset, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(demo_dataset, src)
    # one kept sample loses its vectors (scored without --save-embeddings): no embedding row in OUT
    meta_file = sorted((src / "embeddings" / "metadata").glob("metadata_*.parquet"))[0]
    part = meta_file.stem[len("metadata_"):]
    keys, img, txt = _emb_rows(src, part)
    gone = keys[0]
    pq.write_table(pq.read_table(meta_file).slice(1), meta_file)
    np.save(src / "embeddings" / "img_emb" / f"img_emb_{part}.npy", img[1:])
    np.save(src / "embeddings" / "text_emb" / f"text_emb_{part}.npy", txt[1:])
    out = tmp_path / "re"
    assert main(["-q", "reshard", str(src), "--out", str(out), "-n", "3"]) == 0
    m = load_manifest(str(out))
    assert m["runs"][-1]["summary"]["missing_embeddings"] == 1
    all_keys = []
    for name in sorted(m["shards"]):
        shard_keys = [k for k, s in zip(*pq.read_table(out / "shards" / f"{name}.parquet", columns=["key", "status"])
                                        .to_pydict().values()) if s == "success"]
        all_keys += shard_keys
        assert _emb_rows(out, name)[0] == [k for k in shard_keys if k != gone]
    assert gone in all_keys
    assert_verified(out)
    # --overwrite with more samples per shard: the old parts of shards that no longer exist go too
    assert main(["-q", "reshard", str(src), "--out", str(out), "-n", "1000", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "embeddings" / "img_emb").iterdir()) == ["img_emb_00000.npy"]
    assert_verified(out)


def test_issue_repro_score_save_embeddings_then_reshard_then_index(tmp_path):
    """The issue's steps: score --save-embeddings, reshard, index (failed with 'parts differ')."""
    from clipcrawl.base.shardfiles import ShardRef
    from clipcrawl.pipelines.writer import write_shard
    from tests.filters.dedup.helpers import jpeg, table

    root = tmp_path / "d"
    for s in range(3):
        rows = [{"url": f"http://h/{s}/{i}.jpg", "caption": f"picture {s} {i}", "image": jpeg(10 * s + i)}
                for i in range(3)]
        write_shard(ShardRef.of(str(root), s), table(rows))
    assert main(["-q", "score", str(root), "--model", "tiny", "--precision", "fp32", "--threshold", "-1",
                 "--save-embeddings"]) == 0
    out = tmp_path / "re"
    assert main(["-q", "reshard", str(root), "--out", str(out), "-n", "2", "--shuffle"]) == 0
    assert main(["-q", "index", str(out)]) == 0
    assert_verified(out)
    shards = sorted(load_manifest(str(out))["shards"])
    assert len(shards) == 5
    for name in shards:
        keys = pq.read_table(out / "shards" / f"{name}.parquet", columns=["key"]).column("key").to_pylist()
        assert _emb_rows(out, name)[0] == keys
