"""``clipcrawl stats s3://bucket/prefix`` reports a dataset on a real S3-compatible server (SeaweedFS)
exactly as it reports the same dataset written locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fsspec
import pandas as pd
import pytest

from clipcrawl.base.storage import atomic_open
from clipcrawl.cli import main
from clipcrawl.pipelines.report.layout import find_parts
from clipcrawl.pipelines.report.samples import pick_samples

from .fixtures import make_dataset

pytestmark = pytest.mark.network

#: what depends only on the data, not on where it is
SAME = ("funnel", "statuses", "causes", "domains", "captions", "languages", "images", "clip", "safety", "dedup",
        "shards", "by_run", "columns_missing", "threshold")


def _stats(args: list[str], env: dict[str, str]) -> tuple[int, dict, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "stats", *args, "--json"], env={**base, **env},
                       capture_output=True, text=True, timeout=120)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else {}), r.stderr


def _dataset(root: str) -> None:
    make_dataset(root, n_shards=2, n=12, png_every=4)
    make_dataset(root, n_shards=1, n=9, run=2, first=2)  # an incremental second run


@pytest.mark.slow  # two CLI processes: 17-25 s wall on the loaded 2-core box
def test_stats_on_s3_equals_local(s3_server, s3_url, tmp_path):
    local = str(tmp_path / "ds")
    for root in (local, s3_url):
        _dataset(root)
    env = {"AWS_ACCESS_KEY_ID": s3_server.key, "AWS_SECRET_ACCESS_KEY": s3_server.secret,
           "FSSPEC_S3_ENDPOINT_URL": s3_server.endpoint}
    rc, remote, err = _stats([s3_url], env)
    assert rc == 0, err
    rc, here, err = _stats([local], {})
    assert rc == 0, err
    for key in SAME:
        assert remote[key] == here[key], key
    for key in ("shards", "count", "successes", "bytes"):  # the times are when each copy was written
        assert remote["throughput"][key] == here["throughput"][key], key
    df = pd.concat([pd.read_parquet(f) for f in sorted((tmp_path / "ds" / "shards").glob("[0-9]*.parquet"))])
    assert remote["statuses"] == df["status"].value_counts().to_dict() and len(df) == 33
    assert remote["funnel"][-1] == {"step": "written", "count": int((df["status"] == "success").sum()),
                                    "pct": round(100 * (df["status"] == "success").mean(), 2), "note": None}
    assert {k: v for k, v in remote["dataset"].items() if k != "root"} == \
           {k: v for k, v in here["dataset"].items() if k != "root"}
    assert remote["dataset"]["root"] == s3_url and remote["unreadable"] == []  # the URL intact, not s3:/bucket
    assert [r["run"] for r in remote["runs"]] == ["1", "2"]
    assert {k: v for k, v in remote["manifest"]["fields"].items() if k != "updated"} == \
           {k: v for k, v in here["manifest"]["fields"].items() if k != "updated"}
    # the same picks, and the thumbnails of the kept ones were read from the tars on S3
    for grid in ("random_kept", "lowest_kept", "top_dropped_clip"):
        assert [c["key"] for c in remote["samples"][grid]] == [c["key"] for c in here["samples"][grid]]
    grids = pick_samples(find_parts(s3_url))  # in this process: the s3_server fixture set AWS_* here
    kept = grids["random_kept"] + grids["lowest_kept"]
    assert [c["key"] for c in kept] == [c["key"] for g in ("random_kept", "lowest_kept") for c in here["samples"][g]]
    assert kept and all(c["image"] and c["image_from"] == f"{c['shard']}.tar" for c in kept)


def test_stats_on_s3_names_unreadable_url(s3_server, s3_url, capsys, monkeypatch):
    monkeypatch.setattr(fsspec.config, "conf", {})  # --storage-options sets process-wide defaults: undo them
    _dataset(s3_url)
    with atomic_open(f"{s3_url}/shards/00001.parquet") as f:
        f.write(b"not parquet" * 50)
    assert main(["stats", s3_url, "--json", "--storage-options", json.dumps(s3_server.storage_options)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [u["file"] for u in out["unreadable"]] == [f"{s3_url}/shards/00001.parquet"]
    assert sum(out["statuses"].values()) == 12 + 9 and out["dataset"]["root"] == s3_url
