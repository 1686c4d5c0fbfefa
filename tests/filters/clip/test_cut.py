"""CLIP cut: exact keep sets; top fraction ranked across shards; re-applicable without rescoring."""

import pyarrow as pa

from clipcrawl.filters.clip.cut import CutRule, apply_cut, global_cutoff
from clipcrawl.schemas.config import ClipConfig


def _shard(keys, sims, status=None, punsafe=None, pwm=None):
    n = len(keys)
    return pa.table({
        "key": keys, "status": status or ["success"] * n, "error_message": [None] * n,
        "clip_similarity": pa.array(sims, pa.float32()),
        "punsafe": pa.array(punsafe or [0.0] * n, pa.float32()),
        "pwatermark": pa.array(pwm or [0.0] * n, pa.float32()),
    })


def _kept(tables):
    return sorted(k for t in tables for k, s in zip(t.column("key").to_pylist(), t.column("status").to_pylist())
                  if s == "success")


def test_top_fraction_is_global_not_per_shard():
    a = _shard(["a1", "a2", "a3", "a4"], [0.9, 0.8, 0.7, 0.6])  # a good shard
    b = _shard(["b1", "b2", "b3", "b4", "b5", "b6"], [0.5, 0.4, 0.3, 0.2, 0.1, None],
               status=["success"] * 5 + ["filtered_text"])
    out = apply_cut([a, b], CutRule(top_fraction=0.3))  # 9 candidates -> top 3 (ceil(2.7))
    assert _kept(out) == ["a1", "a2", "a3"]
    assert out[1].column("status").to_pylist()[5] == "filtered_text"
    msg = out[0].column("error_message").to_pylist()[3]
    assert msg.startswith("clip_cut: clip_similarity 0.600 below the top 30% cut-off 0.7")
    # re-applicable: widening the fraction restores rows from the stored scores, no rescoring
    again = apply_cut(out, CutRule(top_fraction=0.5))  # ceil(4.5) = 5
    assert _kept(again) == ["a1", "a2", "a3", "a4", "b1"]


def test_threshold_punsafe_pwatermark_exact():
    t = _shard(list("abcde"), [0.35, 0.29, 0.40, 0.50, 0.31], punsafe=[0.1, 0.1, 0.9, 0.1, 0.1],
               pwm=[0.0, 0.0, 0.0, 0.95, 0.2])
    out = apply_cut([t], CutRule.from_config(ClipConfig(threshold=0.30, max_punsafe=0.5, max_pwatermark=0.8)))
    assert _kept(out) == ["a", "e"]
    msgs = out[0].column("error_message").to_pylist()
    assert msgs[1] == "clip_cut: clip_similarity 0.290 < 0.3"
    assert msgs[2] == "clip_cut: punsafe 0.900 > 0.5" and msgs[3] == "clip_cut: pwatermark 0.950 > 0.8"
    # an older ApplyClipThreshold result is also undone on re-application
    old = t.set_column(1, "status", pa.array(["success", "filtered_clip", "success", "success", "success"]))
    old = old.set_column(2, "error_message", pa.array([None, "clip_threshold: clip_similarity 0.290 < 0.5",
                                                       None, None, None]))
    assert _kept(apply_cut([old], CutRule())) == list("abcde")


def test_cutoff_ties_and_empty():
    assert global_cutoff([[0.5, 0.5, 0.5, 0.1]], 0.25) == 0.5  # ties at the cut-off all stay
    assert global_cutoff([], 0.3) is None and global_cutoff([[0.1]], None) is None
    assert CutRule.from_config(ClipConfig(threshold=-1)).threshold is None
