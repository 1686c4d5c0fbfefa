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
