"""Streamed shards (``DownloadPass.streaming``): chunked output is byte-identical to one-chunk output, memory
held by the pass is bounded by the chunk size (not the shard size), and a download killed mid-shard leaves no
shard that looks done."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.pipelines import fetch_images
from clipcrawl.pipelines.passes import download as dl
from clipcrawl.pipelines.passes.download import DownloadPass, download
from clipcrawl.schemas.config import OutputConfig, UrlListConfig

from .conftest import loopback_config
from .server import make_image

N = 60


@pytest.fixture()
def listing(server, tmp_path):
    for i in range(12):
        server.files[f"s{i}.jpg"] = make_image(50 + 3 * i, 40 + i, "JPEG", seed=i)
    rows = []
    for i in range(N):
        if i % 17 == 5:
            url = server.url("/status/404")
        elif i % 23 == 7:
            url = server.url("/truncated")
        else:
            url = server.url(f"/f/s{i % 12}.jpg")
        rows.append({"url": url, "caption": f"picture {i}" if i % 9 else f"picture {i - 1}", "lic": f"l{i}"})
    rows.append(dict(rows[3]))  # a duplicate (url, caption): never fetched
    path = tmp_path / "list.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def _files(folder) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            if not n.endswith("_stats.json"):  # times differ from run to run
                p = os.path.join(root, n)
                out[os.path.relpath(p, folder)] = Path(p).read_bytes()
    return out


def _download(listing: str, out, chunk: int, fmt: str = "webdataset", per_shard: int = 25):
    default, DownloadPass.chunk_rows = DownloadPass.chunk_rows, chunk
    try:
        return download(UrlListConfig(path=listing, save_additional_columns=["lic"]), str(out),
                        loopback_config(image_size=32),
                        OutputConfig(samples_per_shard=per_shard, output_format=fmt))
    finally:
        DownloadPass.chunk_rows = default


@pytest.mark.parametrize("fmt", ["webdataset", "files", "parquet"])
def test_chunked_output_is_identical_to_one_chunk(listing, tmp_path, fmt):
    whole = _download(listing, tmp_path / "whole", chunk=1000, fmt=fmt)
    chunked = _download(listing, tmp_path / "chunked", chunk=4, fmt=fmt)
    assert whole.status_counts == chunked.status_counts
    assert whole.status_counts["success"] > 30 and whole.shards_written == 3
    a, b = _files(tmp_path / "whole"), _files(tmp_path / "chunked")
    assert sorted(a) == sorted(b)
    if fmt != "parquet":
        assert a == b  # tars, files and Parquet byte for byte
    else:  # images in the Parquet: one row group per chunk, same rows and schema
        for name in a:
            ta, tb = pq.read_table(tmp_path / "whole" / name), pq.read_table(tmp_path / "chunked" / name)
            assert ta.schema == tb.schema and ta.equals(tb)
        assert pq.ParquetFile(tmp_path / "chunked" / "00000.parquet").num_row_groups == 7


def test_memory_held_is_bounded_by_the_chunk_not_the_shard(listing, tmp_path, monkeypatch):
    """Rows fetched but not yet written never exceed the fetch window plus the chunks queued for the writer."""
    fetched, written, gap = [0], [0], []
    one = fetch_images.FetchImages._one

    async def counting_one(self, *a, **kw):
        out = await one(self, *a, **kw)
        fetched[0] += 1
        return out

    add = dl.ShardStream.add

    def counting_add(self, table, *a, **kw):
        gap.append(fetched[0] - written[0])
        written[0] += table.num_rows
        return add(self, table, *a, **kw)

    monkeypatch.setattr(fetch_images.FetchImages, "_one", counting_one)
    monkeypatch.setattr(dl.ShardStream, "add", counting_add)
    cfg = loopback_config(image_size=32, concurrency=2, workers=1)  # lanes = 2 + 8 = 10, window = 20
    monkeypatch.setattr(DownloadPass, "chunk_rows", 3)
    s = download(UrlListConfig(path=listing), str(tmp_path / "o"), cfg, OutputConfig(samples_per_shard=N + 1))
    assert s.shards_written == 1 and written[0] == N + 1
    window, queued = 20, (DownloadPass.write_queue + 2) * 3
    assert max(gap) <= window + queued, gap  # a 61-row shard never held all its rows


def test_iter_process_yields_in_order_with_a_bounded_window(stage, server):
    server.files["w.png"] = make_image(40, 30, "PNG")
    n = 120
    table = pa.table({"url": [server.url("/f/w.png") if i % 7 else server.url("/status/500") for i in range(n)]})
    whole = stage.process(table)
    start, seen, ahead = stage.counters.done, 0, []
    chunks = []
    for chunk in stage.iter_process(table, 10):
        ahead.append(stage.counters.done - start - seen)  # fetched, not yet handed out
        seen += chunk.num_rows
        chunks.append(chunk)
    assert [c.num_rows for c in chunks] == [10] * 12
    assert pa.concat_tables(chunks).combine_chunks().equals(whole.combine_chunks())
    lanes = stage.config.concurrency + fetch_images.DECODE_QUEUE_PER_WORKER * stage.workers
    assert max(ahead) <= max(20, 2 * lanes)


def test_killed_mid_shard_leaves_no_done_shard_and_resumes_identically(listing, tmp_path):
    out = tmp_path / "killed"
    code = ("import sys; from clipcrawl.cli import main; "
            "from clipcrawl.pipelines.passes.download import DownloadPass; DownloadPass.chunk_rows = 4; "
            "sys.exit(main(sys.argv[1:]))")
    args = ["--log-format", "text", "download", listing, "--out", str(out), "--allow-private-networks",
            "--image-size", "32", "--workers", "1", "--timeout", "3", "--samples-per-shard", "25",
            "--save-additional-columns", "lic"]
    env = {**os.environ, "CLIPCRAWL_FAILPOINT": "stage.download:9"}  # the 9th chunk: inside the 2nd shard
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, timeout=120)
    assert r.returncode == -9, r.stderr.decode()[-2000:]
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == ["00000.parquet", "00000.tar", "00000_stats.json"]  # shard 1 was being written
    env.pop("CLIPCRAWL_FAILPOINT")
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    for p in out.iterdir():  # leftovers of the killed run are hidden temp files only
        if p.name.startswith(".") and ".tmp-" in p.name:
            p.unlink()
    _download(listing, tmp_path / "clean", chunk=4)
    assert _files(out) == _files(tmp_path / "clean")


def test_shard_stream_left_unfinished_publishes_nothing(tmp_path):
    from clipcrawl.base.shardfiles import ShardRef
    from clipcrawl.pipelines.writer import ShardStream

    t = pa.table({"key": ["a"], "url": ["u"], "status": ["success"], "image": [b"x"]})
    with pytest.raises(RuntimeError, match="before finish"), ShardStream(ShardRef.of(str(tmp_path), 0)) as w:
        w.add(t)
    with pytest.raises(ValueError, match="boom"), ShardStream(ShardRef.of(str(tmp_path), 1)) as w:
        w.add(t)
        raise ValueError("boom")
    assert os.listdir(tmp_path) == []  # no tar, no Parquet, no temp file
