"""Ray engine on a loopback cluster that claims a GPU: CLIP actors ask for a GPU share (yet run on CPU,
as no CUDA exists), a worker killed mid-shard loses nothing, bounded retries end in a ShardFailure."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent
from clipcrawl.pipelines.engine import RayEngine
from clipcrawl.pipelines.shardloop import ShardFailure, ShardPass, run_pass
from clipcrawl.schemas.config import ConfigError

from .raycluster import HEAD_IP, free_port, ray_cluster, shard_rows

pytestmark = [pytest.mark.slow, pytest.mark.network]
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("RAY_AUTH_MODE", "disabled") != "disabled":  # see raycluster.py: "Token authentication"
        pytest.fail(f"this process imported Ray with RAY_AUTH_MODE={os.environ.get('RAY_AUTH_MODE')!r}; its actors "
                    "on the test cluster (auth disabled) would be cancelled before they start")
    with ray_cluster("--num-cpus=2", "--num-gpus=1") as c:
        yield c


class _DiePass(ShardPass):
    """Jobs are ints; the process running job ``die`` exits hard (every time, or once with a marker)."""

    name = "die"

    def __init__(self, die: int, marker: str | None) -> None:
        super().__init__()
        self.die, self.marker = die, marker
        self.published: list[tuple[int, int]] = []

    def read(self, job: int) -> pa.Table:
        if job == self.die:
            if self.marker is None:
                os._exit(3)
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                os._exit(3)
            except FileExistsError:
                pass
        return pa.table({"x": [job]})

    def write(self, job: int, table: pa.Table) -> tuple[int, int]:
        return job, os.getpid()

    def publish(self, job: int, result: tuple[int, int]) -> None:
        self.published.append(result)


@pytest.mark.parametrize("write_behind", [False, True])  # True: two jobs in flight per actor, both lost
def test_killed_worker_shard_goes_to_a_fresh_actor(cluster, tmp_path, write_behind):
    p = _DiePass(die=2, marker=str(tmp_path / "died"))
    p.write_behind = write_behind
    failures = run_pass(p, list(range(6)), RayEngine(cluster.address, actors=2, node_ip=HEAD_IP))
    assert failures == [] and (tmp_path / "died").exists()
    assert [j for j, _ in p.published] == list(range(6))  # in job order, nothing lost


def test_retries_are_bounded(cluster):
    p = _DiePass(die=1, marker=None)
    failures = run_pass(p, list(range(3)), RayEngine(cluster.address, actors=1, node_ip=HEAD_IP, retries=1))
    assert [j for j, _ in p.published] == [0, 2]
    assert len(failures) == 1 and isinstance(failures[0], ShardFailure) and failures[0].shard == "1"
    assert "worker died 2 times" in failures[0].error


def test_engine_refuses_another_cluster_while_connected(cluster):
    RayEngine(cluster.address, node_ip=HEAD_IP)._init()  # this process is now connected to the test cluster
    assert ray.is_initialized()
    other = f"{HEAD_IP}:{free_port()}"
    with pytest.raises(ConfigError, match="already connected") as e:
        RayEngine(other, node_ip=HEAD_IP)._init()
    assert other in str(e.value) and cluster.address in str(e.value)
    assert RayEngine(cluster.address, node_ip=HEAD_IP)._init() is ray  # the same cluster: the connection reused


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipcrawl", "--log-format", "text", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})



@pytest.fixture(scope="module")
def urls(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("urls")
    with DemoSite(DemoSiteContent(seed=5, n_images=12)) as site:
        path = tmp / "urls.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["url", "caption"])
            for name, img in site.content.images.items():
                w.writerow([f"{site.url}img/{name}.jpg", img.scene.caption(site.content.rng, "a {size} {colour} {shape}")])
        yield path


DL = ["--allow-private-networks", "--ignore-robots", "--image-size", "64", "--samples-per-shard", "4"]


@pytest.mark.parametrize("point", ["stage.download", "shard.before_stats"])
def test_download_with_a_worker_killed_mid_shard_equals_local(cluster, urls, tmp_path, point):
    r = _cli("download", str(urls), "--out", str(tmp_path / "local"), *DL)
    assert r.returncode == 0, r.stderr[-3000:]
    marker = tmp_path / "killed-once"
    r = _cli("download", str(urls), "--out", str(tmp_path / "ray"), *DL, "--engine", "ray",
             "--ray-address", f"{cluster.address}@{HEAD_IP}",
             env={"CLIPCRAWL_FAILPOINT": point, "CLIPCRAWL_FAILPOINT_ONCE": str(marker)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker.exists() and "worker died" in r.stderr  # an actor really died mid-shard
    assert shard_rows(tmp_path / "ray") == shard_rows(tmp_path / "local")  # verify runs on both (autouse fixture)


def test_clip_actors_get_a_gpu_share_and_run_on_cpu(cluster, urls, tmp_path):
    from clipcrawl.pipelines.passes.score import score_shards
    from clipcrawl.schemas.config import ClipConfig

    for name in ("local", "ray"):
        r = _cli("download", str(urls), "--out", str(tmp_path / name), *DL)
        assert r.returncode == 0, r.stderr[-3000:]
    cfg = ClipConfig(model="tiny", pretrained=None, precision="fp32", threshold=-1.0)
    assert score_shards(str(tmp_path / "local"), cfg).failures == []
    engine = RayEngine(cluster.address, actors=1, node_ip=HEAD_IP)
    try:
        assert score_shards(str(tmp_path / "ray"), cfg, engine=engine).failures == []
    finally:
        ray.shutdown()
    assert engine.actor_info and all(i["resources"].get("GPU") == 0.25 for i in engine.actor_info)
    assert all(i["cuda_visible"] == "0" for i in engine.actor_info)  # torch would see GPU 0 (none here: CPU)
    local, on_ray = shard_rows(tmp_path / "local"), shard_rows(tmp_path / "ray")
    assert [r[:2] for r in local] == [r[:2] for r in on_ray]
    assert all(abs(a[2] - b[2]) < 1e-5 for a, b in zip(local, on_ray) if a[2] is not None)


def test_jobs_are_pulled_as_the_window_moves(cluster):
    """The driver holds a window of jobs, not the whole input: job k is pulled only after early results."""
    pulled: list[int] = []
    seen_when_published: list[int] = []

    def jobs():
        for k in range(40):
            pulled.append(k)
            yield k

    class _Count(_DiePass):
        def publish(self, job: int, result: tuple[int, int]) -> None:
            seen_when_published.append(len(pulled))
            super().publish(job, result)

    p = _Count(die=-1, marker=None)
    failures = run_pass(p, jobs(), RayEngine(cluster.address, actors=2, node_ip=HEAD_IP))
    assert failures == [] and [j for j, _ in p.published] == list(range(40))
    assert seen_when_published[0] < 20  # window: 2 x slots x actors (>= 4), far below the 40 jobs
