"""``clipcrawl serve`` on the demo dataset, through HTTP: clip-retrieval back's endpoints and shapes,
dedup as clip_back does it, the safety flag mapped to punsafe, column filters, safety of the server
(Host check, bounds, 400 with a reason, CORS only when asked). Ground truth comes from the dataset's
files read with pyarrow and numpy, never from the server."""

from __future__ import annotations

import base64
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from .conftest import call

pytestmark = [pytest.mark.slow, pytest.mark.network]


def stored(root) -> tuple[np.ndarray, list[dict]]:
    """The index's vectors (re-read from the embeddings in index order) and metadata rows, by id."""
    import json

    state = json.loads((root / "index" / "index.json").read_text())
    vecs, rows = [], []
    for p in state["parts"]:
        meta = pq.read_table(root / "index" / "metadata" / f"metadata_{p['part']}.parquet").to_pylist()
        emb_keys = pq.read_table(root / "embeddings" / "metadata" / f"metadata_{p['part']}.parquet",
                                 columns=["key"]).column("key").to_pylist()
        emb = np.load(root / "embeddings" / "img_emb" / f"img_emb_{p['part']}.npy").astype(np.float32)
        pos = {k: i for i, k in enumerate(emb_keys)}
        vecs.append(emb[[pos[r["key"]] for r in meta]])
        rows += meta
    return np.concatenate(vecs), rows


@pytest.fixture(scope="module")
def served(indexed_demo, tmp_path_factory):
    """A copy of the indexed demo whose index metadata marks every third row unsafe (punsafe 0.9)."""
    from clipcrawl.pipelines.inspect.serve import ServeServer

    root = tmp_path_factory.mktemp("serve") / "demo"
    shutil.copytree(indexed_demo, root)
    for f in sorted((root / "index" / "metadata").glob("*.parquet")):
        t = pq.read_table(f)
        n = t.num_rows
        unsafe = pa.array([0.9 if i % 3 == 0 else 0.1 for i in range(n)], pa.float32())
        t = t.set_column(t.column_names.index("punsafe"), "punsafe", unsafe)
        pq.write_table(t, f)
    with ServeServer([str(root)], cors=["http://front.example"]) as srv:
        yield srv, root


def knn(srv, **body):
    body = {"modality": "image", "indice_name": "demo", "num_images": 10, **body}
    return call(srv.url + "/knn-service", body)


def test_indices_list_and_shapes(served):
    srv, root = served
    assert srv.url.startswith("http://127.0.0.1:")
    status, _, names = call(srv.url + "/indices-list")
    assert status == 200 and names == ["demo"]
    vecs, rows = stored(root)
    status, _, res = knn(srv, text="a red triangle", num_images=5, num_result_ids=8)
    assert status == 200 and isinstance(res, list) and len(res) == 8
    sims = [r["similarity"] for r in res]
    assert sims == sorted(sims, reverse=True)
    for j, r in enumerate(res):
        assert isinstance(r["id"], int) and isinstance(r["similarity"], float)
        if j < 5:  # clip_back: metadata for the first num_images, id + similarity for the rest
            assert r["url"] == rows[r["id"]]["url"] and r["caption"] == rows[r["id"]]["caption"]
            assert r["key"] == rows[r["id"]]["key"] and "shard" not in r
        else:
            assert set(r) == {"id", "similarity"}
    status, _, meta = call(srv.url + "/metadata", {"ids": [res[0]["id"], res[6]["id"]], "indice_name": "demo"})
    assert status == 200 and [m["id"] for m in meta] == [res[0]["id"], res[6]["id"]]
    assert meta[1]["metadata"]["url"] == rows[res[6]["id"]]["url"]
    assert call(srv.url + "/metadata", {"ids": [], "indice_name": "demo"})[2] == []


def test_embedding_and_image_queries(served):
    srv, root = served
    vecs, rows = stored(root)
    for i in (0, 7, len(rows) - 1):
        status, _, res = knn(srv, embedding_input=vecs[i].tolist(), num_images=3, use_safety_model=False)
        assert status == 200 and res[0]["similarity"] > 0.999
        # itself, or an exact copy (the demo keeps mirrored copies with the same vector)
        assert res[0]["id"] == i or np.dot(vecs[res[0]["id"]], vecs[i]) > 0.999
        exact = vecs @ vecs[i]
        assert abs(res[1]["similarity"] - np.sort(exact)[-2]) < 1e-3
    # the front end's "search by this image" sends a result's URL: answered with its stored vector
    status, _, res = knn(srv, image_url=rows[5]["url"], num_images=3)
    assert status == 200 and res[0]["similarity"] > 0.999 and np.dot(vecs[res[0]["id"]], vecs[5]) > 0.999
    from clipcrawl.base.shardfiles import list_shards, read_images

    images = read_images(list_shards(root)[0])
    key = sorted(images)[0]
    status, _, res = knn(srv, image=base64.b64encode(images[key]).decode(), num_images=3)
    assert status == 200 and key in [r["key"] for r in res] and res[0]["similarity"] > 0.8


