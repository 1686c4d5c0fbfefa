"""``clipcrawl index`` on synthetic embeddings written by the real writer: exact vs IVF-PQ choice,
key mapping, incremental appends, rebuilds on change, clip-retrieval's back-end layout."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.filters.clip.embeddings import write_embeddings
from clipcrawl.filters.clip.score import embedding_array
from clipcrawl.pipelines.inspect.index import build_index, choose_spec, read_index
from clipcrawl.pipelines.inspect.search import Searcher

D = 32


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def add_part(root, part: int, n: int, seed: int) -> np.ndarray:
    """One shard's embeddings (``DATASET/embeddings``, the writer scoring uses); returns the vectors."""
    rng = np.random.default_rng(seed)
    img = _unit(rng.standard_normal((n, D)))
    keys = [f"k{part:05d}_{i:04d}" for i in range(n)]
    t = pa.table({"key": keys, "caption": [f"caption {k}" for k in keys], "url": [f"https://h/{k}.jpg" for k in keys],
                  "status": ["success"] * n, "clip_similarity": rng.random(n).astype(np.float32),
                  "image_embedding": embedding_array(img, np.ones(n, bool)),
                  "text_embedding": embedding_array(img, np.ones(n, bool))})
    write_embeddings(t, str(root / "embeddings"), f"{part:05d}")
    return img.astype(np.float16).astype(np.float32)


def test_choose_spec():
    assert choose_spec(1000, 512).kind == "flat"
    big = choose_spec(1_000_000, 512)
    assert big.kind == "ivfpq" and big.factory == "IVF4096,PQ64x4fs,Refine(SQfp16)" and big.nprobe
    assert choose_spec(10, 512, kind="ivfpq").factory.startswith("IVF16,")
    with pytest.raises(ValueError):
        choose_spec(10, 512, kind="hnsw")


def test_flat_incremental_and_layout(tmp_path):
    vecs = [add_part(tmp_path, 0, 50, 0), add_part(tmp_path, 1, 30, 1)]
    rep = build_index(str(tmp_path))
    assert (rep.action, rep.kind, rep.ntotal, rep.added) == ("built", "flat", 80, 80)
    assert build_index(str(tmp_path)).action == "unchanged"
    vecs.append(add_part(tmp_path, 2, 20, 2))
    rep = build_index(str(tmp_path))
    assert (rep.action, rep.ntotal, rep.added) == ("appended", 100, 20)
    idx = tmp_path / "index"
    # clip-retrieval's back end: image.index + metadata/*.parquet in id order
    index = faiss.read_index(str(idx / "image.index"))
    meta = pa.concat_tables([pq.read_table(f) for f in sorted((idx / "metadata").glob("*.parquet"))])
    assert index.ntotal == meta.num_rows == 100
    allv = np.concatenate(vecs)
    _, ids = index.search(allv[[0, 60, 99]], 1)
    assert [meta.column("image_path")[int(i)].as_py() for i in ids[:, 0]] == ["k00000_0000", "k00001_0010",
                                                                             "k00002_0019"]
    state = json.loads((idx / "index.json").read_text())
    assert [p["part"] for p in state["parts"]] == ["00000", "00001", "00002"]
    assert [p["start"] for p in state["parts"]] == [0, 50, 80]
    # exact: the search equals brute force
    s = Searcher(tmp_path)
    q = _unit(np.random.default_rng(9).standard_normal((1, D)))
    truth = np.argsort(-(allv @ q[0]))[:5]
    hits = s.search(q, 5)
    assert [h["id"] for h in hits] == truth.tolist()
    assert hits[0]["key"] == meta.column("key")[int(truth[0])].as_py()
    assert hits[0]["similarity"] == pytest.approx(float(allv[truth[0]] @ q[0]), abs=1e-5)
    assert s.vector_of("k00001_0010") == pytest.approx(allv[60:61])
    # a filter applies before k: only odd ids
    odd = s.search(q, 5, keep=lambda ids: ids % 2 == 1)
    assert len(odd) == 5 and all(h["id"] % 2 for h in odd)


