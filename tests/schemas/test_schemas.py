"""The data contract: schemas, conform(), keys, statuses and the typed config."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import yaml

from clipcrawl.schemas import (
    IMG2DATASET_COLUMNS,
    PAGES,
    PAIRS,
    SAMPLES,
    STATS,
    PageStatus,
    Status,
    check,
    conform,
    is_valid_key,
    sample_key,
    shard_name,
)
from clipcrawl.schemas.config import ConfigError, RunConfig, dump_config, load_config, parse_config


def test_samples_is_a_superset_of_img2dataset():
    assert SAMPLES.names[: len(IMG2DATASET_COLUMNS)] == list(IMG2DATASET_COLUMNS)
    assert {"clip_similarity", "duplicate_of", "dedup_method", "phash", "pixel_hash"} <= set(SAMPLES.names)
    assert {"key", "url", "caption", "page_url", "source", "caption_source"} <= set(PAIRS.names)
    assert {"count", "successes", "failed_to_download", "failed_to_resize", "status_dict"} <= set(STATS.names)
    assert "status" in PAGES.names


def test_status_values_keep_img2dataset_meanings():
    assert {"success", "failed_to_download", "failed_to_resize"} <= {s.value for s in Status}
    assert f"{Status.DUPLICATE}" == "duplicate" and str(PageStatus.OK) == "ok"


def test_conform_casts_fills_orders_and_keeps_extras():
    t = pa.table({"extra": [1], "status": ["success"], "key": ["k"], "url": ["u"], "width": pa.array([3], pa.int64()),
                  "image": [b"x"], "image_embedding": [[0.1]]})
    out = conform(t, SAMPLES)
    check(out, SAMPLES)
    assert out.column_names[-1] == "extra" and "image" not in out.column_names
    assert out.schema.field("width").type == pa.int32() and out.column("caption").null_count == 1
    assert conform(t, SAMPLES, keep_extra=False).column_names == SAMPLES.names


def test_conform_refuses_nulls_in_required_columns():
    with pytest.raises(ValueError, match="key"):
        conform(pa.table({"url": ["u"], "status": ["success"], "key": pa.array([None], pa.string())}), SAMPLES)


def test_keys_are_stable_safe_and_distinct():
    k = sample_key("http://a/b.jpg", "a cat")
    assert k == sample_key("http://a/b.jpg", "a cat") and is_valid_key(k) and len(k) == 20
    assert k != sample_key("http://a/b.jpg", "a dog") and sample_key("u") == sample_key("u", None)
    assert shard_name(42) == "00042"


def _write(tmp_path, data) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(p)


def test_config_errors_name_file_field_and_fix(tmp_path):
    base = {"dataset": "ds", "sources": {"crawl": {"seeds": ["http://example.com/"]}}}
    cases = [
        ({**base, "downlaod": {}}, "downlaod", "remove it"),
        ({**base, "download": {"image_size": "big"}}, "download.image_size", "correct the value"),
        ({**base, "download": {"resize_mode": "stretch"}}, "download.resize_mode", "allowed values"),
        ({"dataset": "ds", "sources": {"crawl": {"seeds_file": "missing.txt"}}}, "sources.crawl.seeds_file", "does not exist"),
        ({"dataset": "ds", "sources": {}}, "sources", "at least one source"),
        ({"sources": base["sources"]}, "dataset", "add it"),
    ]
    for data, field, words in cases:
        path = _write(tmp_path, data)
        with pytest.raises(ConfigError) as e:
            load_config(path)
        msg = str(e.value)
        assert path in msg and field in msg and words in msg, msg
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "dataset: [unclosed"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_resolves_relative_paths_and_round_trips(tmp_path):
    (tmp_path / "seeds.txt").write_text("http://example.com/\n")
    cfg = load_config(_write(tmp_path, {"dataset": "ds", "sources": {"crawl": {"seeds_file": "seeds.txt"}}}))
    assert cfg.dataset == str(tmp_path / "ds") and cfg.sources.crawl.seeds_file == tmp_path / "seeds.txt"
    assert math.isinf(cfg.download.max_aspect_ratio)
    again = parse_config(yaml.safe_load(dump_config(cfg)), RunConfig)
    assert again == cfg
