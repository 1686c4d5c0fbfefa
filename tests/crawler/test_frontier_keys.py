"""The frontier finds URLs by a 96-bit key held in memory (issue 26): URLs whose keys partly collide stay distinct
without a row read, the rule with a forced full collision is shown (and the text rule of ``verify_text``),
databases of the earlier layouts (``url TEXT UNIQUE``; ``h`` without ``h2``) are migrated in place, atomically,
and a crawl resumes from them."""

from __future__ import annotations

import random
import sqlite3
import time
from hashlib import blake2b
from pathlib import Path

import numpy as np
import pytest

from clipcrawl.crawler.crawl import crawl
from clipcrawl.crawler.frontier import Frontier, UrlKeys, url_hash
from clipcrawl.schemas.config import CrawlConfig
from tests.crawler.site import LoopbackServer, generated_site

#: the ``urls`` table as the versions before the hash key wrote it (``refused`` came one version earlier)
OLD_URLS = """CREATE TABLE urls (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL UNIQUE,
    depth INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retryable INTEGER NOT NULL DEFAULT 0,
    fetched_at REAL,
    added_at REAL NOT NULL{refused}
)"""
OLD_COLUMNS = "id, url, depth, state, attempts, retryable, fetched_at, added_at"


class Colliding(Frontier):
    """Every URL's whole key is its length's parity: most URLs collide with many others; the text decides."""

    url_hash = staticmethod(lambda u: (len(u) % 2, len(u) % 2))
    url_hash_name = "test-parity"
    verify_text = True


class SameFingerprint(Frontier):
    """``h`` is the length's parity (one fingerprint, one table cluster for all URLs), ``h2`` the real one: the
    96-bit key still tells every URL apart, from memory."""

    url_hash = staticmethod(lambda u: (len(u) % 2, url_hash(u)[1]))
    url_hash_name = "test-parity-h"


