"""``clipcrawl run`` (two incremental runs) and ``clipcrawl dedup`` with a partitioned dedup index."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clipcrawl.base.shardfiles import list_shards
from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent
from tests.pipelines.test_run import clipcrawl, write_config

pytestmark = [pytest.mark.slow, pytest.mark.network]
COLUMNS = ["key", "status", "duplicate_of", "dedup_method", "error_message"]


def _rows(ds: Path) -> list[tuple]:
    out = []
    for ref in list_shards(str(ds)):
        t = pq.read_table(ref.parquet, columns=COLUMNS)
        out += list(zip(*[t.column(c).to_pylist() for c in COLUMNS]))
    return sorted(out)


def test_run_and_dedup_with_partitions_equal_single_index(tmp_path):
    content = DemoSiteContent(seed=5, n_images=8)
    with DemoSite(content) as site:
        cfgs = {}
        for p in (1, 3):
            cfgs[p] = write_config(tmp_path / f"run{p}.yaml", tmp_path / f"ds{p}", site.url, dedup={"partitions": p},
                                   sources={"crawl": {"seeds": [site.url], "allowed_networks": ["127.0.0.0/8"],
                                                      "max_pages": 100, "revisit_after_days": 1e-9}})
        for p in (1, 3):
            r = clipcrawl("run", str(cfgs[p]))
            assert r.returncode == 0, r.stderr[-3000:]
        content.add_gallery(5)
        for p in (1, 3):  # run 2 syncs the index and dedups against run 1 (published)
            r = clipcrawl("run", str(cfgs[p]))
            assert r.returncode == 0, r.stderr[-3000:]
    single, parted = _rows(tmp_path / "ds1"), _rows(tmp_path / "ds3")
    assert single == parted and any(row[3] for row in single)
    top = json.loads((tmp_path / "ds3" / "dedup" / "partitions.json").read_text())
    assert top["partitions"] == 3 and top["rows"] == sum(row[1] == "success" for row in parted)
    assert sorted(d.name for d in (tmp_path / "ds3" / "dedup").glob("part-*")) == ["part-00", "part-01", "part-02"]
    r = clipcrawl("dedup", str(tmp_path / "ds3"), "--dedup-partitions", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    top = json.loads((tmp_path / "ds3" / "dedup" / "partitions.json").read_text())
    assert top["partitions"] == 2 and top["rows"] == sum(row[1] == "success" for row in _rows(tmp_path / "ds3"))
