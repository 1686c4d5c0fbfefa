from __future__ import annotations

import numpy as np
import pytest

from clipcrawl.filters.dedup import MarkDuplicates
from clipcrawl.schemas.config import DedupConfig

from .helpers import encode, jpeg, picture, statuses, table

pytest.importorskip("faiss")


def run(rows, **cfg):
    cfg.setdefault("index", False)
    return MarkDuplicates(DedupConfig(**cfg))(table(rows))


def test_url_caption_exact():
    out = run([
        {"url": "http://a.com/x.jpg", "caption": "cat", "image": jpeg(1)},
        {"url": "HTTP://A.COM:80/x.jpg#top", "caption": " cat ", "image": jpeg(2)},
        {"url": "http://a.com/x.jpg", "caption": "dog", "image": jpeg(3)},
    ])
    assert statuses(out) == ["success", "duplicate", "success"]
    assert out["dedup_method"].to_pylist()[1] == "url"
    assert out["duplicate_of"].to_pylist()[1] == out["key"].to_pylist()[0]
    assert out["error_message"].to_pylist()[1].startswith("dedup: same normalised URL and caption as ")


def test_sha256_pixels_phash_in_order():
    im = picture(7)
    rows = [
        {"url": "http://a/0", "sha256": "ab" * 32, "image": encode(im, "PNG")},
        {"url": "http://a/1", "sha256": "ab" * 32, "image": jpeg(50)},  # same bytes per sha256
        {"url": "http://a/2", "sha256": "cd" * 32, "image": encode(im, "WEBP", lossless=True)},  # same pixels
        {"url": "http://a/3", "sha256": "ef" * 32, "image": encode(im.resize((120, 90)), "JPEG", quality=70)},
        {"url": "http://a/4", "sha256": "01" * 32, "image": jpeg(8)},
    ]
    out = run(rows, semantic=False)
    assert statuses(out) == ["success", "duplicate", "duplicate", "duplicate", "success"]
    assert out["dedup_method"].to_pylist()[1:4] == ["sha256", "pixels", "phash"]
    assert set(out["duplicate_of"].to_pylist()[1:4]) == {out["key"][0].as_py()}
    assert out["pixel_hash"].null_count == 0 and out["phash"].null_count == 0
    assert "pHash distance" in out["error_message"][3].as_py()


def test_methods_can_be_disabled_and_only_success_rows_take_part():
    im = picture(9)
    rows = [
        {"url": "http://a/0", "image": encode(im, "PNG"), "status": "filtered_clip", "error_message": "clip: low"},
        {"url": "http://a/1", "image": encode(im, "PNG")},
        {"url": "http://a/2", "image": encode(im, "PNG")},
    ]
    out = run(rows, pixels=False, phash=False, semantic=False)
    assert statuses(out) == ["filtered_clip", "success", "success"]
    out = run(rows, phash=False)
    assert statuses(out) == ["filtered_clip", "success", "duplicate"]
    assert out["duplicate_of"][2].as_py() == out["key"][1].as_py()
    assert out["error_message"][0].as_py() == "clip: low" and out["duplicate_of"][0].as_py() is None
    assert MarkDuplicates(DedupConfig(enabled=False, index=False))(table(rows)).equals(table(rows))


def test_keep_rule_clip_then_area_then_order():
    data = encode(picture(11), "PNG")
    rows = [
        {"url": f"http://a/{i}", "image": data, "clip_similarity": c, "original_width": w, "original_height": 100}
        for i, (c, w) in enumerate([(0.30, 100), (0.35, 50), (0.35, 80), (0.35, 80), (None, 900)])
    ]
    out = run(rows)
    assert statuses(out) == ["duplicate", "duplicate", "success", "duplicate", "duplicate"]
    assert set(out["duplicate_of"].to_pylist()) == {None, out["key"][2].as_py()}
    rows = [{"url": f"http://a/{i}", "image": data, "original_width": w, "original_height": 10}
            for i, w in enumerate([10, 30, 20])]
    assert statuses(run(rows)) == ["duplicate", "success", "duplicate"]


def test_semantic_from_embedding_column_no_chaining():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 32))
    e = [base[0], base[0] + 0.1 * rng.normal(size=32), base[1], base[2], base[3]]
    # a chain: 5 ~ 6 and 6 ~ 7 but 5 !~ 7 -> 6 kept first (highest clip) drops both, never transitively
    t = np.linspace(0, 1, 32)
    u, v = np.sin(3 * t), np.cos(5 * t)
    u, v = u / np.linalg.norm(u), v - (v @ u) * u
    v /= np.linalg.norm(v)
    chain = [np.cos(a) * u + np.sin(a) * v for a in (-0.3, 0.0, 0.3)]  # cos(0.3)=0.955, cos(0.6)=0.825
    rows = [{"url": f"http://a/{i}", "image_embedding": list(x), "clip_similarity": 0.3} for i, x in enumerate(e)]
    rows += [{"url": f"http://c/{i}", "image_embedding": list(x), "clip_similarity": c}
             for i, (x, c) in enumerate(zip(chain, (0.3, 0.4, 0.3)))]
    out = run(rows, semantic_threshold=0.95)
    assert statuses(out) == ["success", "duplicate", "success", "success", "success", "duplicate", "success",
                             "duplicate"]
    assert out["dedup_method"][1].as_py() == "semantic"
    assert out["duplicate_of"][5].as_py() == out["duplicate_of"][7].as_py() == out["key"][6].as_py()
    assert "CLIP cosine" in out["error_message"][1].as_py()
    assert statuses(run(rows, semantic=False)) == ["success"] * 8


def test_phash_groups_do_not_chain_and_pick_best():
    im = picture(12, (256, 192))
    variants = [encode(im, "JPEG", quality=q) for q in (95, 60)] + [encode(im.resize((128, 96)), "PNG")]
    rows = [{"url": f"http://a/{i}", "image": b, "clip_similarity": c}
            for i, (b, c) in enumerate(zip(variants, (0.2, 0.5, 0.3)))]
    rows.append({"url": "http://a/x", "image": jpeg(99)})
    out = run(rows, pixels=False)
    assert statuses(out) == ["duplicate", "success", "duplicate", "success"]
    assert set(out["dedup_method"].to_pylist()) == {None, "phash"}


def test_cross_batch_within_one_run_and_row_count():
    stage = MarkDuplicates(DedupConfig(index=False))
    a = stage(table([{"url": "http://a/1", "image": jpeg(1)}, {"url": "http://a/2", "image": jpeg(2)}]))
    b = stage(table([{"url": "http://b/1", "image": jpeg(1)}, {"url": "http://b/3", "image": jpeg(3)}]))
    assert statuses(a) == ["success", "success"] and statuses(b) == ["duplicate", "success"]
    assert b["duplicate_of"][0].as_py() == a["key"][0].as_py()
    assert "(earlier batch)" in b["error_message"][0].as_py()
    assert stage.counts["sha256"] + stage.counts["pixels"] + stage.counts["phash"] == 1


def test_pickles_without_state():
    import pickle

    stage = MarkDuplicates(DedupConfig(index=False))
    stage(table([{"url": "http://a/1", "image": jpeg(1)}]))
    clone = pickle.loads(pickle.dumps(stage))
    out = clone(table([{"url": "http://a/9", "image": jpeg(1)}]))
    assert statuses(out) == ["success"]  # a fresh worker: no memory of the other's batches