def test_deduplicate_as_clip_back(served):
    srv, root = served
    vecs, _ = stored(root)
    q = vecs[0].tolist()
    _, _, full = knn(srv, embedding_input=q, num_images=40, deduplicate=False)
    _, _, dedup = knn(srv, embedding_input=q, num_images=40, deduplicate=True)
    # clip_back: over the same 40 results, link cosine >= 0.94, keep the best-ranked of each group
    ids = [r["id"] for r in full]
    v = vecs[ids] / np.linalg.norm(vecs[ids], axis=1, keepdims=True)
    sim = v @ v.T
    keep, dropped = [], set()
    for a in range(len(ids)):
        if a in dropped:
            continue
        keep.append(ids[a])
        stack = [a]
        while stack:
            x = stack.pop()
            for b in np.flatnonzero(sim[x] >= 0.94):
                if b != a and b not in dropped:
                    dropped.add(int(b))
                    stack.append(int(b))
    assert [r["id"] for r in dedup] == keep
    assert len(dedup) < len(full)  # the demo has near-identical images (mirrored copies, same shapes)


def test_safety_flag_and_filters(served):
    srv, root = served
    vecs, rows = stored(root)
    q = vecs[1].tolist()
    _, _, all_ = knn(srv, embedding_input=q, num_images=30)
    _, _, safe = knn(srv, embedding_input=q, num_images=20, use_safety_model=True)
    _, _, violence = knn(srv, embedding_input=q, num_images=20, use_violence_detector=True)
    assert any(rows[r["id"]]["punsafe"] > 0.5 for r in all_)
    assert len(safe) == 20 and all(rows[r["id"]]["punsafe"] <= 0.5 and r["punsafe"] <= 0.5 for r in safe)
    assert [r["id"] for r in violence] == [r["id"] for r in safe]
    # a column of the index metadata, a range
    lo = float(np.median([r["clip_similarity"] for r in rows]))
    _, _, res = knn(srv, embedding_input=q, num_images=20, filters={"clip_similarity": {"min": lo}})
    assert len(res) == 20 and all(rows[r["id"]]["clip_similarity"] >= lo for r in res)
    # a column only the shard Parquets record (joined by key), by value
    shard = pq.read_table(next(iter(sorted((root / "shards").glob("*.parquet")))), columns=["key", "page_language"])
    langs = {k: v for k, v in zip(shard.column("key").to_pylist(), shard.column("page_language").to_pylist())}
    lang = next(v for v in langs.values() if v)
    status, _, res = knn(srv, text="a blue circle", num_images=5, filters={"page_language": {"prefix": lang[:2]}})
    assert status == 200 and res
    from tests.pipelines.inspect.test_stale_index import statuses

    st = statuses(root)
    lang_of = {}
    for f in sorted((root / "shards").glob("*.parquet")):
        t = pq.read_table(f, columns=["key", "status", "page_language"])
        t = t.filter(pc.equal(t.column("status"), "success"))
        lang_of.update(zip(t.column("key").to_pylist(), t.column("page_language").to_pylist()))
    assert all(st[r["key"]] == "success" and (lang_of[r["key"]] or "").lower().startswith(lang[:2].lower())
               for r in res)
    _, _, none = knn(srv, text="a blue circle", num_images=5, filters={"page_language": "xx-nowhere"})
    assert none == []


