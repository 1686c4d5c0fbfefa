"""The signal rules over a dataset's tables: order, reasons, the dataset-wide top fraction, re-decided on
every curation, and presets that set them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from clipcrawl.filters.curate import curate, needs_curation
from clipcrawl.filters.presets import apply_preset, describe_preset
from clipcrawl.filters.signals import check_signals
from clipcrawl.filters.signals.rules import apply_signal_rules, describe
from clipcrawl.schemas.components import FiltersConfig, SignalsConfig
from clipcrawl.schemas.config import parse_config
from clipcrawl.schemas.configbase import ConfigError


def _table(aes, area, overlap, nsfw, status=None):
    n = len(aes)
    return pa.table({"key": [f"k{i}" for i in range(n)], "status": status or ["success"] * n,
                     "error_message": pa.nulls(n, pa.string()),
                     "aesthetic": pa.array(aes, pa.float32()), "text_area": pa.array(area, pa.float32()),
                     "caption_ocr_overlap": pa.array(overlap, pa.float32()),
                     "nsfw_score": pa.array(nsfw, pa.float32())})


def test_thresholds_in_order_with_reasons():
    t = _table([5, 7, 3, None], [0.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.9, 0.0, 0.0, None])
    cfg = SignalsConfig(max_nsfw_score=0.5, max_text_area=0.3, max_caption_ocr_overlap=0.5, min_aesthetic=4)
    out = apply_signal_rules([t], cfg)[0].to_pylist()
    assert [r["status"] for r in out] == ["filtered_image", "filtered_image", "filtered_image", "success"]
    assert out[0]["error_message"] == "signals: nsfw_score 0.900 > 0.5"
    assert out[1]["error_message"] == "signals: text_area 0.500 > 0.3"  # the first failing rule is the reason
    assert out[2]["error_message"] == "signals: aesthetic 3.000 < 4"
    assert out[3]["error_message"] is None  # not computed: passes


def test_top_fraction_is_dataset_wide_and_direction_follows_the_column():
    a = _table([1, 2, 3], [0.1, 0.2, 0.3], [0, 0, 0], [0, 0, 0])
    b = _table([4, 5, 6], [0.4, 0.5, 0.6], [0, 0, 0], [0, 0, 0])
    out = apply_signal_rules([a, b], SignalsConfig(top_fraction=0.5, top_by="aesthetic"))
    kept = [r["aesthetic"] for t in out for r in t.to_pylist() if r["status"] == "success"]
    assert kept == [4, 5, 6]
    out = apply_signal_rules([a, b], SignalsConfig(top_fraction=0.5, top_by="text_area"))
    kept = [round(r["text_area"], 2) for t in out for r in t.to_pylist() if r["status"] == "success"]
    assert kept == [0.1, 0.2, 0.3]
    assert "above the top 50% cut-off" in out[1].column("error_message")[0].as_py()


def test_curate_re_decides_signal_rules():
    t = _table([5, 7], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0])
    f = FiltersConfig(signals=SignalsConfig(max_caption_ocr_overlap=0.5), clip={"enabled": False},
                      text={"enabled": False})
    assert needs_curation(f)
    once, _ = curate([t], f)
    assert once[0].column("status").to_pylist() == ["success", "filtered_image"]
    looser = f.model_copy(update={"signals": SignalsConfig(max_caption_ocr_overlap=1.0)})
    again, _ = curate(once, looser)
    assert again[0].column("status").to_pylist() == ["success", "success"]


def test_yaml_short_form_and_unknown_signal():
    f = parse_config({"signals": ["text", "nsfw", "text"]}, FiltersConfig)
    assert f.signals.compute == ["text", "nsfw"]
    with pytest.raises(ConfigError, match="signals.compute"):
        parse_config({"signals": ["ocr"]}, FiltersConfig)


def test_preset_sets_signals_and_explicit_fields_win():
    f = apply_preset(FiltersConfig(), "laion-aesthetics-6plus")
    assert f.signals.compute == ["aesthetic"] and f.signals.min_aesthetic == 6.0 and f.clip.model == "ViT-L-14"
    assert "aesthetic >= 6" in " ".join(describe_preset("laion-aesthetics-6plus"))
    mine = parse_config({"signals": {"min_aesthetic": 5.5, "aesthetic_head": "x.pth"}}, FiltersConfig)
    f = apply_preset(mine, "laion-aesthetics-6plus")
    assert f.signals.min_aesthetic == 5.5 and f.signals.aesthetic_head == "x.pth"
    assert describe(f.signals) == ["aesthetic >= 5.5"]
    t = _table([6.5, 5.9, 6.0], [0, 0, 0], [0, 0, 0], [0, 0, 0])
    out, _ = curate([t], apply_preset(FiltersConfig(text={"enabled": False}), "laion-aesthetics-6plus"))
    assert out[0].column("status").to_pylist() == ["success", "filtered_image", "success"]
    with pytest.raises(ConfigError, match="--aesthetic-head"):
        check_signals(apply_preset(FiltersConfig(), "laion-aesthetics-6plus").signals)


def test_run_preflight_checks_the_aesthetic_head_width(tmp_path):
    """``clipcrawl run`` (and ``--check``) refuses a head of another width before anything starts."""
    from safetensors.numpy import save_file

    from clipcrawl.pipelines.preflight import check_run
    from clipcrawl.schemas.config import RunConfig

    head = {"weight": np.zeros((1, 768), np.float32), "bias": np.zeros(1, np.float32)}
    save_file(head, str(tmp_path / "v1.safetensors"))
    (tmp_path / "u.txt").write_text("http://127.0.0.1/a.jpg\n")
    cfg = parse_config({"dataset": str(tmp_path / "ds"), "sources": {"urls": {"path": str(tmp_path / "u.txt")}},
                        "filters": {"clip": {"model": "tiny", "pretrained": None},
                                    "signals": {"compute": ["aesthetic"],
                                                "aesthetic_head": str(tmp_path / "v1.safetensors")}}}, RunConfig)
    with pytest.raises(ConfigError, match="768-d embeddings but the CLIP model gives 64-d"):
        check_run(cfg)
    cfg = parse_config({"dataset": str(tmp_path / "ds"), "sources": {"urls": {"path": str(tmp_path / "u.txt")}},
                        "filters": {"signals": {"compute": ["aesthetic"]}}}, RunConfig)
    with pytest.raises(ConfigError, match="--aesthetic-head"):
        check_run(cfg)
