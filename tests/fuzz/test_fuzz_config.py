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


# ---------------------------------------------------------------- hostile YAML (issue 24)
ANCHORS = st.lists(st.lists(st.integers(0, 30), min_size=0, max_size=12), min_size=1, max_size=14)


@FUZZ_HEAVY
@given(graph=ANCHORS, nested=st.integers(0, 40))
def test_load_config_aliases_and_nesting_are_bounded(graph, nested):
    """Random alias graphs (each anchor a list of aliases of earlier anchors: up to 12^14 values once
    expanded) and random nesting: a config or a ConfigError, quickly, and never more than the bounds."""
    import time

    lines = ["dataset: ds", 'sources: {crawl: {seeds: ["http://example.com/"]}}', "output:", "  storage_options:"]
    for i, refs in enumerate(graph):
        items = [f"*a{r % i}" for r in refs] if i else ["lol"] * len(refs)
        lines.append(f"    a{i}: &a{i} [{', '.join(items)}]")
    lines.append("    deep: " + "[" * nested + "]" * nested)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "run.yaml"
        p.write_text("\n".join(lines) + "\n")
        t0 = time.monotonic()
        try:
            cfg = load_config(p)
        except ConfigError as e:
            assert str(p) in str(e)
        else:
            cfg.output.model_dump()  # the redaction of the saved config finishes too
        assert time.monotonic() - t0 < 5


NUMERIC = st.sampled_from([("download", "image_size"), ("download", "timeout"), ("download", "concurrency"),
                           ("download", "max_bytes"), ("download", "max_image_area"), ("download", "delay"),
                           ("download", "jpeg_draft_gap"), ("filters.clip", "threshold"),
                           ("filters.clip", "top_fraction"), ("filters.text", "max_chars"),
                           ("dedup", "semantic_threshold"), ("dedup", "phash_verify_threshold"),
                           ("output", "samples_per_shard"), ("ray_gpus_per_actor", None)])


@FUZZ
@given(where=NUMERIC, value=st.floats() | st.integers(-(2**70), 2**70))
def test_numeric_fields_accept_only_finite_bounded_values(where, value):
    import math

    section, name = where
    doc: dict = {"dataset": "ds", "sources": {"crawl": {"seeds": ["http://example.com/"]}}}
    if name is None:
        doc[section] = value
    else:
        node = doc
        for part in section.split("."):
            node = node.setdefault(part, {})
        node[name] = value
    try:
        cfg = parse_config(doc, RunConfig, "fuzz.yaml")
    except ConfigError as e:
        assert "fuzz.yaml" in str(e) and (name or section) in str(e)
        return
    got = cfg
    for part in (section.split(".") + [name]) if name else [section]:
        got = getattr(got, part)
    assert not (isinstance(got, float) and math.isnan(got))
    assert name == "max_image_area" or math.isfinite(got)
