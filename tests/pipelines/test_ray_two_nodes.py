"""A real two-node Ray cluster on loopback (head 127.0.0.2, worker 127.0.0.3, one CPU each): ``download``,
``clipcrawl run`` and ``commoncrawl`` on Ray give the local engine's output, and work ran on both nodes."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent

from .raycluster import DRIVER_ENV, HEAD_IP, ray_cluster
from .test_run import write_config

pytestmark = [pytest.mark.slow, pytest.mark.network]
ray = pytest.importorskip("ray")
WORKER_IP = "127.0.0.3"


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster("--num-cpus=1", workers=[(WORKER_IP, ["--num-cpus=1"])]) as c:
        yield c


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "--log-format", "text", *args], capture_output=True,
                       text=True, timeout=600, env={**os.environ, **DRIVER_ENV, **(env or {})})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _nodes(stderr: str) -> set[str]:
    """The node IPs the engine says shards ran on (its "shards per node" log line)."""
    return {ip for line in stderr.splitlines() if "shards per node" in line
            for ip in re.findall(r"'(127\.0\.0\.\d+)'", line)}


COLS = ("key", "status", "error_message", "clip_similarity")


def _rows(dataset: Path, columns=COLS) -> list[tuple]:
    out = []
    for f in sorted((dataset / "shards" if (dataset / "shards").is_dir() else dataset).glob("[0-9]*.parquet")):
        t = pq.read_table(f)
        out += list(zip(*[t.column(c).to_pylist() if c in t.column_names else [None] * t.num_rows
                          for c in columns]))
    return out


def _same(local: list[tuple], on_ray: list[tuple]) -> None:
    assert local and [r[:3] for r in local] == [r[:3] for r in on_ray]
    assert all(abs(a[3] - b[3]) < 1e-5 for a, b in zip(local, on_ray) if a[3] is not None)


def test_download_on_two_nodes_equals_local(cluster, tmp_path):
    with DemoSite(DemoSiteContent(seed=5, n_images=12)) as site:
        urls = tmp_path / "urls.csv"
        with open(urls, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["url", "caption"])
            for name, img in site.content.images.items():
                w.writerow([f"{site.url}img/{name}.jpg", img.scene.caption(site.content.rng, "a {size} {colour} {shape}")])
        dl = ["--allow-private-networks", "--ignore-robots", "--image-size", "64", "--samples-per-shard", "3"]
        _cli("download", str(urls), "--out", str(tmp_path / "local"), *dl)
        r = _cli("download", str(urls), "--out", str(tmp_path / "ray"), *dl, "--engine", "ray",
                 "--ray-address", f"{cluster.address}@{HEAD_IP}")
    assert _nodes(r.stderr) == {HEAD_IP, WORKER_IP}, r.stderr[-2000:]
    _same(_rows(tmp_path / "local"), _rows(tmp_path / "ray"))


def test_run_on_two_nodes_equals_local(cluster, tmp_path):
    with DemoSite(DemoSiteContent(seed=3, n_images=10)) as site:
        local = write_config(tmp_path / "local.yaml", tmp_path / "local", site.url, output={"samples_per_shard": 4})
        on_ray = write_config(tmp_path / "ray.yaml", tmp_path / "ray", site.url, engine="ray",
                              ray_address=cluster.address, ray_node_ip=HEAD_IP, output={"samples_per_shard": 4})
        _cli("run", str(local))
        r = _cli("run", str(on_ray))
    assert _nodes(r.stderr) == {HEAD_IP, WORKER_IP}, r.stderr[-2000:]
    local_rows = _rows(tmp_path / "local", (*COLS, "duplicate_of"))
    ray_rows = _rows(tmp_path / "ray", (*COLS, "duplicate_of"))
    _same(local_rows, ray_rows)  # keys, statuses, reasons, scores
    assert [r[4] for r in local_rows] == [r[4] for r in ray_rows]  # dedup decisions
    assert {r[1] for r in local_rows} >= {"success", "duplicate"}  # the demo site has duplicates


def _state(out: Path) -> dict[str, dict]:
    keep = ("input", "status", "error", "records", "pages", "noai_pages", "pairs", "skipped", "dropped", "limited")
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k in keep}
            for p in (out / "state").glob("*.json")}


def test_commoncrawl_on_two_nodes_equals_local(cluster, tmp_path):
    from tests.crawler.test_commoncrawl_run import _pairs, make_warc, make_wat

    inputs = [str(make_warc(tmp_path / f"w{i}.warc.gz", n_pages=2 + i)) for i in range(3)]
    inputs.append(str(make_wat(tmp_path / "t.wat.gz")))
    opts = ["--pairs-per-file", "4"]
    _cli("commoncrawl", *inputs, "--out", str(tmp_path / "local"), "--workers", "1", *opts)
    ray_opts = ["--engine", "ray", "--ray-address", f"{cluster.address}@{HEAD_IP}"]
    r = _cli("commoncrawl", *inputs, "--out", str(tmp_path / "ray"), *opts, *ray_opts)
    assert _nodes(r.stderr) == {HEAD_IP, WORKER_IP}, r.stderr[-2000:]

    def rows(out: Path) -> list[dict]:
        return sorted(_pairs(out), key=lambda row: (row["key"], row["page_url"]))

    assert rows(tmp_path / "local") == rows(tmp_path / "ray") and rows(tmp_path / "local")
    assert _state(tmp_path / "local") == _state(tmp_path / "ray")  # the same resume state
    chunks = [c for p in (tmp_path / "ray" / "state").glob("*.json") for c in json.loads(p.read_text())["chunks"]]
    assert sorted(f"{c}.parquet" for c in chunks) == sorted(p.name for p in (tmp_path / "ray" / "pairs").iterdir())
    again = _cli("commoncrawl", *inputs, "--out", str(tmp_path / "ray"), *opts, *ray_opts)  # resume: nothing to do
    assert re.search(r"already read \(skipped\)\s*│?\s*4", again.stdout), again.stdout
