"""The config loader on arbitrary YAML and mappings: a config or a ConfigError, never a crash."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from clipcrawl.schemas.config import ConfigError, RunConfig, load_config, parse_config

from .conftest import FUZZ, FUZZ_HEAVY

KEYS = st.sampled_from(["dataset", "sources", "crawl", "urls", "commoncrawl", "seeds", "path", "download",
                        "filters", "clip", "output", "dedup", "threshold", "workers", "engine", "x", "paths",
                        "allowed_networks", "samples_per_shard", "storage_options", "model", "log_format"])
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(KEYS, c, max_size=4),
                      max_leaves=15)


@FUZZ
@given(doc=st.dictionaries(KEYS, VALUES, max_size=6) | VALUES)
def test_parse_config_any_document(doc):
    try:
        cfg = parse_config(doc, RunConfig, "fuzz.yaml")
    except ConfigError as e:
        assert "fuzz.yaml" in str(e)
        return
    assert isinstance(cfg, RunConfig)


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_load_config_any_text(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "run.yaml"
        p.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            load_config(p)
        except ConfigError as e:
            assert str(p) in str(e)


@FUZZ_HEAVY
@given(doc=st.dictionaries(KEYS, VALUES, max_size=6))
def test_load_config_any_yaml_mapping(doc):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "run.yaml"
        p.write_text(yaml.safe_dump(doc))
        try:
            load_config(p)
        except ConfigError as e:
            assert str(p) in str(e)
