"""Presets: config overrides (explicit fields win) and exact keep sets on a constructed dataset."""

import pyarrow as pa
import pytest

from clipcrawl.filters.curate import curate
from clipcrawl.filters.presets import PRESETS, apply_preset, describe_preset
from clipcrawl.schemas.config import ConfigError, FiltersConfig, parse_config

ROWS = [  # key, caption, language, original w, h, bytes, clip_similarity
    ("a", "a brown dog running on the beach", "en", 640, 480, 60_000, 0.36),
    ("b", "ein brauner Hund am Strand spielt", "de", 640, 480, 60_000, 0.33),
    ("c", "a tiny icon", "en", 64, 64, 4_000, 0.31),
    ("d", "a very wide panorama of a city", "en", 1600, 400, 90_000, 0.29),
    ("e", "two dogs", "en", 300, 300, 20_000, 0.27),
    ("f", "Dog", "en", 500, 500, 30_000, 0.25),
    ("g", "a cat sleeping on a sofa", "en", 800, 600, 70_000, 0.22),
    ("h", "a red tench fish in a net", "en", 199, 600, 40_000, 0.40),
    ("i", "la tour eiffel la nuit en hiver", "fr", 1000, 800, 80_000, 0.30),
    ("j", "abcd", "en", 400, 400, 10_000, 0.35),
]


def _dataset():
    cols = list(zip(*ROWS))
    n = len(ROWS)
    t = pa.table({"key": list(cols[0]), "caption": list(cols[1]), "language": list(cols[2]),
                  "original_width": pa.array(cols[3], pa.int32()), "original_height": pa.array(cols[4], pa.int32()),
                  "bytes": pa.array(cols[5], pa.int64()), "clip_similarity": pa.array(cols[6], pa.float32()),
                  "status": ["success"] * n, "error_message": [None] * n})
    return [t.slice(0, 5), t.slice(5)]  # two shards


def _kept(name, **filters):
    cfg = apply_preset(FiltersConfig(**filters), name)
    out, _ = curate(_dataset(), cfg)
    return "".join(k for t in out for k, s in zip(t.column("key").to_pylist(), t.column("status").to_pylist())
                   if s == "success")


# datacomp-intersect-b32-l14 ranks by a second model's score these rows lack: tests/filters/clip/test_multi_model.py
@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"datacomp-intersect-b32-l14"}))
def test_preset_exact_keep_sets(name):
    assert _kept(name) == EXPECTED[name]


EXPECTED = {
    "laion400m": "abhi",  # >= 5 chars (j: 4), >= 5000 bytes (c), >= 0.30 (d 0.29, e, f, g)
    "laion2b-en": "adh",  # >= 0.28 and English: a, d (0.29), h; b de, i fr; c bytes; j 4 chars
    "datacomp-basic": "ag",  # en (b, i), > 2 words (e, f), > 5 chars (j), side >= 200 (c, h 199), aspect <= 3 (d 4.0)
    "datacomp-clip-top30": "ahj",  # top ceil(0.3 * 10) = 3 by score over both shards
    "metaclip": "abh",  # shipped entries as plain substrings: a 'beach', b 'bra' (in "brauner", as MetaCLIP
    # matches), h 'tench'; the rest match nothing and are dropped; counts <= t keep every matched pair
    "laion-aesthetics-6plus": "abcdefghij",  # no aesthetic column here: rows without the signal pass its rule
    # (tests/filters/signals/test_rules.py has the rule on scored rows)
}


def test_overrides_explicit_fields_win_and_describe(tmp_path):
    (tmp_path / "u.txt").write_text("http://127.0.0.1/a.jpg\n")
    cfg = parse_config({"dataset": str(tmp_path / "ds"), "sources": {"urls": {"path": str(tmp_path / "u.txt")}},
                        "preset": "laion2b-en",
                        "filters": {"clip": {"threshold": 0.25}}})
    out = apply_preset(cfg)
    assert out.filters.clip.threshold == 0.25  # explicit
    assert out.filters.clip.model == "ViT-B-32" and out.filters.text.languages == ["en"]
    assert out.filters.image.min_bytes == 5000 and cfg.filters.image.min_bytes == 0  # pure
    assert describe_preset("datacomp-basic")[0].startswith("preset datacomp-basic: DataComp")
    assert set(PRESETS) == {"laion400m", "laion2b-en", "datacomp-basic", "datacomp-clip-top30",
                            "datacomp-intersect-b32-l14", "metaclip", "laion-aesthetics-6plus"}
    with pytest.raises(ConfigError, match="unknown preset"):
        apply_preset(FiltersConfig(), "laion5b")
