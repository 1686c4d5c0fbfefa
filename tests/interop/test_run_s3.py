"""``clipcrawl run`` with the dataset on a real S3-compatible server (SeaweedFS on loopback)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import fsspec
import pyarrow.parquet as pq
import pytest

from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent
from tests.pipelines.test_run import samples, write_config

pytestmark = [pytest.mark.slow, pytest.mark.network]


def _members(data: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            body = tar.extractfile(m).read()
            if m.name.endswith(".json"):
                meta = json.loads(body)
                meta.pop("found_at")
                body = json.dumps(meta, sort_keys=True).encode()
            out[m.name] = body
    return out


def test_run_writes_a_dataset_to_s3_that_equals_the_local_one(s3_server, s3_url, tmp_path):
    env = {**os.environ, **s3_server.env, "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with DemoSite(DemoSiteContent(seed=13, n_images=8)) as site:
        local = write_config(tmp_path / "local.yaml", tmp_path / "local", site.url)
        remote = write_config(tmp_path / "s3.yaml", s3_url, site.url)
        for cfg in (local, remote):
            r = subprocess.run([sys.executable, "-m", "clipcrawl", "run", str(cfg)], capture_output=True, text=True,
                               timeout=600, env=env)
            assert r.returncode == 0, r.stderr[-3000:]
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    root = s3_url.removeprefix("s3://")
    manifest = json.loads(fs.cat(f"{root}/manifest.json"))
    assert manifest == {**manifest, "totals": json.loads((tmp_path / "local" / "manifest.json").read_text())["totals"]}
    got = {}
    for path in sorted(fs.glob(f"{root}/shards/*.parquet")):
        with fs.open(path, "rb") as f:
            t = pq.read_table(f, columns=["key", "status"])
        got.update(zip(t.column("key").to_pylist(), t.column("status").to_pylist()))
    assert got == samples(tmp_path / "local")
    local_tars = sorted(p.name for p in (tmp_path / "local" / "shards").glob("*.tar"))
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.glob(f"{root}/shards/*.tar")) == local_tars
    for name in local_tars:  # the same members; the same bytes but for when each crawl found the pair
        a = _members(fs.cat(f"{root}/shards/{name}"))
        b = _members((tmp_path / "local" / "shards" / name).read_bytes())
        assert a == b
    assert not fs.glob(f"{root}/runs/0001/work/*")  # work files are removed once published
