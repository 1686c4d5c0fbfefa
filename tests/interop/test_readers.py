"""Other people's readers read our output: webdataset, Hugging Face datasets, pandas, duckdb."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from clipcrawl.base.shardfiles import iter_tar, list_shards
from clipcrawl.pipelines.manifest import kept_samples

from .fixtures import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("readers") / "ds")
    make_dataset(root, n_shards=2, n=12, png_every=4)
    make_dataset(root, n_shards=1, n=6, run=2, first=2)
    return root


def _expected(root: str) -> dict[str, dict]:
    """key -> {image bytes, caption, url} of every kept sample, from our own reader."""
    out = {}
    for ref in list_shards(root):
        for s in iter_tar(ref.tar):
            meta = json.loads(s["json"])
            out[s["__key__"]] = {"image": s.get("jpg") or s.get("png"), "caption": s["txt"].decode(),
                                 "url": meta["url"]}
    return out


def test_webdataset_reads_every_sample(dataset):
    wds = pytest.importorskip("webdataset")
    from PIL import Image

    tars = [r.tar for r in list_shards(dataset)]
    expected = _expected(dataset)
    raw = list(wds.WebDataset(tars, shardshuffle=False))
    assert [s["__key__"] for s in raw] == list(expected) and len(raw) == 20
    for s in raw:
        assert (s.get("jpg") or s.get("png")) == expected[s["__key__"]]["image"]
    decoded = wds.WebDataset(tars, shardshuffle=False).decode("pil").to_tuple("jpg;png", "txt", "json", "__key__")
    n = 0
    for img, txt, meta, key in decoded:
        assert isinstance(img, Image.Image) and img.size == (64, 64)
        assert txt == expected[key]["caption"] and meta["url"] == expected[key]["url"] and meta["status"] == "success"
        n += 1
    assert n == 20


HF_SCRIPT = """
import json, sys
from datasets import load_dataset
ds = load_dataset("webdataset", data_files={"train": json.loads(sys.argv[1])}, split="train",
                  cache_dir=sys.argv[2])
rows = []
for r in ds:
    img = r.get("jpg") or r.get("png")
    rows.append({"key": r["__key__"], "size": list(img.size), "txt": r["txt"], "url": r["json"]["url"],
                 "clip_similarity": r["json"]["clip_similarity"], "status": r["json"]["status"]})
print(json.dumps({"features": sorted(ds.features), "rows": rows}))
"""


def test_hf_datasets_load_dataset_webdataset(tmp_path):
    """HF infers features from the first examples of the first tar and needs every sample to have
    the same members, so this dataset uses one image format (as one ``encode_format`` gives)."""
    pytest.importorskip("datasets")
    dataset = str(tmp_path / "ds")
    make_dataset(dataset, n_shards=2, n=30)
    tars = [r.tar for r in list_shards(dataset)]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets")}
    r = subprocess.run([sys.executable, "-c", HF_SCRIPT, json.dumps(tars), str(tmp_path / "cache")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    expected = _expected(dataset)
    assert {"__key__", "jpg", "txt", "json"} <= set(got["features"])
    assert [row["key"] for row in got["rows"]] == list(expected)
    for row in got["rows"]:
        assert row["size"] == [64, 64] and row["txt"] == expected[row["key"]]["caption"]
        assert row["url"] == expected[row["key"]]["url"] and row["status"] == "success"
        assert 0.3 < row["clip_similarity"] < 0.5


def test_pandas_reads_parquet(dataset):
    import pandas as pd

    expected = pq.read_table(f"{dataset}/shards/00000.parquet").column("phash").to_pylist()
    # nullable 64-bit hashes need pandas' nullable dtypes: the numpy default turns them into float64
    shards = pd.read_parquet(f"{dataset}/shards/00000.parquet", dtype_backend="numpy_nullable")
    assert len(shards) == 12 and shards["status"].value_counts()["success"] == 8
    assert str(shards["phash"].dtype) == "UInt64" and str(shards["width"].dtype) == "Int32"
    assert [None if pd.isna(v) else int(v) for v in shards["phash"]] == expected
    assert max(v for v in expected if v is not None) > 2**53  # would not survive float64
    samples = pd.read_parquet(f"{dataset}/samples")
    assert len(samples) == 20 and samples["key"].is_unique
    assert samples["key"].tolist() == kept_samples(dataset).column("key").to_pylist()


def test_duckdb_reads_parquet_with_types(dataset):
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    rel = con.sql(f"select * from read_parquet('{dataset}/shards/*.parquet', union_by_name=true)")
    types = dict(zip(rel.columns, map(str, rel.types)))
    assert types["key"] == "VARCHAR" and types["status"] == "VARCHAR" and types["width"] == "INTEGER"
    assert types["bytes"] == "BIGINT" and types["http_status"] == "SMALLINT" and types["phash"] == "UBIGINT"
    assert types["clip_similarity"] == "FLOAT" and types["run"] == "INTEGER"
    counts = dict(con.execute(f"select status, count(*) from read_parquet('{dataset}/shards/*.parquet') "
                          "group by status").fetchall())
    assert counts["success"] == 20 and sum(counts.values()) == 30
    n, runs = con.execute(f"select count(*), count(distinct run) from '{dataset}/samples/*.parquet'").fetchone()
    assert (n, runs) == (20, 2)
    dropped = f"select count(*) from '{dataset}/samples/*.parquet' where status <> 'success'"
    assert con.execute(dropped).fetchone()[0] == 0
    schema = pq.read_schema(f"{dataset}/samples/00000.parquet")
    assert schema.field("clip_similarity").type == "float"