@pytest.mark.parametrize("body, reason", [
    (None, "not JSON"),
    ([1, 2], "JSON object"),
    ({"text": "a cat", "modality": "image", "indice_name": "demo"}, "num_images is required"),
    ({"text": "a cat", "modality": "image", "indice_name": "demo", "num_images": 10 ** 6}, "between 1 and"),
    ({"text": "a cat", "modality": "image", "indice_name": "demo", "num_images": "ten"}, "integer"),
    ({"text": "a cat", "modality": "image", "indice_name": "nope", "num_images": 5}, "unknown indice_name"),
    ({"text": "a cat", "modality": "text", "indice_name": "demo", "num_images": 5}, "only 'image'"),
    ({"modality": "image", "indice_name": "demo", "num_images": 5}, "must fill one of"),
    ({"image": "%%%", "modality": "image", "indice_name": "demo", "num_images": 5}, "base64"),
    ({"image": base64.b64encode(b"not an image").decode(), "modality": "image", "indice_name": "demo",
      "num_images": 5}, "cannot decode"),
    ({"image_url": "http://127.0.0.1:1/x.jpg", "modality": "image", "indice_name": "demo", "num_images": 5},
     "does not fetch URLs"),
    ({"embedding_input": [0.1] * 7, "modality": "image", "indice_name": "demo", "num_images": 5}, "dimensions"),
    ({"embedding_input": ["a"], "modality": "image", "indice_name": "demo", "num_images": 5}, "list of numbers"),
    ({"text": "a cat", "modality": "image", "indice_name": "demo", "num_images": 5,
      "filters": {"no_such_column": 1}}, "no column 'no_such_column'"),
    ({"text": "a cat", "modality": "image", "indice_name": "demo", "num_images": 5,
      "filters": {"clip_similarity": {"above": 1}}}, "unknown operator"),
])
def test_bad_requests_are_400_with_a_reason(served, body, reason):
    srv, _ = served
    raw = b"{not json" if body is None else None
    status, _, res = call(srv.url + "/knn-service", body, raw=raw)
    assert status == 400 and reason in res["error"], res


def test_bounds_host_and_cors(served):
    srv, _ = served
    big = b'{"text": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    status, _, res = call(srv.url + "/knn-service", raw=big)
    assert status == 400 and "larger than" in res["error"]
    status, _, res = call(srv.url + "/metadata", {"ids": list(range(10_001)), "indice_name": "demo"})
    assert status == 400 and "at most" in res["error"]
    status, _, res = call(srv.url + "/metadata", {"ids": [10 ** 9], "indice_name": "demo"})
    assert status == 400 and "out of range" in res["error"]
    assert call(srv.url + "/indices-list", host="evil.example")[0] == 403  # DNS rebinding
    _, headers, _ = call(srv.url + "/indices-list")
    assert "Access-Control-Allow-Origin" not in headers
    _, headers, _ = call(srv.url + "/indices-list", headers={"Origin": "http://other.example"})
    assert "Access-Control-Allow-Origin" not in headers
    _, headers, _ = call(srv.url + "/indices-list", headers={"Origin": "http://front.example"})
    assert headers["Access-Control-Allow-Origin"] == "http://front.example"
    status, headers, _ = call(srv.url + "/knn-service", method="OPTIONS",
                              headers={"Origin": "http://front.example", "Access-Control-Request-Method": "POST"})
    assert status == 204 and "POST" in headers["Access-Control-Allow-Methods"]


def test_default_server_has_no_cors(indexed_demo):
    from clipcrawl.pipelines.inspect.serve import ServeServer

    with ServeServer([str(indexed_demo)]) as srv:
        status, headers, _ = call(srv.url + "/knn-service", method="OPTIONS",
                                  headers={"Origin": "http://front.example", "Access-Control-Request-Method": "POST"})
        assert status == 403 and "Access-Control-Allow-Origin" not in headers


def test_browse_answers_the_same_api(indexed_demo):
    """``browse`` mounts the same endpoints over its dataset: the same answers as ``serve``."""
    from clipcrawl.pipelines.inspect.browse import BrowseServer
    from clipcrawl.pipelines.inspect.serve import ServeServer

    body = {"text": "a black square", "modality": "image", "indice_name": "demo", "num_images": 5,
            "deduplicate": True}
    with BrowseServer(indexed_demo, warm=False) as b, ServeServer([str(indexed_demo)]) as s:
        assert call(b.url + "indices-list")[2] == call(s.url + "/indices-list")[2] == ["demo"]
        status, _, via_browse = call(b.url + "knn-service", body)
        assert status == 200 and via_browse == call(s.url + "/knn-service", body)[2] and len(via_browse) >= 3
        ids = {"ids": [r["id"] for r in via_browse], "indice_name": "demo"}
        assert call(b.url + "metadata", ids)[2] == call(s.url + "/metadata", ids)[2]
