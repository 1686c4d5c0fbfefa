"""The real ``clip_retrieval.clip_client.ClipClient`` (clip-retrieval 2.45, in its own venv: it pins
numpy<2 / pyarrow<16) against ``clipcrawl serve`` on the demo dataset: by text, by image, by
embedding, with deduplicate and the safety flag; ``/indices-list`` and ``/metadata`` checked against
the shapes clip_back returns. Runs when the venv exists (``CLIPCRAWL_CLIP_RETRIEVAL_BIN``: its python,
bin/ folder or venv; default /work/.venv-clip-retrieval), else skips. Make it with::

    python3 -m venv /work/.venv-clip-retrieval
    /work/.venv-clip-retrieval/bin/pip install "setuptools<70" requests
    /work/.venv-clip-retrieval/bin/pip install --no-deps clip-retrieval==2.45.0

(``--no-deps``: clip_client.py imports only ``requests``; the package's ``__init__`` imports clip_back
with flask, faiss and torch, so the runner loads clip_client.py from the installed package by path.)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .test_serve_api import stored

pytestmark = [pytest.mark.slow, pytest.mark.network]

RUNNER = r'''
import base64, importlib.util, json, sys, sysconfig
from pathlib import Path
import requests
path = Path(sysconfig.get_paths()["purelib"]) / "clip_retrieval" / "clip_client.py"
spec = importlib.util.spec_from_file_location("clip_client", path)
cc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cc)
args = json.loads(sys.argv[1])
url = args["url"]
out = {"client_file": str(path)}
out["indices"] = requests.get(url + "/indices-list").json()
name = out["indices"][0]
def client(**kw):
    return cc.ClipClient(url=url + "/knn-service", indice_name=name, **kw)
plain = client(num_images=10, deduplicate=False, use_safety_model=False, use_violence_detector=False)
out["text"] = plain.query(text="a red triangle")
out["image"] = plain.query(image=args["image"])
out["embedding"] = plain.query(embedding_input=args["embedding"])
out["default_flags"] = client(num_images=10).query(text="a red triangle")  # deduplicate + safety: True
out["dedup"] = client(num_images=40, use_safety_model=False, use_violence_detector=False).query(
    embedding_input=args["embedding"])
out["nodedup"] = client(num_images=40, deduplicate=False, use_safety_model=False,
                        use_violence_detector=False).query(embedding_input=args["embedding"])
out["safe"] = client(num_images=20, deduplicate=False, use_safety_model=True,
                     use_violence_detector=False).query(embedding_input=args["embedding"])
ids = [r["id"] for r in out["text"][:3]]
out["metadata"] = requests.post(url + "/metadata", data=json.dumps({"ids": ids, "indice_name": name})).json()
print(json.dumps(out))
'''


def clip_retrieval_python() -> str | None:
    env = os.environ.get("CLIPCRAWL_CLIP_RETRIEVAL_BIN")
    for c in ([env] if env else []) + ["/work/.venv-clip-retrieval/bin/python"]:
        p = Path(c)
        if p.is_dir():
            p = p / "bin" / "python" if (p / "bin").is_dir() else p / "python"
        if p.exists():
            return str(p)
    return None


PY = clip_retrieval_python()


@pytest.mark.skipif(PY is None, reason="clip-retrieval's venv is absent (/work/.venv-clip-retrieval or "
                                       "CLIPCRAWL_CLIP_RETRIEVAL_BIN); see this module's docstring to make it")
def test_real_clip_client(indexed_demo, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clipcrawl.base.shardfiles import list_shards, read_images
    from clipcrawl.pipelines.inspect.serve import ServeServer

    check = subprocess.run([PY, "-c", "import importlib.util, requests; assert importlib.util.find_spec('clip_retrieval')"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"{PY}: clip_retrieval / requests not importable: {check.stderr[-300:]}")
    import shutil

    root = tmp_path / "demo"
    shutil.copytree(indexed_demo, root)
    for f in sorted((root / "index" / "metadata").glob("*.parquet")):  # every other row unsafe
        t = pq.read_table(f)
        unsafe = pa.array([0.9 if i % 2 else 0.1 for i in range(t.num_rows)], pa.float32())
        pq.write_table(t.set_column(t.column_names.index("punsafe"), "punsafe", unsafe), f)
    vecs, rows = stored(root)
    images = read_images(list_shards(root)[0])
    key = sorted(images)[0]
    (tmp_path / "query.jpg").write_bytes(images[key])
    with ServeServer([str(root)]) as srv:
        args = {"url": srv.url, "image": str(tmp_path / "query.jpg"), "embedding": vecs[3].tolist()}
        proc = subprocess.run([PY, "-c", RUNNER, json.dumps(args)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert "site-packages/clip_retrieval/clip_client.py" in out["client_file"]
    assert out["indices"] == ["demo"]  # clip_back's IndicesList: a list of names
    for name in ("text", "image", "embedding", "default_flags", "dedup", "nodedup", "safe"):
        res = out[name]
        assert isinstance(res, list) and res, name
        for r in res:  # clip_back's KnnService rows: metadata columns + id + similarity
            assert isinstance(r["id"], int) and isinstance(r["similarity"], float), (name, r)
            assert r["url"] == rows[r["id"]]["url"] and r["caption"] == rows[r["id"]]["caption"], name
        sims = [r["similarity"] for r in res]
        assert sims == sorted(sims, reverse=True), name
    assert len(out["text"]) == len(out["image"]) == len(out["embedding"]) == 10
    assert key in [r["key"] for r in out["image"]][:3]
    assert out["embedding"][0]["similarity"] > 0.999 and np.dot(vecs[out["embedding"][0]["id"]], vecs[3]) > 0.999
    assert len(out["dedup"]) < len(out["nodedup"]) == 40
    assert {r["id"] for r in out["dedup"]} <= {r["id"] for r in out["nodedup"]}
    assert all(r["punsafe"] <= 0.5 for r in out["safe"]) and len(out["safe"]) == 20
    assert all(r["punsafe"] <= 0.5 for r in out["default_flags"])  # ClipClient's defaults: safety on
    assert any(r["punsafe"] > 0.5 for r in out["nodedup"])
    # clip_back's MetadataService: [{"id": id, "metadata": {column: value}}]
    assert [m["id"] for m in out["metadata"]] == [r["id"] for r in out["text"][:3]]
    for m in out["metadata"]:
        assert set(m) == {"id", "metadata"} and m["metadata"]["url"] == rows[m["id"]]["url"]
