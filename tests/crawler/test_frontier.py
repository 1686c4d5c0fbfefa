"""The SQLite frontier: atomic claims, one-transaction completion, resume, chunk recovery, locking."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest

from clipcrawl.crawler.frontier import Frontier, FrontierLocked
from clipcrawl.crawler.output import ChunkWriter
from clipcrawl.schemas.tables import PAGES, PAIRS, check


def _page(url: str, status: str = "ok") -> dict:
    return {"url": url, "final_url": url, "status": status, "depth": 0, "fetched_at": time.time()}


def _pair(key: str, page: str) -> dict:
    return {"key": key, "url": f"http://a.com/{key}.jpg", "caption": key, "page_url": page, "found_at": time.time()}


def test_claim_complete_and_resume(tmp_path):
    with Frontier(tmp_path) as f:
        assert f.add(["http://a.com/", "http://a.com/x"], 0) == 2
        assert f.add(["http://a.com/"], 0) == 0  # known
        c = f.claim(10, max_depth=3)
        assert [x.url for x in c] == ["http://a.com/", "http://a.com/x"] and f.claim(10, 3) == []
        done = f.complete(c[0], _page(c[0].url), [_pair("k1", c[0].url), _pair("k2", c[0].url)],
                          ["http://a.com/x", "http://a.com/y", "http://a.com/z"], ok=True)
        assert (done.new_pairs, done.new_links) == (2, 2)
        done = f.complete(c[1], _page(c[1].url), [_pair("k1", c[1].url)], [], ok=True)
        assert done.new_pairs == 0  # a pair seen on two pages keeps one row
        nxt = f.claim(1, max_depth=3)
        assert [(x.url, x.depth) for x in nxt] == [("http://a.com/y", 1)]
        assert f.processed() == 2
    # "kill": the claimed URL was never completed; reopening queues it again
    with Frontier(tmp_path) as f:
        assert f.requeued == 1
        assert [x.url for x in f.claim(10, 3)] == ["http://a.com/y", "http://a.com/z"]
        assert f.counts()["pairs"] == 2 and f.counts()["pages"] == 2


def test_depth_limit_and_shallower_rediscovery(tmp_path):
    with Frontier(tmp_path) as f:
        f.add(["http://a.com/deep"], 5)
        assert f.claim(10, max_depth=3) == [] and not f.has_queued(3) and f.has_queued(5)
        f.add(["http://a.com/deep"], 1)  # found again closer to a seed
        assert [x.depth for x in f.claim(10, 3)] == [1]


def test_redirect_target_is_not_fetched_again(tmp_path):
    with Frontier(tmp_path) as f:
        f.add(["http://a.com/r", "http://a.com/target"], 0)
        r = f.claim(1, 3)[0]
        f.complete(r, _page(r.url), [], [], ok=True, final_url="http://a.com/target")
        assert f.claim(10, 3) == []
        assert f.processed() == 1


def test_revisit_requeues_old_pages(tmp_path):
    with Frontier(tmp_path) as f:
        f.add(["http://a.com/"], 0)
        c = f.claim(1, 3)[0]
        f.complete(c, {**_page(c.url), "fetched_at": time.time() - 3 * 86400}, [], [], ok=True)
    with Frontier(tmp_path, revisit_after_days=7) as f:
        assert f.revisits == 0
    with Frontier(tmp_path, revisit_after_days=2) as f:
        assert f.revisits == 1 and [x.attempts for x in f.claim(5, 3)] == [1]


def test_one_crawl_per_directory(tmp_path):
    with Frontier(tmp_path), pytest.raises(FrontierLocked):
        Frontier(tmp_path)
    Frontier(tmp_path).close()  # released


def test_chunks_are_written_once_even_after_a_crash(tmp_path):
    state, out = tmp_path / "state", tmp_path
    with Frontier(state) as f:
        f.add([f"http://a.com/{i}" for i in range(5)], 0)
        for i, c in enumerate(f.claim(5, 3)):
            f.complete(c, _page(c.url), [_pair(f"k{i}", c.url)], [], ok=True)
        w = ChunkWriter(f, out, rows_per_chunk=2)
        w.flush()  # two full chunks per table; one row of each stays unsealed
        assert sorted(p.name for p in (out / "pairs").iterdir()) == ["00000.parquet", "00001.parquet"]
        # a crash between sealing a chunk and writing its file
        assert f.seal_chunk("pairs", 2) == 2
    with Frontier(state) as f:
        w = ChunkWriter(f, out, rows_per_chunk=2)
        assert w.recover() == 1  # pairs/00002 written from the database
        w.flush(final=True)  # pages/00002 (the last page)
    tables = {t: [pq.read_table(p) for p in sorted((out / t).glob("*.parquet"))] for t in ("pairs", "pages")}
    keys = [k for t in tables["pairs"] for k in t.column("key").to_pylist()]
    assert sorted(keys) == [f"k{i}" for i in range(5)]  # none lost, none twice
    assert sum(t.num_rows for t in tables["pages"]) == 5
    for t in tables["pairs"]:
        check(t, PAIRS)
        assert set(t.column("source").to_pylist()) == {"crawl"}
    for t in tables["pages"]:
        check(t, PAGES)


def test_claim_skips_busy_hosts(tmp_path):
    with Frontier(tmp_path) as f:
        f.add([f"http://slow.com/{i}" for i in range(10)] + ["http://fast.com/1", "http://fast.com/2"], 0)
        per_host: dict[str, int] = {}

        def take(url: str) -> bool:
            host = url.split("/")[2]
            if per_host.get(host, 0) >= 2:
                return False
            per_host[host] = per_host.get(host, 0) + 1
            return True

        got = [c.url for c in f.claim(4, 3, take=take, window=64)]
        assert got == ["http://slow.com/0", "http://slow.com/1", "http://fast.com/1", "http://fast.com/2"]
        assert [c.url for c in f.claim(4, 3)] == [f"http://slow.com/{i}" for i in range(2, 6)]  # the rest stay queued


def test_transient_failures_are_retried_on_later_runs(tmp_path):
    from clipcrawl.crawler.frontier import MAX_ATTEMPTS

    with Frontier(tmp_path) as f:
        f.add(["http://a.com/flaky", "http://a.com/gone"], 0)
        for c in f.claim(2, 3):
            f.complete(c, _page(c.url, "fetch_error"), [], [], ok=False, retryable=c.url.endswith("flaky"))
    for run in range(1, MAX_ATTEMPTS):
        with Frontier(tmp_path) as f:
            assert f.retried == 1
            c = f.claim(5, 3)
            assert [x.url for x in c] == ["http://a.com/flaky"] and c[0].attempts == run
            f.complete(c[0], _page(c[0].url, "fetch_error"), [], [], ok=False, retryable=True)
    with Frontier(tmp_path) as f:
        assert f.retried == 0 and f.claim(5, 3) == []  # tried MAX_ATTEMPTS times: given up


def test_older_frontier_database_gains_the_caption_columns(tmp_path):
    """A frontier written before the alt/figcaption/title columns existed is migrated on open."""
    import sqlite3

    from clipcrawl.crawler.frontier import LATER_PAIR_COLUMNS, PAIR_COLUMNS

    old_cols = [c for c in PAIR_COLUMNS if c not in LATER_PAIR_COLUMNS]
    db = sqlite3.connect(tmp_path / "frontier.sqlite")
    db.execute(f"CREATE TABLE pairs (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, {', '.join(old_cols[1:])}, "
               "chunk INTEGER)")
    db.execute("INSERT INTO pairs(key, url, caption) VALUES ('k0', 'http://a.com/0.jpg', 'old pair')")
    db.commit()
    db.close()
    with Frontier(tmp_path) as f:
        c = f.claim(1, 3) or None
        assert c is None
        f.add(["http://a.com/"], 0)
        c = f.claim(1, 3)[0]
        pair = {**_pair("k1", c.url), "alt": "an alt", "figcaption": "a figcaption", "title": None}
        assert f.complete(c, _page(c.url), [pair], [], ok=True).new_pairs == 1
        chunk = f.seal_chunk("pairs", 10)
        rows = {r["key"]: r for r in f.chunk_rows("pairs", chunk)}
        assert rows["k1"]["alt"] == "an alt" and rows["k0"]["alt"] is None


def test_policy_refusals_requeued_when_the_setting_changes(tmp_path):
    """Issue 25: refusals decided by a setting are queued again when that setting changes (also in a database
    of an older version, whose refusals are read back from the pages table)."""
    import sqlite3

    with Frontier(tmp_path, policy={"address": "off", "robots": "on"}) as f:
        f.add(["http://a/", "http://b/", "http://c/"], 0)
        a, b, c = f.claim(3, 0)
        f.complete(a, _page(a.url, "blocked_address"), [], [], ok=False, refused="address")
        f.complete(b, _page(b.url, "robots_disallowed"), [], [], ok=False, refused="robots")
        f.complete(c, _page(c.url, "http_error"), [], [], ok=False)
    with Frontier(tmp_path, policy={"address": "off", "robots": "on"}) as f:
        assert f.redecided == 0 and f.queued(0) == 0
    with Frontier(tmp_path, policy={"address": "on", "robots": "on"}) as f:
        assert f.redecided == 1 and [x.url for x in f.claim(5, 0)] == ["http://a/"]
    db = sqlite3.connect(tmp_path / "frontier.sqlite")  # the layout of an older version
    db.execute("ALTER TABLE urls DROP COLUMN refused")
    db.execute("DROP TABLE meta")
    db.commit()
    db.close()
    with Frontier(tmp_path, policy={"address": "on", "robots": "on"}) as f:
        assert f.requeued == 1 and f.redecided == 1  # a: claimed above, still in flight
        assert sorted(x.url for x in f.claim(5, 0)) == ["http://a/", "http://b/"]


def test_page_cache_small_below_one_gib_large_past_it(tmp_path):
    """While the database is under 1 GiB SQLite walks its whole page cache at the end of a write that split B-tree
    pages (the pending-byte page, see ``Frontier._fit_cache``), so the cache is small there; past it, 128 MiB."""
    urls = [f"http://h{i % 7}.example/{i}" for i in range(3000)]
    with Frontier(tmp_path) as f:
        def cache() -> int:
            return f.db.execute("PRAGMA cache_size").fetchone()[0]

        page_size = f.db.execute("PRAGMA page_size").fetchone()[0]
        assert f._pending_page == (1 << 30) // page_size + 1  # 262,145 at 4 KiB pages
        f.add(urls, 0)
        assert cache() == -Frontier.SMALL_CACHE_KIB
        assert [c.url for c in f.claim(5, 3)] == urls[:5] and cache() == -Frontier.SMALL_CACHE_KIB
        f._pending_page = f.db.execute("PRAGMA page_count").fetchone()[0]  # as if the file had reached 1 GiB
        assert [c.url for c in f.claim(5, 3)] == urls[5:10] and cache() == -Frontier.LARGE_CACHE_KIB
        assert f.counts()["in-flight"] == 10
        f._pending_page = 1 << 40  # and back (add checks too)
        assert f.add(["http://h0.example/new"], 0) == 1 and cache() == -Frontier.SMALL_CACHE_KIB
