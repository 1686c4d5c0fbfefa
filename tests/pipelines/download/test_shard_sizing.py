"""``commoncrawl`` -> ``download`` (issue 25 item 9): download's shards hold ``samples_per_shard`` rows however
the input is split into files (``clipcrawl commoncrawl`` writes one pairs file per WARC/WAT), in input order,
resumable; a download started with the older per-file shards still resumes with them."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.cli import main
from clipcrawl.pipelines.inputs import plan_input_shards
from clipcrawl.pipelines.passes.download import (
    DownloadJob,
    DownloadPass,
    DownloadSummary,
    download,
    resume_layout,
)
from clipcrawl.pipelines.shardloop import run_pass
from clipcrawl.schemas.config import OutputConfig, UrlListConfig
from clipcrawl.schemas.keys import sample_key
from clipcrawl.schemas.tables import PAIRS, conform

from .conftest import loopback_config
from .server import make_image

SIZES = (4, 7, 1, 13, 5)  # rows per pairs file, as Common Crawl gives them: uneven, small


def pairs_folder(server, root, sizes=SIZES):
    """A ``clipcrawl commoncrawl``-style output: ``root/pairs/NNNNN.parquet`` in the PAIRS schema, one per input."""
    server.files.setdefault("cc.jpg", make_image(48, 32, seed=3))
    (root / "pairs").mkdir(parents=True)
    urls = []
    n = 0
    for i, size in enumerate(sizes):
        rows = []
        for _ in range(size):
            url = server.url(f"/f/cc.jpg?n={n}")
            rows.append({"key": sample_key(url, f"caption {n}"), "url": url, "caption": f"caption {n}",
                         "page_url": "http://cc.example/", "source": "commoncrawl", "caption_source": "alt"})
            urls.append(url)
            n += 1
        pq.write_table(conform(pa.Table.from_pylist(rows), PAIRS), root / "pairs" / f"{i:05d}.parquet")
    return urls


def shard_rows(out):
    return {p.name[:5]: pq.read_table(p).column("url").to_pylist() for p in sorted(out.glob("*.parquet"))}


def test_download_cuts_samples_per_shard_across_pairs_files(server, tmp_path):
    urls = pairs_folder(server, tmp_path / "cc")
    out = tmp_path / "shards"
    args = ["--log-format", "text", "download", str(tmp_path / "cc"), "--out", str(out), "--allow-private-networks",
            "--image-size", "16", "--workers", "1", "--samples-per-shard", "10"]
    assert main(args) == 0
    shards = shard_rows(out)
    assert [len(v) for v in shards.values()] == [10, 10, 10]  # 30 rows in 5 files of 4..13 -> full shards
    assert [u for v in shards.values() for u in v] == urls  # input order kept
    for name in shards:
        assert json.loads((out / f"{name}_stats.json").read_text())["count"] == 10

    # resumable: a shard whose stats are gone is done again, alone, with the same rows
    before = len(server.requests)
    (out / "00001_stats.json").unlink()
    assert main(args) == 0
    assert shard_rows(out) == shards
    assert sorted(int(r.query[2:]) for r in server.requests[before:] if r.path == "/f/cc.jpg") == list(range(10, 20))


def test_a_download_started_with_per_file_shards_resumes_with_them(server, tmp_path):
    pairs_folder(server, tmp_path / "cc")
    urls = UrlListConfig(path=str(tmp_path / "cc"))
    out = str(tmp_path / "old")
    # the layout before: each file cut on its own (the plan's per_file mode), as an older clipcrawl wrote it
    summary = DownloadSummary(out)
    p = DownloadPass(loopback_config(), OutputConfig(samples_per_shard=10), summary)
    old_jobs = [DownloadJob(s, ShardRef.of(out, s.id), "new") for s in plan_input_shards(urls, 10, per_file=True)]
    assert not run_pass(p, old_jobs)
    legacy = [4, 7, 1, 10, 3, 5]  # each file's last shard short
    assert [len(v) for v in shard_rows(tmp_path / "old").values()] == legacy
    assert resume_layout(urls, out, 10) == "per_file"

    (tmp_path / "old" / "00003_stats.json").unlink()
    s = download(urls, out, loopback_config(), OutputConfig(samples_per_shard=10))
    assert (s.shards_skipped, s.shards_written, s.fetched) == (5, 1, 10)
    assert [len(v) for v in shard_rows(tmp_path / "old").values()] == legacy
    assert resume_layout(urls, str(tmp_path / "new"), 10) == "spanning"  # a new folder: samples_per_shard


def test_commoncrawl_then_download_end_to_end(server, tmp_path):
    """The issue's flow: ``clipcrawl commoncrawl`` over several WAT files (one pairs file each), then
    ``clipcrawl download`` of its output: full shards, in the pairs files' order."""
    from tests.crawler.test_commoncrawl_records import wat_record, write_warc

    server.files.setdefault("cc.jpg", make_image(48, 32, seed=3))
    n = 0
    for i, size in enumerate((3, 8, 2)):  # 13 images over 3 WAT files
        links = []
        for _ in range(size):
            links.append({"path": "IMG@/src", "url": server.url(f"/f/cc.jpg?n={n}"), "alt": f"a photo number {n}"})
            n += 1
        write_warc(tmp_path / f"wat{i}.warc.wat.gz", [wat_record(f"http://page{i}.example.org/", links)])
    cc = tmp_path / "cc-pairs"
    assert main(["--log-format", "text", "commoncrawl", str(tmp_path / "wat*.warc.wat.gz"), "--out", str(cc),
                 "--workers", "1"]) == 0
    assert len(list((cc / "pairs").glob("*.parquet"))) == 3  # one per input, 2 to 8 rows each

    out = tmp_path / "shards"
    assert main(["--log-format", "text", "download", str(cc), "--out", str(out), "--allow-private-networks",
                 "--image-size", "16", "--workers", "1", "--samples-per-shard", "5"]) == 0
    shards = shard_rows(out)
    assert [len(v) for v in shards.values()] == [5, 5, 3]
    pairs = pa.concat_tables(pq.read_table(p) for p in sorted((cc / "pairs").glob("*.parquet")))
    assert [u for v in shards.values() for u in v] == pairs.column("url").to_pylist()
    assert sorted(int(u.rsplit("=", 1)[1]) for v in shards.values() for u in v) == list(range(13))
