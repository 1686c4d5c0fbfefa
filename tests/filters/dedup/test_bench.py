"""The dedup benchmarks in small form (the full runs are in bench/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"

pytest.importorskip("faiss")


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_quality_small_phash():
    q = load("dedup_quality")
    vs = q.make_variant_set(n_generated=40, variants=4, max_photo=12)
    res = q.evaluate(vs, ks=(8,), taus=())
    r = res["phash"][8]
    assert r["recall_by_kind"]["resize"] >= 0.95 and r["recall_by_kind"]["jpeg"] >= 0.95
    assert r["recall_by_kind"]["color"] >= 0.9
    assert r["dedup_precision"] >= 0.95 and r["dedup_recall"] >= 0.9
    # crop-window candidates + verification catch the crops that plain pHash misses
    assert r["dedup_recall_by_kind"]["crop"] >= 0.85
    assert r["dedup_recall_by_kind"]["crop"] > r["pHash only"]["dedup_recall_by_kind"]["crop"]


@pytest.mark.slow
def test_quality_small_with_tiny_clip(tmp_path):
    pytest.importorskip("open_clip")
    q = load("dedup_quality")
    out = tmp_path / "q.json"
    q.main(["--generated", "16", "--variants", "3", "--model", "tiny", "--ks", "8", "--taus", "0.9",
            "--combo", "8,0.9", "--out", str(out)])
    import json

    res = json.loads(out.read_text())
    assert res["model"] == "clipcrawl-tiny" and "combination" in res
    assert res["combination"]["pair_recall_all"] >= res["phash"]["8"]["pair_recall_all"]


def test_phash_bench_small():
    res = load("dedup_phash").main(["--n", "30000", "--planted", "2000", "--check-queries", "50",
                                    "--baseline-queries", "500"])
    assert res["planted_recall"] == 1.0 and res["bruteforce_check"]["missed"] == 0
    assert res["planted_within_k"] > 1500


def test_semantic_bench_small(monkeypatch):
    from clipcrawl.filters.dedup import semantic

    monkeypatch.setattr(semantic, "EXACT_WORK", 1e6)  # take the PCA + IVF path at this size
    res = load("dedup_semantic").main(["--n", "20000", "--d", "128", "--planted", "1000", "--check-queries", "200"])
    assert res["false_pairs"] == 0 and res["planted_recall"] >= 0.95 and res["sampled_recall"] >= 0.95


def test_crops_scale_bench_small(capsys):
    assert load("dedup_crops_scale").main(["3000", "--queries", "500"]) == 0
    from clipcrawl.filters.dedup.crops import N_CODES

    assert f"{N_CODES} codes per image, 3000 rows" in capsys.readouterr().out
