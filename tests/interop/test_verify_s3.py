"""``clipcrawl verify`` on a dataset in a real S3-compatible store (SeaweedFS): clean, then a
corrupted stats file and a truncated tar are found and named by their s3:// URLs."""

from __future__ import annotations

import json

import pytest

from clipcrawl.base.storage import fs_and_path
from clipcrawl.cli import main
from clipcrawl.pipelines.verify import verify

from .fixtures import make_dataset

pytestmark = pytest.mark.network


def test_verify_s3_dataset(s3_url, capsys):
    make_dataset(s3_url, n_shards=2, n=9)
    rep = verify(s3_url)
    assert rep.clean and rep.kind == "dataset" and rep.shards == 2 and rep.rows == 18, rep.findings
    assert main(["verify", s3_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["root"] == s3_url

    fs, _ = fs_and_path(s3_url)
    stats, tar = f"{s3_url}/shards/00001_stats.json", f"{s3_url}/shards/00000.tar"
    doc = json.loads(fs.cat_file(stats))
    fs.pipe_file(stats, json.dumps({**doc, "count": doc["count"] + 1}).encode())
    data = fs.cat_file(tar)
    fs.pipe_file(tar, data[: len(data) // 2])
    fs.invalidate_cache()
    assert main(["verify", s3_url, "--json"]) == 1
    found = {(f["code"], f["path"]) for f in json.loads(capsys.readouterr().out)["findings"]}
    assert ("stats-mismatch", stats) in found and ("tar-unreadable", tar) in found