def test_rescored_part_rebuilds(tmp_path):
    add_part(tmp_path, 0, 40, 0)
    add_part(tmp_path, 1, 40, 1)
    build_index(str(tmp_path))
    add_part(tmp_path, 0, 45, 5)  # part 0 re-scored: different rows
    rep = build_index(str(tmp_path))
    assert (rep.action, rep.ntotal) == ("built", 85)
    # an interrupted write (image.index and index.json disagree) is detected and rebuilt
    state = json.loads((tmp_path / "index" / "index.json").read_text())
    state["ntotal"] = 3
    (tmp_path / "index" / "index.json").write_text(json.dumps(state))
    assert build_index(str(tmp_path)).action == "built"


def test_ivfpq_append_and_recall(tmp_path):
    rng = np.random.default_rng(0)
    centers = _unit(rng.standard_normal((20, D)))
    parts = []
    for p in range(3):  # clustered vectors so there are neighbours to find
        img = _unit(centers[rng.integers(0, 20, 1500)] + 0.3 * rng.standard_normal((1500, D)) / np.sqrt(D))
        keys = [f"p{p}_{i}" for i in range(len(img))]
        t = pa.table({"key": keys, "caption": keys, "url": keys, "status": ["success"] * len(img),
                      "image_embedding": embedding_array(img, np.ones(len(img), bool)),
                      "text_embedding": embedding_array(img, np.ones(len(img), bool))})
        write_embeddings(t, str(tmp_path / "embeddings"), f"{p:05d}")
        parts.append(img.astype(np.float16).astype(np.float32))
        rep = build_index(str(tmp_path), exact_max=1000)
        assert rep.kind == "ivfpq" and rep.action == ("built" if p == 0 else "appended")
    allv = np.concatenate(parts)
    index = read_index(str(tmp_path / "index"))
    assert index.ntotal == len(allv) and faiss.extract_index_ivf(index).nprobe > 1  # serialized with nprobe
    q = allv[rng.choice(len(allv), 50, replace=False)] + 0.01
    truth = np.argsort(-(q @ allv.T), axis=1)[:, :10]
    s = Searcher(tmp_path)
    got = [[h["id"] for h in s.search(v[None], 10)] for v in q]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)])
    assert recall >= 0.9, recall
    assert build_index(str(tmp_path), exact_max=1000, kind="flat").kind == "flat"  # a kind change rebuilds


def test_no_embeddings(tmp_path):
    from clipcrawl.cli import main

    assert main(["-q", "index", str(tmp_path)]) == 2


def test_remote_dataset(tmp_path):
    """Any fsspec URL works (memory:// stands in for s3://): build, append, search."""
    import fsspec

    root = "memory://inspect-remote/ds"

    class Remote:  # add_part writes under root / "embeddings"
        def __truediv__(self, other):
            return f"{root}/{other}"

    try:
        a = add_part(Remote(), 0, 30, 0)
        assert build_index(root).action == "built"
        add_part(Remote(), 1, 10, 1)
        rep = build_index(root)
        assert (rep.action, rep.ntotal) == ("appended", 40)
        hits = Searcher(root).search(a[3:4], 1)
        assert hits[0]["key"] == "k00000_0003"
    finally:
        fsspec.filesystem("memory").rm("/inspect-remote", recursive=True)


def _statuses(root, shard: int, statuses: dict[str, str]) -> None:
    """A finished shard holding only key and status (what index and search read of the shards)."""
    (root / "shards").mkdir(exist_ok=True)
    pq.write_table(pa.table({"key": list(statuses), "status": list(statuses.values())}),
                   root / "shards" / f"{shard:05d}.parquet")
    (root / "shards" / f"{shard:05d}_stats.json").write_text("{}")


