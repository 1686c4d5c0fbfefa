"""``clipcrawl score --signals text,nsfw,aesthetic`` on shards of real photos and PIL-rendered text, with the
tiny model, heads in their published layouts (random weights, the tiny model's 64-d width); re-cuts never
rescore; a missing extra is exit 2 naming it."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.storage import write_parquet
from clipcrawl.cli import main
from clipcrawl.pipelines.writer import write_shard
from tests.filters.clip.conftest import make_table
from tests.filters.signals.conftest import jpeg, render_text, safe_photos

pytest.importorskip("rapidocr", reason="extra [ocr] not installed")
pytest.importorskip("nudenet", reason="extra [nudity] not installed")


def _heads(tmp_path, d=64):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    aest = {}
    for i, (o, n) in zip((0, 2, 4, 6, 7), ((1024, d), (128, 1024), (64, 128), (16, 64), (1, 16))):
        aest[f"layers.{i}.weight"] = (rng.standard_normal((o, n)) / np.sqrt(n)).astype(np.float32)
        aest[f"layers.{i}.bias"] = np.full(o, 5.0 if o == 1 else 0.0, np.float32)
    nsfw = {"norm.mean": np.zeros(d, np.float32), "norm.variance": np.full(d, 0.02, np.float32)}
    for i, (o, n) in enumerate(((64, d), (512, 64), (256, 512), (1, 256)), 1):
        nsfw[f"linear_{i}.weight"] = (rng.standard_normal((o, n)) / np.sqrt(n)).astype(np.float32)
        nsfw[f"linear_{i}.bias"] = np.zeros(o, np.float32)
    a, n = tmp_path / "aesthetic_mlp.safetensors", tmp_path / "nsfw_keras_port.safetensors"
    save_file(aest, str(a))
    save_file(nsfw, str(n))
    return a, n


@pytest.fixture()
def dataset(tmp_path, testdata, fonts):
    from PIL import Image

    root = tmp_path / "ds"
    (root / "shards").mkdir(parents=True)
    photos = safe_photos(testdata)[:4]
    images, caps = [], []
    for i, p in enumerate(photos):
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((256, 256))
            images.append(jpeg(im))
        caps.append(f"a photo number {i}")
    img, _ = render_text("GRAND OPENING", fonts[0], size=(420, 200), px=30)
    images.append(jpeg(img))
    caps.append("grand opening")  # the caption spells the image
    img, _ = render_text("Fresh bread", fonts[-1], size=(420, 200), px=30)
    images.append(jpeg(img))
    caps.append("a bakery sign in the morning light")
    t = make_table(images, caps)
    write_shard(ShardRef.of(str(root / "shards"), 0), t.slice(0, 3))
    write_shard(ShardRef.of(str(root / "shards"), 1), t.slice(3))
    return root


def _rows(root):
    out = []
    for s in (0, 1):
        out += pq.read_table(ShardRef.of(str(root / "shards"), s).parquet).to_pylist()
    return {r["caption"]: r for r in out}


def test_score_with_every_signal_then_recut_without_rescoring(dataset, tmp_path):
    aest, nsfw = _heads(tmp_path)
    base = ["score", str(dataset), "--model", "tiny", "--precision", "fp32"]
    rc = main([*base, "--signals", "text,nsfw,aesthetic", "--aesthetic-head", str(aest), "--unsafe-head", str(nsfw)])
    assert rc == 0
    rows = _rows(dataset)
    assert len(rows) == 6 and all(r["status"] == "success" for r in rows.values())
    for r in rows.values():
        assert r["aesthetic"] is not None and r["nsfw_score"] is not None and r["text_area"] is not None
        assert isinstance(r["nsfw_detections"], list) and 0.0 <= r["punsafe"] <= 1.0
        src = r["signal_sources"]
        assert "aesthetic_mlp.safetensors (laion-aesthetic-mlp)" in src
        assert "punsafe: nsfw_keras_port.safetensors (laion-nsfw-keras)" in src
        assert "rapidocr" in src and "320n.onnx" in src
    spelled = rows["grand opening"]
    assert "grand" in spelled["ocr_text"].lower() and spelled["caption_ocr_overlap"] == 1.0
    assert spelled["text_area"] > 0.02
    assert rows["a bakery sign in the morning light"]["caption_ocr_overlap"] <= 0.2
    assert rows["a bakery sign in the morning light"]["text_area"] > 0.02

    # browse filters on the signals; the stats report has their distributions and sources
    from clipcrawl.pipelines.inspect.browse import BrowseData

    data = BrowseData(dataset)
    got = {r["caption"] for r in data.query({"max_caption_ocr_overlap": "0.5"})["results"]}
    assert "grand opening" not in got and len(got) == 5
    assert {r["caption"] for r in data.query({"min_text_area": "0.02"})["results"]} >= {
        "grand opening", "a bakery sign in the morning light"}
    if importlib.util.find_spec("duckdb") is not None:
        from clipcrawl.pipelines.report.aggregate import aggregate
        from clipcrawl.pipelines.report.html import render
        from clipcrawl.pipelines.report.layout import find_parts

        agg = aggregate(find_parts(str(dataset)))
        assert agg["signals"]["text_area"]["n"] == 6 and sum(agg["signals"]["text_area"]["hist"]["all"]) == 6
        assert agg["signals"]["caption_ocr_overlap"]["max"] == 1.0
        assert any("laion-aesthetic-mlp" in x for x in agg["signals"]["sources"])
        html = render(agg, {})
        assert "Curation signals" in html and "laion-aesthetic-mlp" in html

    # plant a sentinel: a rescore would overwrite it
    ref = ShardRef.of(str(dataset / "shards"), 1)
    t = pq.read_table(ref.parquet)
    i = t.column_names.index("ocr_text")
    t = t.set_column(i, "ocr_text", pa.array([v if c != "grand opening" else v + " SENTINEL"
                                              for v, c in zip(t.column("ocr_text").to_pylist(),
                                                              t.column("caption").to_pylist())]))
    write_parquet(t, ref.parquet)

    rc = main([*base, "--signals", "text,nsfw,aesthetic", "--aesthetic-head", str(aest),
               "--unsafe-head", str(nsfw), "--max-caption-ocr-overlap", "0.5"])
    assert rc == 0
    rows = _rows(dataset)
    assert rows["grand opening"]["ocr_text"].endswith("SENTINEL")  # not rescored
    assert rows["grand opening"]["status"] == "filtered_image"
    assert rows["grand opening"]["error_message"].startswith("signals: caption_ocr_overlap 1.000 > 0.5")
    assert sum(r["status"] == "success" for r in rows.values()) == 5

    # another cut: the top half by aesthetic; the earlier signal rule is re-decided (not given now)
    rc = main([*base, "--top-fraction", "0.5", "--top-fraction-by", "aesthetic"])
    assert rc == 0
    rows = _rows(dataset)
    kept = sorted((r["aesthetic"] for r in rows.values() if r["status"] == "success"), reverse=True)
    dropped = [r["aesthetic"] for r in rows.values() if r["status"] == "filtered_image"]
    assert len(kept) == 3 and min(kept) >= max(dropped)
    assert rows["grand opening"]["ocr_text"].endswith("SENTINEL")


def test_missing_extra_and_head_are_exit_2(dataset, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # as if the [nudity] extra were not installed
    rc = main(["score", str(dataset), "--model", "tiny", "--signals", "text,nsfw"])
    assert rc == 2
    assert "[nudity]" in capsys.readouterr().err
    rc = main(["score", str(dataset), "--model", "tiny", "--signals", "aesthetic"])
    assert rc == 2
    assert "--aesthetic-head" in capsys.readouterr().err
    assert all(r["aesthetic"] is None for r in _rows(dataset).values())  # nothing written


def test_aesthetic_head_of_another_width_is_exit_2(dataset, tmp_path, capsys):
    aest, _ = _heads(tmp_path, d=768)
    rc = main(["score", str(dataset), "--model", "tiny", "--signals", "aesthetic", "--aesthetic-head", str(aest)])
    assert rc == 2
    assert "768-d embeddings but the CLIP model gives 64-d" in capsys.readouterr().err
