"""All state of an ``s3://`` dataset lives with it: a second machine (here: a wiped local state and cache)
continues the crawl frontier and dedups against the first machine's samples (SeaweedFS on loopback)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import fsspec
import pytest

from clipcrawl.base.shardfiles import list_shards
from clipcrawl.base.storage import read_parquet
from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent
from tests.pipelines.test_run import samples, write_config

pytestmark = [pytest.mark.network]


def _remote_samples(url: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for ref in list_shards(url):
        t = read_parquet(ref.parquet, ["key", "status"])
        out.update(zip(t.column("key").to_pylist(), t.column("status").to_pylist()))
    return out


def _machine(tmp_path, name: str) -> dict[str, str]:
    """The environment of a fresh machine: its own (empty) state and cache folders."""
    return {"XDG_STATE_HOME": str(tmp_path / name / "state"), "XDG_CACHE_HOME": str(tmp_path / name / "cache"),
            "CLIPCRAWL_CACHE": str(tmp_path / name / "cache" / "clipcrawl")}


def _run(cfg, env) -> None:
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "run", str(cfg)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
def test_second_machine_continues_the_crawl_and_dedups_against_the_first(s3_server, s3_url, tmp_path):
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    root = s3_url.removeprefix("s3://")
    with DemoSite(DemoSiteContent(seed=11, n_images=16)) as site:
        loopback = ["127.0.0.0/8"]

        def configs(max_pages: int):
            crawl = {"crawl": {"seeds": [site.url], "allowed_networks": loopback, "max_pages": max_pages}}
            return (write_config(tmp_path / "local.yaml", tmp_path / "local", site.url, sources=crawl),
                    write_config(tmp_path / "s3.yaml", s3_url, site.url, sources=crawl))

        local, remote = configs(3)  # run 1 stops the crawl after 3 pages; its frontier keeps the rest queued
        _run(local, _machine(tmp_path, "local"))
        _run(remote, _machine(tmp_path, "a"))
        index1 = json.loads(fs.cat(f"{root}/dedup/index.json"))
        assert fs.exists(f"{root}/crawl/state/frontier.sqlite") and index1["shards"]
        local, remote = configs(100)
        _run(local, _machine(tmp_path, "local"))
        _run(remote, _machine(tmp_path, "b"))  # another machine: nothing local from run 1
    assert not (tmp_path / "a" / "cache" / "clipcrawl" / "dedup").exists()  # the old local index place: unused
    run1 = json.loads(fs.cat(f"{root}/runs/0001/run.json"))["sources"]["crawl"]
    run2 = json.loads(fs.cat(f"{root}/runs/0002/run.json"))["sources"]["crawl"]
    assert run1["pages"] == 3 and run2["pages_total"] == run1["pages"] + run2["pages"]  # continued, not restarted
    got, want = _remote_samples(s3_url), samples(tmp_path / "local")
    assert got == want and "duplicate" in got.values()
    index2 = json.loads(fs.cat(f"{root}/dedup/index.json"))
    assert set(index1["shards"]) < set(index2["shards"]) == {r.name for r in list_shards(s3_url)}
    assert index2["rows"] == sum(s == "success" for s in got.values())
    with fs.open(f"{root}/crawl/state/frontier.sqlite", "rb") as f, open(tmp_path / "f.sqlite", "wb") as out:
        out.write(f.read())
    db = sqlite3.connect(tmp_path / "f.sqlite")
    assert db.execute("SELECT COUNT(*) FROM pages").fetchone()[0] == run2["pages_total"]
    pairs = sum(read_parquet(f"s3://{p}", ["key"]).num_rows for p in fs.glob(f"{root}/crawl/pairs/*.parquet"))
    assert pairs == db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0] == run2["pairs_total"]


def test_checkin_checkout_round_trip_and_a_stale_working_copy_is_replaced(s3_url, tmp_path):
    from clipcrawl.crawler.checkout import checkin, checkout
    from clipcrawl.crawler.frontier import Frontier

    remote = f"{s3_url}/crawl"
    a, b = tmp_path / "a", tmp_path / "b"
    assert checkout(remote, a) == "new"
    with Frontier(a / "state") as f:
        f.add(["http://x.test/1", "http://x.test/2"], 0)
        checkin(a, remote)  # while the frontier is open (WAL): the snapshot is consistent
    checkin(a, remote)
    assert checkout(remote, a) == "kept"  # this machine's copy is the checked-in one
    assert checkout(remote, b) == "downloaded"  # another machine gets it
    (b / "state" / "marker").write_text("x")
    with Frontier(a / "state") as f:
        f.add(["http://x.test/3"], 1)
    checkin(a, remote)  # machine a checks in again: b's copy is stale now
    assert checkout(remote, b) == "downloaded" and not (b / "state" / "marker").exists()
    same = [sqlite3.connect(d / "state" / "frontier.sqlite").execute("SELECT url, state FROM urls ORDER BY url")
            .fetchall() for d in (a, b)]
    assert same[0] == same[1] and len(same[0]) == 3


def test_remote_dedup_index_commits_merges_and_reads_on_a_fresh_machine(s3_url, tmp_path, monkeypatch):
    from clipcrawl.filters.dedup import DedupIndex
    from tests.filters.dedup.test_index import batch

    monkeypatch.setenv("CLIPCRAWL_CACHE", str(tmp_path / "a"))
    idx = DedupIndex.open(f"{s3_url}/dedup")
    for i in range(3):  # three commits: the binary-counter merge rewrites segments on the store
        idx.add(batch("a", [10 * i + 1, 10 * i + 2], f"0000{i}"))
        idx.commit()
    fs, root = fsspec.core.url_to_fs(f"{s3_url}/dedup")
    live = {s["name"] for s in idx.manifest["segments"]}
    assert {p.rsplit("/", 1)[-1].split(".")[0] for p in fs.ls(root, detail=False)} == live | {"index"}
    monkeypatch.setenv("CLIPCRAWL_CACHE", str(tmp_path / "b"))  # another machine: segments downloaded once
    again = DedupIndex.open(f"{s3_url}/dedup")
    assert len(again) == 6 and again.shards == {"00000", "00001", "00002"}
    assert sorted(again.committed.key) == sorted(idx.committed.key)


def test_index_in_the_old_local_place_moves_into_the_dataset(s3_url, tmp_path, monkeypatch, caplog):
    from clipcrawl.base.layout import DatasetLayout
    from clipcrawl.filters.dedup import DedupIndex
    from tests.filters.dedup.test_index import batch

    monkeypatch.setenv("CLIPCRAWL_CACHE", str(tmp_path / "cache"))
    old = DatasetLayout(s3_url).legacy_dedup_index
    legacy = DedupIndex.open(old)
    legacy.add(batch("a", [1, 2, 3], "00000"))
    legacy.commit()
    with caplog.at_level("INFO"):
        moved = DedupIndex.open(DatasetLayout(s3_url).dedup_index)
    assert len(moved) == 3 and moved.shards == {"00000"} and "old local place" in caplog.text
    assert not os.path.exists(old) and DatasetLayout(s3_url).dedup_index == f"{s3_url}/dedup"


@pytest.mark.slow
def test_run_killed_mid_crawl_resumes_on_another_machine(s3_server, s3_url, tmp_path):
    """kill -9 during the crawl (0.1 s between pages, check-ins every 50 ms), then another machine resumes the run once the killed run's
    lease expired: the dataset equals an uninterrupted local run's."""
    import signal
    import time

    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    fast = {"CLIPCRAWL_CHECKIN_INTERVAL": "0.05", "CLIPCRAWL_LOCK_TTL": "2"}
    with DemoSite(DemoSiteContent(seed=11, n_images=16)) as site:
        slow = {"crawl": {"seeds": [site.url], "allowed_networks": ["127.0.0.0/8"], "max_pages": 100, "delay": 0.1}}
        local = write_config(tmp_path / "local.yaml", tmp_path / "local", site.url, sources=slow)
        remote = write_config(tmp_path / "s3.yaml", s3_url, site.url, sources=slow)
        _run(local, _machine(tmp_path, "local"))
        r = subprocess.run([sys.executable, "-m", "clipcrawl", "run", str(remote)], capture_output=True, text=True,
                           timeout=600, env={**os.environ, **_machine(tmp_path, "a"), **fast,
                                             "CLIPCRAWL_FAILPOINT": "crawl.page:6"})
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        root = s3_url.removeprefix("s3://")
        assert json.loads(fs.cat(f"{root}/runs/0001/run.json"))["state"] == "collect"
        with fs.open(f"{root}/crawl/state/frontier.sqlite", "rb") as f, open(tmp_path / "f.sqlite", "wb") as out:
            out.write(f.read())  # a check-in happened before the kill
        checked_in = sqlite3.connect(tmp_path / "f.sqlite").execute("SELECT COUNT(*) FROM pages").fetchone()[0]
        time.sleep(2.5)  # the killed run's lease expires
        _run(remote, {**_machine(tmp_path, "b"), **fast})
    crawl = json.loads(fs.cat(f"{root}/runs/0001/run.json"))["sources"]["crawl"]
    assert 0 < checked_in <= 5 and crawl["pages"] == crawl["pages_total"] - checked_in  # resumed from the check-in
    assert _remote_samples(s3_url) == samples(tmp_path / "local")