@pytest.mark.unverified("synthetic shards: a key and a status per row, no samples")
def test_index_keeps_the_success_rows_and_refills(tmp_path):
    """Vectors of rows that are not success are left out; a status change refills the index (an IVF
    index keeps its training); a stale index is filtered at query time; vector_of maps through."""
    rng = np.random.default_rng(0)
    centers = _unit(rng.standard_normal((10, D)))
    vecs = {}
    for p in range(3):
        img = _unit(centers[rng.integers(0, 10, 600)] + 0.3 * rng.standard_normal((600, D)) / np.sqrt(D))
        keys = [f"p{p}_{i}" for i in range(len(img))]
        t = pa.table({"key": keys, "caption": keys, "url": keys, "status": ["success"] * len(img),
                      "image_embedding": embedding_array(img, np.ones(len(img), bool)),
                      "text_embedding": embedding_array(img, np.ones(len(img), bool))})
        write_embeddings(t, str(tmp_path / "embeddings"), f"{p:05d}")
        vecs.update(zip(keys, img.astype(np.float16).astype(np.float32)))
    keys = list(vecs)
    status = {k: ("success" if i % 3 else "filtered_clip") for i, k in enumerate(keys)}
    status["extra"] = "success"  # a success row without a vector: reported
    for p in range(3):
        _statuses(tmp_path, p, {k: s for k, s in status.items() if k.startswith(f"p{p}_") or (p == 2 and k == "extra")})
    rep = build_index(str(tmp_path), kind="ivfpq", exact_max=100)
    kept = [k for k in keys if status[k] == "success"]
    assert (rep.action, rep.ntotal, rep.dropped, rep.missing, rep.missing_examples) == (
        "built", len(kept), len(keys) - len(kept), 1, ["extra"])
    meta = pa.concat_tables([pq.read_table(tmp_path / "index" / "metadata" / f"metadata_{p:05d}.parquet")
                             for p in range(3)])
    assert meta.column("key").to_pylist() == kept  # id order = the kept rows in part order
    trained = json.loads((tmp_path / "index" / "index.json").read_text())["trained_on"]

    # a later pass drops all of part 1 and one more row of part 2: the index is stale
    for k in keys:
        if k.startswith("p1_") or k == "p2_1":
            status[k] = "duplicate"
    for p in (1, 2):
        _statuses(tmp_path, p, {k: s for k, s in status.items() if k.startswith(f"p{p}_")})
    s = Searcher(tmp_path)
    assert s.live is not None and s.searchable == sum(status[k] == "success" for k in keys)
    for k in ("p1_1", "p2_1", "p0_1"):
        hits = s.search(vecs[k][None], 10)
        assert len(hits) == 10 and all(status[h["key"]] == "success" for h in hits)
    assert s.vector_of("p2_5") == pytest.approx(vecs["p2_5"][None])

    rep = build_index(str(tmp_path), kind="ivfpq", exact_max=100)
    kept = [k for k in keys if status[k] == "success"]
    assert (rep.action, rep.ntotal, rep.missing) == ("refilled", len(kept), 0)
    state = json.loads((tmp_path / "index" / "index.json").read_text())
    assert state["trained_on"] == trained and [p["rows"] for p in state["parts"]][1] == 0
    assert state["parts"][1]["start"] == state["parts"][2]["start"]  # an empty part
    s = Searcher(tmp_path)
    assert s.live is None and len(s) == s.searchable == len(kept)  # the index matches the shards
    assert s.vector_of("p2_5") == pytest.approx(vecs["p2_5"][None])  # the row after the empty part
    assert s.vector_of("p0_2") == pytest.approx(vecs["p0_2"][None])
    assert s.vector_of("p2_1") is None
    hits = s.search(vecs["p2_5"][None], 5)
    assert hits[0]["key"] == "p2_5" and all(status[h["key"]] == "success" for h in hits)
    assert build_index(str(tmp_path), kind="ivfpq", exact_max=100).action == "unchanged"
