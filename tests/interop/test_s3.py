"""A dataset written to a real S3-compatible server (SeaweedFS) equals the same dataset written locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fsspec
import pytest

from clipcrawl.base.shardfiles import iter_tar, list_shards, read_images
from clipcrawl.base.storage import atomic_open, fs_and_path
from clipcrawl.pipelines.manifest import kept_samples, load_manifest
from clipcrawl.pipelines.passes.reshard import reshard

from .fixtures import make_dataset

pytestmark = pytest.mark.network


def _files(root: str) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root`` (local path or s3:// URL)."""
    fs, path = fs_and_path(root)
    fs.invalidate_cache()
    # .lock: the dataset lock a local writer holds (on S3 the lease .lock.json is removed on release), not content
    return {f[len(path) + 1:]: fs.cat_file(f) for f in fs.find(path) if not f.endswith("/.lock")}


def _without_times(manifest: dict) -> dict:
    m = json.loads(json.dumps(manifest))
    m.pop("updated")
    for r in m["runs"]:
        r.pop("time")
        r["summary"].pop("derived_from", None)
    return m


def test_s3_dataset_equals_local(tmp_path, s3_url):
    local = str(tmp_path / "ds")
    for root in (local, s3_url):
        make_dataset(root, n_shards=3, n=12, png_every=4)
        make_dataset(root, n_shards=1, n=9, run=2, first=3)  # an incremental second run
        reshard(root, f"{root}/resharded", 5, shuffle=True, seed=7)
    a, b = _files(local), _files(s3_url)
    assert sorted(a) == sorted(b)
    timed = [p for p in a if p.endswith(("_stats.json", "manifest.json"))]
    assert len(timed) == 2 + 4 + len(list_shards(f"{local}/resharded"))
    for p in a:
        if p not in timed:
            assert a[p] == b[p], p  # same bytes: tars, shard Parquet, samples/
    for root in ("", "/resharded"):
        assert _without_times(load_manifest(local + root)) == _without_times(load_manifest(s3_url + root))
        assert kept_samples(local + root).equals(kept_samples(s3_url + root))
    assert load_manifest(s3_url)["totals"] == {"runs": 2, "shards": 4, "samples_total": 45, "samples_kept": 30}
    ref = list_shards(s3_url)[0]
    assert read_images(ref) == read_images(list_shards(local)[0]) and len(read_images(ref)) == 8
    assert [s["__key__"] for s in iter_tar(ref.tar)] == kept_samples(s3_url).column("key").to_pylist()[:8]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    return subprocess.run([sys.executable, "-m", "clipcrawl", *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=120)


def test_cli_reshard_s3_with_env_vars(s3_server, s3_url):
    make_dataset(s3_url, n_shards=2, n=12)
    env = {"AWS_ACCESS_KEY_ID": s3_server.key, "AWS_SECRET_ACCESS_KEY": s3_server.secret,
           "FSSPEC_S3_ENDPOINT_URL": s3_server.endpoint}  # fsspec's variable, not AWS_ENDPOINT_URL
    r = _cli(["reshard", s3_url, "--samples-per-shard", "6"], env)
    assert r.returncode == 0, r.stderr
    assert [s.name for s in list_shards(f"{s3_url}/resharded")] == ["00000", "00001", "00002"]
    assert kept_samples(f"{s3_url}/resharded").num_rows == 16


def test_cli_reshard_s3_with_storage_options(s3_server, s3_url):
    make_dataset(s3_url, n_shards=1, n=6)
    out = f"{s3_url}-out"
    r = _cli(["reshard", s3_url, "--out", out, "-n", "2", "--storage-options", json.dumps(s3_server.storage_options)],
             {})
    assert r.returncode == 0, r.stderr
    assert load_manifest(out)["totals"]["samples_kept"] == 4
    r = _cli(["reshard", s3_url, "--out", out, "-n", "2"], {"AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "x",
                                                            "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_MAX_ATTEMPTS": "1"})
    assert r.returncode != 0  # the server checks credentials


def test_failed_write_publishes_nothing(s3_url):
    url = f"{s3_url}/x.bin"
    with pytest.raises(RuntimeError), atomic_open(url) as f:
        f.write(b"partial" * 1000)
        raise RuntimeError("writer crashed")
    with pytest.raises(KeyboardInterrupt), atomic_open(url, "w") as f:
        f.write("é partial")
        raise KeyboardInterrupt
    fs, path = fs_and_path(url)
    fs.invalidate_cache()
    assert not fs.exists(path)
    with atomic_open(url, "w") as f:
        f.write("é complete")
    assert fsspec.open(url, "r", encoding="utf-8").open().read() == "é complete"


KILLED_WRITER = """
import sys, time
from clipcrawl.base.storage import atomic_open
with atomic_open(sys.argv[1]) as f:
    for i in range(1000):
        f.write(b"x" * (1 << 20))
        if i == 7:
            print("writing", flush=True)
        time.sleep(0.05)
"""


def test_killed_writer_publishes_nothing(s3_url):
    url = f"{s3_url}/big.tar"  # 8 MiB written before the kill: past s3fs' 5 MiB multipart minimum
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, url], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.kill()
    p.wait()
    fs, path = fs_and_path(url)
    fs.invalidate_cache()
    assert not fs.exists(path)


HF_S3 = """
import json, sys
from datasets import load_dataset
opts = json.loads(sys.argv[3])
ds = load_dataset("webdataset", data_files={"train": json.loads(sys.argv[1])}, split="train", cache_dir=sys.argv[2],
                  storage_options=opts)
print(json.dumps([[r["__key__"], r["txt"], r["json"]["url"], list(r["jpg"].size)] for r in ds]))
"""


def test_hf_datasets_reads_shards_on_s3(s3_server, s3_url, tmp_path):
    """Training code reads the dataset where it lives: HF ``datasets`` downloads the tars from S3.

    Its offline mode refuses every remote URL (s3 too), and its streaming mode passes ``block_size``
    to s3fs, which rejects it (datasets 5.2 / s3fs 2026.9); so the Hub endpoint points at a closed
    loopback port instead: any Hub request fails locally, none is needed."""
    pytest.importorskip("datasets")
    make_dataset(s3_url, n_shards=2, n=12)
    tars = [r.tar for r in list_shards(s3_url)]
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf")}
    opts = {**s3_server.storage_options, "client_kwargs": {"region_name": "us-east-1"}}
    r = subprocess.run([sys.executable, "-c", HF_S3, json.dumps(tars), str(tmp_path / "cache"), json.dumps(opts)],
                       env={**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_"))}, **env},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    expected = kept_samples(s3_url, ["key", "caption", "url"]).to_pylist()
    assert [(k, t, u) for k, t, u, _ in rows] == [(e["key"], e["caption"], e["url"]) for e in expected]
    assert all(size == [64, 64] for *_, size in rows) and len(rows) == 16
