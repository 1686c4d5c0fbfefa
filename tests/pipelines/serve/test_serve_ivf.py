"""``serve`` over an IVF index opened memory-mapped (the larger-than-memory path bench/serve_bench.py
measures at 5M): small synthetic index in clipcrawl's layout, metadata in many row groups. Recall
against exact search, dedup through ``search_and_reconstruct`` (a mapped IVF index has no id map),
filters that need widening, metadata by id across row groups and files."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .conftest import call

D, PARTS, PER = 32, 3, 1000


@pytest.fixture(scope="module")
def ivf_dataset(tmp_path_factory):
    import faiss

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, D)).astype(np.float32)
    x = centres[rng.integers(0, 40, PARTS * PER)] + 0.6 * rng.standard_normal((PARTS * PER, D)).astype(np.float32)
    x[1:6] = x[0]  # five exact copies of row 0 (dedup keeps the first)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    root = tmp_path_factory.mktemp("ivf") / "big"
    folder = root / "index"
    (folder / "metadata").mkdir(parents=True)
    index = faiss.index_factory(D, "IVF16,SQ8", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    faiss.write_index(index, str(folder / "image.index"))
    parts = []
    for j in range(PARTS):
        ids = range(j * PER, (j + 1) * PER)
        pq.write_table(pa.table({"key": [f"k{i:05d}" for i in ids], "url": [f"http://x/{i}.jpg" for i in ids],
                                 "caption": [f"c{i}" for i in ids],
                                 "punsafe": pa.array([0.9 if i % 10 else 0.1 for i in ids], pa.float32())}),
                       folder / "metadata" / f"metadata_{j:05d}.parquet", row_group_size=64)
        parts.append({"part": f"{j:05d}", "rows": PER, "start": j * PER, "embedding_rows": PER})
    (folder / "index.json").write_text(json.dumps({
        "format": "clipcrawl-index", "version": 2, "kind": "ivfsq8", "factory": "IVF16,SQ8", "dim": D,
        "ntotal": PARTS * PER, "nprobe": 16, "parts": parts, "shards": None}))
    return root, x


def test_mapped_ivf(ivf_dataset):
    import faiss

    from clipcrawl.pipelines.inspect.serve import ServedIndex, ServeServer

    root, x = ivf_dataset
    s = ServedIndex(root)
    inv = faiss.downcast_InvertedLists(faiss.extract_index_ivf(s.index).invlists)
    assert isinstance(inv, faiss.OnDiskInvertedLists)  # the lists are mapped, not read into memory
    rng = np.random.default_rng(1)
    recall = []
    for i in rng.choice(len(x), 30, replace=False):
        q = x[i] + 0.05 * rng.standard_normal(D).astype(np.float32)
        _, ids = s.knn(q[None], 10)
        recall.append(len(set(ids.tolist()) & set(np.argsort(-(x @ q))[:10].tolist())) / 10)
    assert np.mean(recall) >= 0.9
    sims, ids = s.knn(x[0][None], 20)
    assert set(ids[:6].tolist()) == set(range(6))
    _, dd = s.knn(x[0][None], 20, deduplicate=True)
    assert len(dd) == 15 and set(dd.tolist()) & set(range(6)) == {int(ids[0])}
    # punsafe > 0.5 on 9 rows in 10: the safe search widens until 25 pass
    _, safe = s.knn(x[7][None], 25, safe=True)
    assert len(safe) == 25 and all(i % 10 == 0 for i in safe.tolist())
    rows = s.metadata([2999, 0, 1500, 63, 64])
    assert [r["key"] for r in rows] == ["k02999", "k00000", "k01500", "k00063", "k00064"]
    with ServeServer([str(root)]) as srv:
        status, _, res = call(srv.url + "/knn-service", {"embedding_input": x[100].tolist(), "indice_name": "big",
                                                         "modality": "image", "num_images": 5, "deduplicate": True})
        assert status == 200 and res[0]["key"] == "k00100" and res[0]["url"] == "http://x/100.jpg"
        status, _, res = call(srv.url + "/knn-service", {"embedding_input": x[100].tolist(), "indice_name": "big",
                                                         "modality": "image", "num_images": 5,
                                                         "filters": {"caption": ["c7", "c2000"]}})
        assert status == 200 and sorted(r["caption"] for r in res) == ["c2000", "c7"]
