"""One ``clipcrawl run`` with every signal and the tiny model on the demo site (loopback), then
``clipcrawl verify``; the stats report and browse read the signal columns."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from clipcrawl.base.shardfiles import list_shards
from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent
from tests.filters.signals.test_score_signals import _heads
from tests.pipelines.test_run import clipcrawl, write_config

pytestmark = [pytest.mark.slow, pytest.mark.network]
pytest.importorskip("rapidocr", reason="extra [ocr] not installed")
pytest.importorskip("nudenet", reason="extra [nudity] not installed")


def test_run_with_every_signal_verifies(tmp_path):
    aest, nsfw = _heads(tmp_path)
    ds = tmp_path / "ds"
    with DemoSite(DemoSiteContent(seed=5, n_images=10)) as site:
        cfg = write_config(tmp_path / "run.yaml", ds, site.url, filters={
            "clip": {"model": "tiny", "pretrained": None, "threshold": -1, "precision": "fp32", "batch_size": 16,
                     "unsafe_head": str(nsfw)},
            "signals": {"compute": ["text", "nsfw", "aesthetic"], "aesthetic_head": str(aest), "threads": 1,
                        "max_nsfw_score": 0.9}})
        r = clipcrawl("run", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = []
    for ref in list_shards(str(ds / "shards")):
        rows += pq.read_table(ref.parquet).to_pylist()
    ok = [x for x in rows if x["status"] == "success"]
    assert ok, "the run kept nothing"
    for x in ok:
        assert x["aesthetic"] is not None and x["text_area"] is not None and x["nsfw_score"] is not None
        assert x["ocr_text"] is not None and x["nsfw_detections"] is not None
        assert "laion-aesthetic-mlp" in x["signal_sources"] and "laion-nsfw-keras" in x["signal_sources"]
    v = clipcrawl("verify", str(ds))
    assert v.returncode == 0, v.stdout[-2000:] + v.stderr[-2000:]
    c = clipcrawl("card", str(ds), "--out", str(tmp_path / "card.md"))
    assert c.returncode == 0, c.stderr[-2000:]
    card = (tmp_path / "card.md").read_text()
    assert "Curation signals: aesthetic: aesthetic_mlp.safetensors (laion-aesthetic-mlp)" in card
    assert "Curation signals: punsafe: nsfw_keras_port.safetensors (laion-nsfw-keras)" in card
    assert "Curation signals**: text, nsfw, aesthetic computed; dropped as `filtered_image` by max_nsfw_score 0.9" in card
    pytest.importorskip("duckdb", reason="extra [report] not installed")
    s = clipcrawl("stats", str(ds), "--json")
    assert s.returncode == 0, s.stderr[-2000:]
    import json

    agg = json.loads(s.stdout)
    assert agg["signals"]["aesthetic"]["n"] == len([x for x in rows if x["aesthetic"] is not None])
    assert "laion-aesthetic-mlp" in " ".join(agg["signals"]["sources"])