def blake2b_8(url: str) -> int:
    """``urls.h`` as the previous version computed it (``meta`` ``url_hash`` = ``blake2b-8``, no ``h2``)."""
    return int.from_bytes(blake2b(url.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little", signed=True)


class UrlReads:
    """Counts the statements that read ``urls`` rows by id (the row read a known link cost before ``h2``)."""

    def __init__(self, f: Frontier) -> None:
        self.n = 0
        f.db.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        if "FROM urls WHERE id IN" in sql or ("UPDATE urls SET depth" in sql):
            self.n += 1


def _page(url: str, status: str = "ok") -> dict:
    return {"url": url, "final_url": url, "status": status, "depth": 0, "fetched_at": time.time()}


def _rows(path: Path) -> list[tuple]:
    db = sqlite3.connect(path / "frontier.sqlite")
    try:
        return db.execute(f"SELECT {OLD_COLUMNS} FROM urls ORDER BY id").fetchall()
    finally:
        db.close()


def _layout(path: Path) -> tuple[set[str], set[str]]:
    db = sqlite3.connect(path / "frontier.sqlite")
    try:
        cols = {r[1] for r in db.execute("PRAGMA table_info(urls)")}
        idx = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='urls'")}
        return cols, idx
    finally:
        db.close()


def to_h_layout(db_path: Path) -> None:
    """Rewrite a frontier database into the layout of the previous version: ``h`` (BLAKE2b-8), no ``h2``."""
    cols = OLD_COLUMNS + ", refused"
    db = sqlite3.connect(db_path, isolation_level=None)
    db.create_function("blake2b_8", 1, blake2b_8)
    db.executescript(f"""
        BEGIN;
        ALTER TABLE urls RENAME TO urls_cur;
        {OLD_URLS.format(refused=", refused TEXT").replace("url TEXT NOT NULL UNIQUE", "h INTEGER NOT NULL, url TEXT NOT NULL")};
        INSERT INTO urls(h, {cols}) SELECT blake2b_8(url), {cols} FROM urls_cur ORDER BY id;
        DROP TABLE urls_cur;
        CREATE INDEX urls_queue ON urls(state, depth, id);
        UPDATE meta SET value='blake2b-8' WHERE key='url_hash';
        COMMIT;""")
    db.close()
    cols_now, idx = _layout(db_path.parent)
    assert "h" in cols_now and "h2" not in cols_now and idx == {"urls_queue"}


def to_old_layout(db_path: Path, refused: bool = True) -> None:
    """Rewrite a frontier database into the layout of the version before ``h`` (without ``refused`` and ``meta``:
    the one before)."""
    cols = OLD_COLUMNS + (", refused" if refused else "")
    create = OLD_URLS.format(refused=", refused TEXT" if refused else "")
    forget = "DELETE FROM meta WHERE key='url_hash'" if refused else "DROP TABLE meta"
    db = sqlite3.connect(db_path, isolation_level=None)
    db.executescript(f"""
        BEGIN;
        ALTER TABLE urls RENAME TO urls_cur;
        {create};
        INSERT INTO urls({cols}) SELECT {cols} FROM urls_cur ORDER BY id;
        DROP TABLE urls_cur;
        CREATE INDEX urls_queue ON urls(state, depth, id);
        {forget};
        COMMIT;""")
    db.close()
    cols_now, idx = _layout(db_path.parent)
    assert "h" not in cols_now and ("refused" in cols_now) == refused and "sqlite_autoindex_urls_1" in idx


def test_colliding_urls_are_kept_apart(tmp_path):
    a, b, c, d = "http://a.com/1", "http://a.com/2", "http://a.com/3", "http://a.com/10"  # a, b, c collide
    with Colliding(tmp_path) as f:
        assert f.add([a, b, a, c], 1) == 3  # one batch: the repeat of a is one row, b and c are not a
        assert f.add([b, d], 1) == 1
        assert f.add([c], 0) == 1  # c, not a or b, moves to depth 0
        got = f.claim(10, 3)
        assert [(x.url, x.depth) for x in got] == [(c, 0), (a, 1), (b, 1), (d, 1)]
        ca = got[1]
        # links and a redirect target that collide with known URLs
        done = f.complete(ca, _page(a), [], ["http://a.com/4", b, "http://a.com/11"], ok=True,
                          final_url="http://a.com/5")
        assert done.new_links == 2
        assert f.add(["http://a.com/5", "http://a.com/4"], 0) == 1  # the redirect target is known; 4 moves up
        assert [x.url for x in f.claim(10, 3)] == ["http://a.com/4", "http://a.com/11"]
        assert f.counts() == {"in-flight": 5, "done": 1, "redirected": 1, "pages": 1, "pairs": 0}
        assert len({k for k in f.db.execute("SELECT h, h2 FROM urls")}) == 2
    # the same database under the real hash: the keys are computed again, the URLs stay what they were
    with Frontier(tmp_path) as f:
        assert f.requeued == 5
        assert f.db.execute("SELECT value FROM meta WHERE key='url_hash'").fetchone() == ("blake2b-12",)
        assert all((k, k2) == url_hash(u) for k, k2, u in f.db.execute("SELECT h, h2, url FROM urls"))
        assert f.add([a, b, c, d, "http://a.com/5"], 0) == 2  # all known: b and d (queued again) move up
        assert f.add(["http://a.com/12"], 0) == 1
        assert [x.url for x in f.claim(10, 0)] == [b, c, d, "http://a.com/4", "http://a.com/12"]


@pytest.mark.parametrize("spread", ["random", "four hashes"])
def test_url_keys_find_every_id(spread):
    """UrlKeys against a dict: built from arrays, then grown one key at a time past several resizes; every id
    whose 96-bit key matches is found, no other."""
    rng = random.Random(3)

    def draw() -> tuple[int, int]:
        h2 = rng.getrandbits(32) - 2**31
        if spread == "random":
            return rng.getrandbits(64) - 2**63, h2
        return rng.choice([0, 1, 2**32, -1]), rng.choice([h2, 7, -7])  # 0 and 1 share a fingerprint; whole repeats

    first = [draw() for _ in range(3000)]
    keys = UrlKeys(np.array([h for h, _ in first], dtype=np.int64), np.arange(1, 3001),
                   np.array([h2 for _, h2 in first], dtype=np.int64), np.full(3000, 3))
    ref: dict[tuple[int, int], set[int]] = {}
    for i, k in enumerate(first, 1):
        ref.setdefault(k, set()).add(i)
    for i in range(3001, 3001 + (40_000 if spread == "random" else 4000)):
        k = draw()
        keys.add(*k, i, i % 7)
        ref.setdefault(k, set()).add(i)
    assert keys.n == sum(len(v) for v in ref.values()) and keys.bits > UrlKeys.MIN_BITS
    for k, ids in ref.items():
        assert set(keys.ids(*k)) == ids  # all of them, and nothing that only shares the fingerprint
        assert keys.find(*k) in ids
    assert keys.find(0, 12345) == 0 and keys.find(1 << 40, 7) == 0
    assert keys.qd(2999) == 3 and [keys.qd(i) for i in (3001, 3006, 3003)] == [3001 % 7, 3006 % 7, 0]
    keys.set_qd(3006, 0)
    assert keys.qd(3006) == 0


def test_same_fingerprint_urls_stay_apart_without_row_reads(tmp_path):
    """200 URLs share ``h`` (one fingerprint); ``h2`` tells them apart: links to known URLs read no row, a move to
    a smaller depth is one guarded UPDATE."""
    urls = [f"http://a.com/{i}" for i in range(200)]
    with SameFingerprint(tmp_path) as f:
        assert f.add(urls, 2) == 200
        reads = UrlReads(f)
        assert f.add(urls + ["http://a.com/new"], 2) == 1  # all known but one, decided in memory
        assert f.add(urls[:50], 3) == 0 and reads.n == 0  # deeper than queued: nothing to move
        assert f.add([urls[5]], 1) == 1 and reads.n == 1  # moves up
        assert f.add([urls[5], urls[6]], 1) == 1 and reads.n == 2
        assert f.add([urls[5]], 1) == 0 and reads.n == 2  # already there: nothing read
        got = f.claim(300, 3)
        assert [c.url for c in got[:2]] == [urls[5], urls[6]] and len(got) == 201
        assert f.add(urls, 0) == 0 and reads.n == 2  # in flight: never moved, nothing read
    with SameFingerprint(tmp_path) as f:  # queued depths come back from the database at open
        assert f.requeued == 201
        reads = UrlReads(f)
        assert f.add(urls, 2) == 0 and reads.n == 0
        assert f.add(urls[:3], 0) == 3 and f.add(urls[:3], 0) == 0 and reads.n == 3  # one UPDATE per row moved
        assert len({h for (h,) in f.db.execute("SELECT h FROM urls")}) == 2


def test_the_rule_is_the_96_bit_key(tmp_path):
    """Two URLs forced to one whole key are one URL (the documented false merge, probability N**2 / 2**97); with
    ``verify_text`` the text decides, as before ``h2``."""

    class OneKey(Frontier):
        url_hash = staticmethod(lambda u: (1, 2))
        url_hash_name = "test-one-key"

    class OneKeyByText(OneKey):
        verify_text = True

    with OneKey(tmp_path) as f:
        assert f.add(["http://a/1"], 0) == 1
        assert f.add(["http://a/2"], 0) == 0  # taken for http://a/1 (URLs of the open transaction: by text)
    with OneKeyByText(tmp_path) as f:
        assert f.add(["http://a/1", "http://a/2", "http://a/3"], 0) == 2
        assert f.counts()["queued"] == 3


def test_depths_past_254(tmp_path):
    """The in-memory queued depth is one byte: a row queued deeper than 254 is decided by the database."""
    with Frontier(tmp_path) as f:
        assert f.add(["http://a/x"], 300) == 1
        assert f.add(["http://a/x"], 280) == 1 and f.add(["http://a/x"], 290) == 0
    with Frontier(tmp_path) as f:
        assert f.add(["http://a/x"], 270) == 1 and f.add(["http://a/x"], 3) == 1 and f.add(["http://a/x"], 4) == 0
        assert f.claim(1, 300)[0].depth == 3


class FailsOn(Frontier):
    @staticmethod
    def url_hash(u: str) -> tuple[int, int]:
        if u.endswith("/boom"):
            raise RuntimeError("boom")
        return url_hash(u)


def test_a_failed_transaction_adds_no_keys(tmp_path):
    """A page whose completion fails leaves neither rows nor keys: its redirect target is new again after."""
    with FailsOn(tmp_path) as f:
        f.add(["http://a.com/"], 0)
        c = f.claim(1, 0)[0]
        with pytest.raises(RuntimeError):
            f.complete(c, _page(c.url), [], ["http://a.com/x", "http://a.com/boom"], ok=True,
                       final_url="http://a.com/target")
        assert f.add(["http://a.com/target", "http://a.com/x"], 0) == 2
        assert [r[0] for r in f.db.execute("SELECT id FROM urls ORDER BY id")] == [1, 2, 3]
    with Frontier(tmp_path) as f:
        assert f.add(["http://a.com/target", "http://a.com/x", "http://a.com/"], 0) == 0


def test_a_failed_transaction_moves_no_depth(tmp_path):
    """A link that moved a queued URL up in a transaction that failed leaves its in-memory depth as it was."""
    with FailsOn(tmp_path) as f:
        f.add(["http://a.com/"], 0)
        f.add(["http://a.com/deep"], 5)
        c = f.claim(1, 0)[0]
        with pytest.raises(RuntimeError):
            f.complete(c, _page(c.url), [], ["http://a.com/deep", "http://a.com/boom"], ok=True)
        assert f.add(["http://a.com/deep"], 3) == 1  # still at 5: it moves to 3
        assert f.add(["http://a.com/deep"], 3) == 0


def test_refusals_of_a_colliding_database_without_refused_column(tmp_path):
    """``refused`` is filled by joining pages to urls on (hash, url): colliding URLs get their own status."""
    with Colliding(tmp_path, policy={"address": "off", "robots": "on"}) as f:
        f.add(["http://a/1", "http://a/2", "http://a/3"], 0)  # all three collide
        x, y, z = f.claim(3, 0)
        f.complete(x, _page(x.url, "blocked_address"), [], [], ok=False, refused="address")
        f.complete(y, _page(y.url, "robots_disallowed"), [], [], ok=False, refused="robots")
        f.complete(z, _page(z.url, "http_error"), [], [], ok=False)
    db = sqlite3.connect(tmp_path / "frontier.sqlite")
    db.execute("ALTER TABLE urls DROP COLUMN refused")
    db.commit()
    db.close()
    with Colliding(tmp_path, policy={"address": "off", "robots": "on"}) as f:
        assert dict(f.db.execute("SELECT url, refused FROM urls")) == {
            "http://a/1": "address", "http://a/2": "robots", "http://a/3": None}
    with Colliding(tmp_path, policy={"address": "on", "robots": "on"}) as f:
        assert f.redecided == 1 and [x.url for x in f.claim(5, 0)] == ["http://a/1"]


@pytest.mark.parametrize("layout", ["h-without-h2", "unique-url", "before-refused"])
def test_old_layout_is_migrated_in_place(tmp_path, layout):
    refused = layout != "before-refused"
    with Frontier(tmp_path, policy={"address": "off"}) as f:
        f.add([f"http://a.com/{i}" for i in range(6)], 1)
        f.add(["http://a.com/0-seed"], 0)
        seed, first, second = f.claim(3, 3)
        f.complete(seed, _page(seed.url), [], ["http://a.com/new"], ok=True)
        f.complete(first, _page(first.url, "blocked_address"), [], [], ok=False, refused="address")
        # second stays in flight: a crawl killed mid-page
    before = _rows(tmp_path)
    if layout == "h-without-h2":
        to_h_layout(tmp_path / "frontier.sqlite")
    else:
        to_old_layout(tmp_path / "frontier.sqlite", refused=refused)
    with Frontier(tmp_path, policy={"address": "off"}) as f:
        assert f.requeued == 1 and f.redecided == (0 if refused else 1)
        cols, idx = _layout(tmp_path)
        assert {"h", "h2", "refused"} <= cols and idx == {"urls_queue"}
        assert all((k, k2) == url_hash(u) for k, k2, u in f.db.execute("SELECT h, h2, url FROM urls"))
        assert f.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert f.db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='urls_new'").fetchone() == (0,)
        if refused:  # same ids, states, depths: claim order and pages unchanged (the page in flight is queued)
            assert _rows(tmp_path) == [r[:3] + ("queued" if r[3] == "in-flight" else r[3],) + r[4:] for r in before]
        assert dict(f.db.execute("SELECT url, refused FROM urls WHERE refused IS NOT NULL")) == (
            {} if not refused else {first.url: "address"})
        assert f.add([f"http://a.com/{i}" for i in range(6)] + ["http://a.com/new"], 1) == 0
        assert f.add(["http://a.com/5", "http://a.com/brand-new"], 0) == 2  # 5 moves up, one new
        order = [x.url for x in f.claim(20, 3)]
        assert order[:2] == ["http://a.com/5", "http://a.com/brand-new"]  # depth 0 first
        # then by id, as before the migration (without ``meta``, the refusal is decided again: queued)
        assert order[2:4] == ([second.url, "http://a.com/2"] if refused else [first.url, second.url])
        assert f.processed() == (2 if refused else 1)


@pytest.mark.parametrize("layout", ["h-without-h2", "unique-url"])
def test_migration_is_atomic(tmp_path, layout):
    """A failure in the middle of the migration leaves the old database as it was."""
    with Frontier(tmp_path) as f:
        f.add([f"http://a.com/{i}" for i in range(50)], 0)
    (to_h_layout if layout == "h-without-h2" else to_old_layout)(tmp_path / "frontier.sqlite")
    before = _rows(tmp_path)
    cols_before, idx_before = _layout(tmp_path)

    class Failing(Frontier):
        @staticmethod
        def url_hash(u: str) -> tuple[int, int]:
            if u.endswith("/40"):
                raise RuntimeError("disk gone")
            return url_hash(u)

    with pytest.raises(sqlite3.OperationalError):
        Failing(tmp_path)
    assert _layout(tmp_path) == (cols_before, idx_before) and "h2" not in cols_before
    db = sqlite3.connect(tmp_path / "frontier.sqlite")
    assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='urls_new'").fetchone() == (0,)
    db.close()
    assert _rows(tmp_path) == before
    with Frontier(tmp_path) as f:  # the lock was released; this open migrates
        assert f.add([f"http://a.com/{i}" for i in range(51)], 0) == 1
    assert _rows(tmp_path)[:50] == before


@pytest.mark.parametrize("layout", ["h-without-h2", "unique-url"])
def test_crawl_resumes_from_an_old_layout_database(tmp_path, layout):
    cfg = dict(max_depth=10, allowed_networks=["127.0.0.0/8"], concurrency=8, per_host_concurrency=4, retries=2,
               timeout=5)
    with LoopbackServer(generated_site(n_pages=40)) as srv:
        s1 = crawl(CrawlConfig(seeds=[srv.base + "/p/0"], max_pages=5, **cfg), tmp_path, progress=False)
        (to_h_layout if layout == "h-without-h2" else to_old_layout)(tmp_path / "state" / "frontier.sqlite")
        first = srv.log.counts()
        s2 = crawl(CrawlConfig(seeds=[srv.base + "/p/0"], max_pages=100, **cfg), tmp_path, progress=False)
        both = srv.log.counts()
    assert (s1.pages, s2.pages, s2.pages_total, s2.stop_reason) == (5, 35, 40, "frontier exhausted")
    assert [p for p, n in both.items() if p.startswith("/p/") and n > 1] == []  # nothing fetched twice
    assert sum(n for p, n in first.items() if p.startswith("/p/")) == 5
    assert {"h", "h2"} <= _layout(tmp_path / "state")[0]


def test_keys_load_with_gaps_in_the_ids(tmp_path):
    """Ids that are not consecutive (a row deleted by hand) are read, not assumed."""
    urls = [f"http://a.com/{i}" for i in range(10)]
    with Frontier(tmp_path) as f:
        f.add(urls, 1)
    db = sqlite3.connect(tmp_path / "frontier.sqlite")
    db.execute("DELETE FROM urls WHERE id=5")
    db.commit()
    db.close()
    with Frontier(tmp_path) as f:
        assert f.add(urls[:4] + urls[5:], 1) == 0 and f.add(urls[:4] + urls[5:], 0) == 9  # known, at depth 1
        assert f.add([urls[4]], 1) == 1
        assert f.db.execute("SELECT id FROM urls WHERE url=?", (urls[4],)).fetchone() == (11,)
