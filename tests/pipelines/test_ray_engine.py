"""The Ray engine on a real (one-node, loopback) Ray cluster gives the local engine's dataset."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent
from clipcrawl.pipelines.engine import LocalEngine, RayEngine, make_engine

from . import raycluster
from .test_run import samples, write_config

pytestmark = [pytest.mark.slow, pytest.mark.network]
ray = pytest.importorskip("ray")
NODE_IP = "127.0.0.2"  # Ray swaps 127.0.0.1 for the machine's external address; .2 stays on loopback


@pytest.fixture(scope="module")
def ray_cluster():
    with raycluster.ray_cluster("--num-cpus=2") as c:
        yield c.address


def test_make_engine():
    assert isinstance(make_engine("local"), LocalEngine) and isinstance(make_engine("ray"), RayEngine)


def test_ray_run_equals_local_run(ray_cluster, tmp_path):
    with DemoSite(DemoSiteContent(seed=3, n_images=10)) as site:
        local = write_config(tmp_path / "local.yaml", tmp_path / "local", site.url)
        on_ray = write_config(tmp_path / "ray.yaml", tmp_path / "ray", site.url, engine="ray",
                              ray_address=ray_cluster, ray_node_ip=NODE_IP, ray_actors=2)
        for cfg in (local, on_ray):
            r = subprocess.run([sys.executable, "-m", "clipcrawl", "run", str(cfg)], capture_output=True, text=True,
                               timeout=600, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
            assert r.returncode == 0, r.stderr[-3000:]
    expected = samples(tmp_path / "local")
    assert expected and samples(tmp_path / "ray") == expected



def _cli(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "--log-format", "text", *args], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_every_pass_on_ray_equals_local(ray_cluster, tmp_path):
    """download, score, dedup and reshard through the one shard loop on Ray actors give the local output."""
    import csv

    ray_opts = ["--engine", "ray", "--ray-address", f"{ray_cluster}@{NODE_IP}"]
    with DemoSite(DemoSiteContent(seed=5, n_images=12)) as site:
        urls = tmp_path / "urls.csv"
        with open(urls, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["url", "caption"])
            for name, img in site.content.images.items():
                w.writerow([f"{site.url}img/{name}.jpg", img.scene.caption(site.content.rng, "a {size} {colour} {shape}")])
        dl = ["--allow-private-networks", "--ignore-robots", "--image-size", "64", "--samples-per-shard", "5"]
        _cli("download", str(urls), "--out", str(tmp_path / "local"), *dl)
        _cli("download", str(urls), "--out", str(tmp_path / "ray"), *dl, *ray_opts)
    assert raycluster.shard_rows(tmp_path / "local") == raycluster.shard_rows(tmp_path / "ray")
    for name, extra in (("local", []), ("ray", ray_opts)):
        d = str(tmp_path / name)
        _cli("score", d, "--model", "tiny", "--precision", "fp32", "--threshold", "0.2", *extra)
        _cli("dedup", d, "--no-semantic", *extra)
        _cli("reshard", d, "-n", "4", "--out", str(tmp_path / f"{name}-re"), *extra)
    local, on_ray = raycluster.shard_rows(tmp_path / "local"), raycluster.shard_rows(tmp_path / "ray")
    assert [r[:2] for r in local] == [r[:2] for r in on_ray]
    assert all(a[2] == b[2] or abs(a[2] - b[2]) < 1e-5 for a, b in zip(local, on_ray) if a[2] is not None)
    assert raycluster.shard_rows(tmp_path / "local-re" / "shards", ("key",)) == raycluster.shard_rows(tmp_path / "ray-re" / "shards", ("key",))
