"""``clipcrawl card``: the Hub's YAML header and the body, and ``datasets.load_dataset(DATASET)``
reads the dataset with the card in place (both configs)."""

from __future__ import annotations

import shutil

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.fixture(scope="module")
def carded(indexed_demo, tmp_path_factory):
    from clipcrawl.cli import main

    out = tmp_path_factory.mktemp("card") / "demo"
    shutil.copytree(indexed_demo, out)
    assert main(["-q", "card", str(out), "--license", "cc-by-4.0"]) == 0
    return out


def test_header_and_body(carded):
    import pyarrow.parquet as pq

    text = (carded / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "cc-by-4.0" and meta["size_categories"] == ["n<1K"]
    assert "zero-shot-image-classification" in meta["task_categories"] and meta["language"] == ["en"]
    assert meta["configs"][0] == {"config_name": "default",
                                  "data_files": [{"split": "train", "path": "samples/*.parquet"}]}
    kept = pq.read_table(carded / "samples").num_rows
    assert meta["dataset_info"]["splits"][0]["num_examples"] == kept and len(meta["configs"]) == 1
    import datasets

    want = datasets.Features.from_arrow_schema(pq.read_schema(next((carded / "samples").glob("*.parquet"))))
    assert meta["dataset_info"]["features"] == want._to_yaml_list()
    for section in ("## Sources and dates", "## Filtering rules and thresholds", "## Models", "## Funnel",
                    "## Opt-outs honoured", "## Known limitations"):
        assert section in text
    assert "threshold **0.4**" in text and "`clipcrawl-tiny`" in text
    assert f"| success | {kept} |" in text and "| candidates | 53 |" in text
    assert "1 page(s) were never fetched" in text and "1 page(s) withheld" in text  # the demo's robots + noai pages


def test_load_dataset_with_card(carded, tmp_path, monkeypatch, caplog):
    import pyarrow.parquet as pq

    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    kept = pq.read_table(carded / "samples")
    ds = datasets.load_dataset(str(carded), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == kept.num_rows and sorted(ds["key"]) == sorted(kept.column("key").to_pylist())
    assert ds.features["found_at"].dtype.startswith("timestamp") and ds.features["phash"].dtype == "uint64"
    assert "Ignoring part of dataset_info" not in caplog.text
    try:  # the call the card shows for the images
        images = datasets.load_dataset("webdataset", data_files=str(carded / "shards" / "*.tar"), split="train",
                                       cache_dir=str(tmp_path / "hf"))
    except datasets.exceptions.DatasetGenerationError as e:
        cause = repr(e.__cause__ or e.__context__)
        if "to null" in cause:  # the Hub's JSON inference: a column null in the first samples (fixed elsewhere)
            pytest.xfail(f"webdataset json column typed null from its first values: {cause[:200]}")
        raise
    assert images.num_rows == kept.num_rows and images[0]["jpg"].size[0] > 0
