"""``clipcrawl stats`` over broken shard files: they are named, left out, and the command exits 1."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pandas as pd
import pytest

from clipcrawl.cli import main
from clipcrawl.pipelines.report.aggregate import aggregate
from clipcrawl.pipelines.report.check import tar_problem
from clipcrawl.pipelines.report.html import render
from clipcrawl.pipelines.report.layout import find_parts
from clipcrawl.pipelines.report.samples import pick_samples
from tests.pipelines.report.test_aggregate import _img2dataset_dir

pytestmark = pytest.mark.unverified("shard files are broken on purpose")


@pytest.fixture
def broken(demo, tmp_path):
    """The demo dataset with ``00001.parquet`` replaced by garbage and ``00002.tar`` cut in half."""
    root = tmp_path / "broken"
    shutil.copytree(demo.root, root)
    sd = root / "shards"
    (sd / "00001.parquet").write_bytes(b"this is not a parquet file \x00\xff" * 100)
    tar = (sd / "00002.tar").read_bytes()
    (sd / "00002.tar").write_bytes(tar[: len(tar) // 2 + 100])
    return root


def _expected_statuses(root) -> dict[str, int]:
    df = pd.concat([pd.read_parquet(root / "shards" / f"{s}.parquet") for s in ("00000", "00002")])
    return df["status"].value_counts().to_dict()


def test_json_names_unreadable_and_exits_1(broken, capsys):
    assert main(["stats", str(broken), "--json"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    bad = {u["file"]: u["error"] for u in out["unreadable"]}
    sd = f"{broken}/shards"
    assert set(bad) == {f"{sd}/00001.parquet", f"{sd}/00002.tar"}
    assert "not a readable Parquet file" in bad[f"{sd}/00001.parquet"]
    assert "truncated" in bad[f"{sd}/00002.tar"]
    # the rest of the report is there, computed from the readable files
    assert out["statuses"] == _expected_statuses(broken)
    assert out["dataset"]["sample_files"] == 2 and out["dataset"]["tar_files"] == 2
    assert out["funnel"][-1]["step"] == "written" and out["captions"]["chars_summary"]["n"] > 0
    assert out["throughput"]["shards"] == 3 and len(out["samples"]["lowest_kept"]) == 12
    assert f"warning: unreadable: {sd}/00001.parquet" in captured.err and "could not be read" in captured.err


def test_terminal_names_them(broken, capsys):
    assert main(["stats", str(broken)]) == 1
    out = capsys.readouterr().out
    sd = f"{broken}/shards"
    assert f"warning: unreadable: {sd}/00001.parquet: not a readable Parquet file" in out
    assert f"warning: unreadable: {sd}/00002.tar: truncated" in out
    assert "Funnel" in out and "Highest-scoring dropped by CLIP" in out


def test_thumbnails_skip_the_truncated_tar(broken):
    parts = find_parts(broken)
    grids = pick_samples(parts, n_random=60)
    kept = grids["random_kept"] + grids["lowest_kept"]
    assert {c["shard"] for c in kept} == {"00000", "00002"}  # 00001.parquet is unreadable
    assert all((c["image"] is None) == (c["shard"] == "00002") for c in kept)
    assert [u["file"] for u in parts.unreadable] == [f"{broken}/shards/00002.tar", f"{broken}/shards/00001.parquet"]


def test_html_lists_them():
    page = render({"unreadable": [{"file": "s3://b/p/shards/00002.tar", "error": "truncated <tar>"}]})
    assert 'id="unreadable"' in page and "s3://b/p/shards/00002.tar" in page and "truncated &lt;tar&gt;" in page


def test_corrupt_pages_with_a_valid_footer(tmp_path):
    """DuckDB reads the footer fine but not the pages: the file is dropped, the others counted."""
    df = _img2dataset_dir(tmp_path)
    f = tmp_path / "00000.parquet"
    b = bytearray(f.read_bytes())
    for i in range(8, len(b) // 2):  # data pages garbled, footer intact
        b[i] = (b[i] * 7 + 13) % 256
    f.write_bytes(bytes(b))
    agg = aggregate(find_parts(tmp_path))
    assert [u["file"] for u in agg["unreadable"]] == [str(f)]
    assert sum(agg["statuses"].values()) == int((df["key"].str[:5] == "00001").sum()) == 50


def _tar(n: int, end_marker: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(n):
            data = bytes(range(256)) * (3 + i)
            info = tarfile.TarInfo(f"{i:04d}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if not end_marker:  # the members only: what a writer that never closed its tar leaves
        raw = raw[: raw.rindex(bytes(range(256))) + 256]
        raw += b"\0" * (-len(raw) % 512)
    return raw


def test_tar_problem(tmp_path):
    good, p = _tar(5), tmp_path / "t.tar"
    for data, ok in ((good, True), (_tar(5, end_marker=False), False), (good[:2048], False),
                     (good[:2000], False), (b"", False), (b"garbage" * 300, False)):
        p.write_bytes(data)
        assert (tar_problem(str(p)) is None) == ok, (len(data), tar_problem(str(p)))
