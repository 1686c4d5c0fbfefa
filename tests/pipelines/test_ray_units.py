"""Engine pieces that need no cluster: stage resource declarations, the GPU share a pass asks for, counters."""

from __future__ import annotations

from clipcrawl.base.stage import Stage
from clipcrawl.filters.clip.score import ApplyClipThreshold, ScoreClip
from clipcrawl.pipelines.engine import LocalEngine, stage_gpus
from clipcrawl.pipelines.shardloop import ShardPass, ShardWorker
from clipcrawl.schemas.config import ClipConfig


def _worker(*stages: Stage) -> ShardWorker:
    p = ShardPass()
    p.stages = list(stages)
    return ShardWorker(p)


def test_clip_declares_a_gpu_share_unless_configured_for_cpu():
    assert Stage().needs() == {}
    assert ScoreClip(ClipConfig()).needs() == {"gpu": 0.25}
    assert ScoreClip(ClipConfig(device="cpu")).needs() == {}
    assert stage_gpus(_worker(ScoreClip(ClipConfig()), ApplyClipThreshold(0.3))) == 0.25
    assert stage_gpus(_worker(ApplyClipThreshold(0.3))) == 0.0 and stage_gpus(_worker()) == 0.0


def test_local_counter_counts_up():
    c = LocalEngine().counter(5)
    assert [c(), c(), c()] == [5, 6, 7]


def test_read_input_redoes_an_input_a_dead_worker_left_unfinished(tmp_path):
    """What a fresh actor does with an input whose first actor died mid-file: the chunks the state lists
    are removed, the input is read again, nothing is duplicated."""
    import itertools
    import json

    from clipcrawl.crawler.commoncrawl.process import ReadOptions, state_name
    from clipcrawl.crawler.commoncrawl.run import read_input
    from tests.crawler.test_commoncrawl_run import _pairs, make_warc

    warc = str(make_warc(tmp_path / "a.warc.gz", n_pages=4))
    out, opts = str(tmp_path / "out"), ReadOptions(pairs_per_file=3)
    first = read_input(warc, opts, out, itertools.count(0).__next__)
    rows = sorted(r["key"] for r in _pairs(tmp_path / "out"))
    state = tmp_path / "out" / "state" / f"{state_name(warc)}.json"
    s = json.loads(state.read_text())
    s["status"], s["chunks"] = "running", [*s["chunks"], "00099"]  # as if killed while writing chunk 99
    (tmp_path / "out" / "pairs" / "00099.parquet").write_bytes(b"partial")
    state.write_text(json.dumps(s))
    again = read_input(warc, opts, out, itertools.count(100).__next__)
    assert again.status == first.status == "done" and again.pairs == first.pairs
    assert sorted(r["key"] for r in _pairs(tmp_path / "out")) == rows
    assert sorted(p.name for p in (tmp_path / "out" / "pairs").iterdir()) == sorted(
        f"{c}.parquet" for c in again.chunks)


def test_failpoint_once_kills_only_the_first_process(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "CLIPCRAWL_FAILPOINT": "x", "CLIPCRAWL_FAILPOINT_ONCE": str(tmp_path / "m")}
    code = "from clipcrawl.base.failpoints import failpoint; failpoint('x'); print('passed')"
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True) for _ in range(2)]
    assert runs[0].returncode == -signal.SIGKILL and (tmp_path / "m").exists()
    assert runs[1].returncode == 0 and runs[1].stdout.strip() == "passed"


class _FakeRay:
    """Just enough of ``ray`` for an engine that finds this process already connected to ``gcs``."""

    def __init__(self, gcs: str) -> None:
        self.gcs, self.asked = gcs, 0

    def is_initialized(self) -> bool:
        return True

    def get_runtime_context(self):
        self.asked += 1
        return type("Ctx", (), {"gcs_address": self.gcs})()


def test_same_address():
    from clipcrawl.pipelines.rayconnect import same_address

    assert same_address("127.0.0.2:6379", "127.0.0.2:6379")
    assert same_address("localhost:6379", "127.0.0.1:6379")  # resolves to a common IP
    assert not same_address("127.0.0.2:6379", "127.0.0.2:6380")
    assert not same_address("127.0.0.2:6379", "127.0.0.3:6379")


def test_ray_engine_refuses_a_connection_to_another_cluster(monkeypatch):
    import sys

    import pytest

    from clipcrawl.pipelines.engine import RayEngine
    from clipcrawl.schemas.config import ConfigError

    fake = _FakeRay("127.0.0.2:6379")
    monkeypatch.setitem(sys.modules, "ray", fake)  # RayEngine imports ray lazily: it gets this one
    with pytest.raises(ConfigError) as e:
        RayEngine("127.0.0.3:6379")._init()
    assert "127.0.0.3:6379" in str(e.value) and "127.0.0.2:6379" in str(e.value)  # both named
    assert RayEngine("127.0.0.2:6379")._init() is fake  # the connected cluster: reused
    asked = fake.asked
    for address in (None, "auto", "ray://127.0.0.3:10001"):  # nothing to compare with
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        assert RayEngine(address)._init() is fake
    assert fake.asked == asked
