"""The packaged detectors on real images: RapidOCR's bundled PP-OCR (text) and NudeNet's 320n (nudity)."""

from __future__ import annotations

import numpy as np
import pytest

from clipcrawl.filters.signals.text import caption_overlap, union_area, words
from tests.filters.signals.conftest import render_text, safe_photos


def test_caption_overlap_rule():
    assert caption_overlap("Summer SALE 50% off", ["SUMMER SALE", "50% OFF"]) == 1.0
    assert caption_overlap("a dog on a beach", ["SALE"]) == 0.0
    assert caption_overlap("big sale today", ["BIGSALE"]) == pytest.approx(2 / 3)  # merged OCR words
    assert caption_overlap("", ["x"]) == 0.0 and caption_overlap("a cat", []) == 0.0
    assert words("Ça va, Zoë?") == ["ça", "va", "zoë"]


def test_is_text_rule():
    from clipcrawl.filters.signals.text import is_text

    line = np.array([[10, 10], [110, 10], [110, 40], [10, 40]])
    assert is_text("Open 24h", 0.95, line, 200)
    assert not is_text("Open 24h", 0.6, line, 200)  # low recognition score
    assert not is_text("★", 0.99, line, 200) and not is_text("8", 0.99, line, 200)  # a lone glyph
    assert not is_text("米米", 0.94, np.array([[0, 0], [90, 0], [90, 141], [0, 141]]), 256)  # taller than half


def test_union_area_counts_overlaps_once():
    box = np.array([[0, 0], [9, 0], [9, 9], [0, 9]])
    assert union_area([box], 20, 20) == pytest.approx(100 / 400)
    assert union_area([box, box + 5], 20, 20) == pytest.approx((100 + 100 - 25) / 400)
    assert union_area([], 20, 20) == 0.0


@pytest.fixture(scope="module")
def ocr():
    pytest.importorskip("rapidocr", reason="extra [ocr] (rapidocr) not installed")
    from clipcrawl.filters.signals.text import TextSignal

    return TextSignal(threads=2, device="cpu").ready()


def test_ocr_reads_rendered_text_at_its_box(ocr, fonts):
    img, box = render_text("Summer sale 50% off", fonts[0])
    px = np.asarray(img)
    vals = ocr.compute_one(px, "Summer sale 50% off", 0, None)
    assert "sale" in vals["ocr_text"].lower()
    truth = (box[2] - box[0]) * (box[3] - box[1]) / (px.shape[0] * px.shape[1])
    assert truth * 0.6 < vals["text_area"] < truth * 2.5, (vals, truth)
    assert vals["caption_ocr_overlap"] >= 0.75
    assert "rapidocr" in ocr.source() and "Apache-2.0" in ocr.source()


def test_ocr_on_a_plain_background_reads_nothing(ocr):
    px = np.full((200, 300, 3), 128, np.uint8)
    assert ocr.compute_one(px, "grey", 0, None) == {"text_area": 0.0, "ocr_text": "", "caption_ocr_overlap": 0.0}


@pytest.fixture(scope="module")
def nude():
    pytest.importorskip("nudenet", reason="extra [nudity] (nudenet) not installed")
    from clipcrawl.filters.signals.nsfw import NsfwSignal

    return NsfwSignal(threads=2, device="cpu").ready()


def test_nudenet_on_safe_real_photos(nude, testdata):
    from clipcrawl.filters.signals.base import decode_rgb

    photos = safe_photos(testdata)[:8]
    scores = []
    for p in photos:
        vals = nude.compute_one(decode_rgb(p.read_bytes()), "", 0, None)
        scores.append(vals["nsfw_score"])
        for d in vals["nsfw_detections"]:
            assert set(d) == {"label", "score", "box"} and 0 <= d["score"] <= 1
            assert all(0 <= v <= 1 for v in d["box"]) and d["box"][0] <= d["box"][2]
    assert sum(s > 0.5 for s in scores) == 0, dict(zip(photos, scores))
    assert "320n.onnx" in nude.source() and "MIT" in nude.source()


def test_nudenet_finds_the_astronauts_face(nude, testdata):
    """A real detection (not only empty lists): NudeNet's FACE classes on the astronaut portrait."""
    from clipcrawl.filters.signals.base import decode_rgb

    vals = nude.compute_one(decode_rgb((testdata / "images/photos/astronaut.png").read_bytes()), "", 0, None)
    assert any(d["label"].startswith("FACE_") for d in vals["nsfw_detections"]), vals
    assert vals["nsfw_score"] == 0.0


def test_each_signal_is_a_stage_and_bad_images_are_data(ocr, fonts):
    """A signal runs alone as a Stage on the transient image column; an undecodable image becomes
    failed_to_score with its reason, rows that are not success or have no image are left alone."""
    from tests.filters.clip.conftest import make_table
    from tests.filters.signals.conftest import jpeg

    img, _ = render_text("Hello world", fonts[0], size=(300, 120), at=(10, 40))
    t = make_table([jpeg(img), b"not an image", None, jpeg(img)], ["hello world", "x", "y", "z"],
                   ["success", "success", "success", "filtered_text"])
    out = ocr(t).to_pylist()
    assert out[0]["status"] == "success" and "hello" in out[0]["ocr_text"].lower()
    assert out[0]["signal_sources"].startswith("text: rapidocr")
    assert out[1]["status"] == "failed_to_score" and out[1]["error_message"].startswith("signals: decode:")
    assert out[2]["text_area"] is None and out[2]["status"] == "success"
    assert out[3]["text_area"] is None and out[3]["status"] == "filtered_text"
