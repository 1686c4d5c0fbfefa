"""The crawl's durable state: one SQLite database (WAL mode) under ``DIR/state/``.

Tables
    ``urls``   one row per normalised URL: ``h`` (its 64-bit key, :func:`url_hash`), depth, state
               (queued, in-flight, done, failed, redirected), attempts, fetched_at, ``refused`` (the
               policy that refused or withheld the page: ``address``, ``robots``, ``blocklist``,
               ``tdm``, ``domains``; else NULL). ``redirected`` marks a redirect target so a link to
               it is never fetched again; it is not a processed page.
    ``meta``   key/value: ``policy:<name>`` = the setting each refusal of that policy was decided under.
    ``pages``  one row per processed page (a revisit adds a row), with the ``PAGES`` columns.
    ``pairs``  one row per pair key (``sample_key(url, caption)``): a pair seen on several pages
               keeps the first page that gave it.

Crash safety
    Everything a processed page produces (its ``urls`` state, its ``pages`` row, its pairs, the
    links it queues) is written in **one transaction**, so a ``kill -9`` loses at most pages that
    were in flight, which are re-queued on the next open (as are transient failures, up to
    :data:`MAX_ATTEMPTS` tries). Parquet output is derived from the
    database: :meth:`Frontier.seal_chunk` first assigns unsealed rows a chunk number (committed),
    then the caller writes ``NNNNN.parquet`` atomically from :meth:`Frontier.chunk_rows`; on the
    next run, chunks whose file is missing are written again from the same rows. A pair therefore
    lands in exactly one chunk file, never zero, never two.

Policy refusals are re-decided when their setting changes
    A page refused by a setting (a private address without ``allow_private_networks``, robots.txt
    with ``respect_robots``, a blocklist, TDMRep, the allowed domains) is not a fact about the page
    but about the config it was crawled under. ``Frontier(..., policy={name: fingerprint})`` compares
    each policy's fingerprint with the one stored by the last open; for every policy whose setting
    changed (or was never stored: a database of an older version), the URLs it refused are queued
    again (:attr:`Frontier.redecided`) and decided under the new setting. A rerun with the same
    settings does not fetch them again (so reruns stay cheap and deterministic); a rerun with, say,
    ``--allow-private-networks`` after a ``blocked_address`` seed crawls it.

URLs are found by a 96-bit key held in memory, not by their text
    ``urls`` has no index on the URL. A ``UNIQUE(url)`` index (or an index on a hash) costs one random
    B-tree leaf per new URL, written to the WAL and again at each checkpoint: the CPU per inserted URL
    grew ~1.6x from 100k to 1M URLs as the index left the CPU and page caches
    (``bench/frontier_scale.py``, bench/RESULTS.md). Instead each row stores its key, ``h`` and ``h2``
    (:func:`url_hash`: the first 8 and the next 4 bytes of the URL's BLAKE2b digest; ``h2`` takes 5 bytes
    in the row with its type byte), and the frontier keeps :class:`UrlKeys` in memory: a table from
    ``h``'s high 32 bits to row ids (8 bytes a slot, at most 70 % full), and per row id the other 64 bits
    of the key and the depth the row is queued at (9 bytes a row): 225 MiB at 10M URLs, loaded at open
    (8-12 s at 10M URLs) and updated after each commit. A link is known when a row has **its 96-bit key**, and whether it moves a queued row to a
    smaller depth is decided from memory too, so a link costs no database read (a link to a known URL
    read its row, a random read in a table of 1.3 GB at 10M URLs, before ``h2``). Two different URLs
    share a key with probability 2**-96 per pair: over a crawl of N URLs the chance that any link is
    taken for another URL is about N**2 / 2**97 (6e-16 at 10M URLs, 6e-12 at 1G); such a link would not
    be queued. (:attr:`Frontier.verify_text` makes the URL text decide as well, at one row read per link
    to a known URL.) New rows get their ids from the frontier (``MAX(id) + 1`` at open; one process per
    directory). A database of an earlier version is migrated on open, in one transaction (a crash leaves
    it as it was): ``UNIQUE(url)`` without ``h`` is copied into the current layout; ``h`` without ``h2``
    gains ``h2`` in place (``ALTER TABLE`` + one ``UPDATE`` of both keys, ~50 s at 10M URLs, once). ``meta``
    names the hash that filled the keys; they are computed again when that name differs.

One crawl at a time: :class:`Frontier` holds an exclusive ``flock`` on ``state/lock``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("clipcrawl.crawl")

QUEUED, IN_FLIGHT, DONE, FAILED, REDIRECTED = "queued", "in-flight", "done", "failed", "redirected"
#: a page that failed transiently (timeout, connection, 429/5xx) is queued again on the next run
#: until it has been tried this many times (each try already includes the fetcher's own retries)
MAX_ATTEMPTS = 3
#: page status -> the policy (config setting) that decided it; such refusals are re-decided when the
#: policy's setting changes (see the module doc)
REFUSAL_STATUSES = {"blocked_address": "address", "robots_disallowed": "robots", "blocked": "blocklist",
                    "tdm_reserved": "tdm", "off_domain": "domains"}

PAGE_COLUMNS = ("url", "final_url", "status", "error_message", "http_status", "content_type", "charset",
                "depth", "bytes", "n_pairs", "n_links", "title", "language", "fetched_at")
PAIR_COLUMNS = ("key", "url", "caption", "page_url", "caption_source", "page_title", "page_language",
                "img_width_attr", "img_height_attr", "found_at", "alt", "figcaption", "title", "page_license")
#: pair columns added after the first release: ALTER TABLE'd into older frontier databases
LATER_PAIR_COLUMNS = ("alt", "figcaption", "title", "page_license")

#: ``urls`` columns after ``id``, ``h`` and ``h2`` (a database of an earlier version may lack ``refused``)
URL_COLUMNS = ("url", "depth", "state", "attempts", "retryable", "fetched_at", "added_at", "refused")

_URLS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    h INTEGER NOT NULL,
    h2 INTEGER NOT NULL,
    url TEXT NOT NULL,
    depth INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retryable INTEGER NOT NULL DEFAULT 0,
    fetched_at REAL,
    added_at REAL NOT NULL,
    refused TEXT
)"""
_SCHEMA = _URLS_TABLE.format(name="urls") + f""";
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE INDEX IF NOT EXISTS urls_queue ON urls(state, depth, id);
CREATE TABLE IF NOT EXISTS pages (id INTEGER PRIMARY KEY, {", ".join(PAGE_COLUMNS)}, chunk INTEGER);
CREATE INDEX IF NOT EXISTS pages_chunk ON pages(chunk);
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, {", ".join(PAIR_COLUMNS[1:])}, chunk INTEGER
);
CREATE INDEX IF NOT EXISTS pairs_chunk ON pairs(chunk);
"""


def url_hash(url: str) -> tuple[int, int]:
    """The key of a URL: ``(h, h2)``, the first 8 and the next 4 bytes of its 12-byte BLAKE2b digest, as signed
    integers (SQLite stores ``h2`` in 4 bytes)."""
    d = blake2b(url.encode("utf-8", "surrogatepass"), digest_size=12).digest()
    return int.from_bytes(d[:8], "little", signed=True), int.from_bytes(d[8:], "little", signed=True)


#: rows looked up per query by :meth:`Frontier._known_by_text` (the ``IN`` list is padded to a power of two, so
#: the statement cache holds a few statements)
_LOOKUP_MAX = 512
_U64 = 0xFFFF_FFFF_FFFF_FFFF
_U32 = 0xFFFF_FFFF
#: :meth:`UrlKeys.qd` of a row queued at a depth past 254: every link to it is checked in the database
_QD_ANY = 255


def _qd(depth: int) -> int:
    """:meth:`UrlKeys.qd` of a row queued at ``depth``: a link at depth ``d`` may move it up only if ``d < qd``
    (so a row queued at depth 0 and a row not queued look the same: 0), or if ``qd`` is :data:`_QD_ANY`."""
    return min(max(depth, 0), _QD_ANY)


class UrlKeys:
    """The frontier's URL keys in memory: which row holds a URL of a given 96-bit key, and at which depth a row
    is queued, so a link to a known URL costs no database read.

    Open addressing with linear probing over one uint64 array: a slot holds ``fingerprint << 32 | id`` (the
    fingerprint is ``h``'s high 32 bits; 0 is an empty slot, ids start at 1); a slot's home is a mix of its
    fingerprint, so the table can be rebuilt from its own slots. Probing runs forward only (no wrap-around):
    the array has a tail past the ``2**bits`` homes and its last slot stays empty. Beside the slots, two dense
    arrays indexed by row id (grown by half when an id passes their end): ``check`` (``h``'s low 32 bits
    ``<< 32 | h2``: with the fingerprint, all 96 bits of the key) and ``qd`` (:func:`_qd`: at least the depth
    the row is queued at, :data:`_QD_ANY` for "ask the database"; any value for a row that is not queued,
    0 once claimed). A ``qd`` is lowered only after the transaction that moved its row committed."""

    LOAD = 0.7
    TAIL = 4096
    MIN_BITS = 12

    def __init__(self, hashes: np.ndarray | None = None, ids: np.ndarray | None = None,
                 hashes2: np.ndarray | None = None, qds: np.ndarray | None = None) -> None:
        h = np.zeros(0, np.uint64) if hashes is None else hashes.astype(np.int64).view(np.uint64)
        i = np.zeros(0, np.uint64) if ids is None else ids.astype(np.uint64)
        h2 = np.zeros(len(i), np.int64) if hashes2 is None else hashes2.astype(np.int64)
        if len(i) and int(i.max()) >= 1 << 32:
            raise ValueError("UrlKeys: row ids past 2**32")
        self.n = len(i)
        self._build((h >> np.uint64(32)) << np.uint64(32) | i)
        size = (int(i.max()) + 1 if len(i) else 0)
        size += size // 8 + 1024
        self._check = np.zeros(size, np.uint64)
        self._qd = np.zeros(size, np.uint8)
        if len(i):
            at = i.astype(np.int64)
            self._check[at] = (h & np.uint64(_U32)) << np.uint64(32) | h2.view(np.uint64) & np.uint64(_U32)
            if qds is not None:
                self._qd[at] = qds.astype(np.uint8)
        self._views()

    def _views(self) -> None:
        self._checkv, self._qdv = memoryview(self._check), memoryview(self._qd)  # scalar access as Python ints

    def _grow_rows(self, id_: int) -> None:
        size = max(id_ + 1, len(self._check) + len(self._check) // 2)
        check, qd = np.zeros(size, np.uint64), np.zeros(size, np.uint8)
        check[:len(self._check)], qd[:len(self._qd)] = self._check, self._qd
        self._check, self._qd = check, qd
        self._views()

    @staticmethod
    def _bits_for(n: int) -> int:
        bits = UrlKeys.MIN_BITS
        while (1 << bits) * UrlKeys.LOAD <= n:
            bits += 1
        return bits

    def _build(self, slots: np.ndarray, bits: int | None = None) -> None:
        bits = bits or self._bits_for(len(slots))
        while True:
            homes = self._homes(slots >> np.uint64(32), bits).astype(np.uint32)
            order = np.argsort(homes)  # any order within a home is a valid layout
            homes, ordered = homes[order].astype(np.int64), slots[order]
            step = np.arange(len(homes), dtype=np.int64)
            pos = step + np.maximum.accumulate(homes - step) if len(homes) else step
            size = (1 << bits) + self.TAIL
            if not len(pos) or pos[-1] < size - 1:
                break
            bits += 1  # a cluster ran into the last slot: a larger table
        table = np.zeros(size, np.uint64)
        table[pos] = ordered
        self.bits, self._table = bits, table
        self._slots = memoryview(table)  # scalar reads and writes as Python ints

    @staticmethod
    def _homes(fps: np.ndarray, bits: int) -> np.ndarray:
        return ((fps * np.uint64(0x9E3779B1)) & np.uint64(0xFFFF_FFFF)) >> np.uint64(32 - bits)

    def _home(self, fp: int) -> int:
        return ((fp * 0x9E3779B1) & 0xFFFF_FFFF) >> (32 - self.bits)

    def ids(self, h: int, h2: int) -> list[int]:
        """Row ids whose key is ``(h, h2)`` (all 96 bits)."""
        fp, check = (h & _U64) >> 32, (h & _U32) << 32 | h2 & _U32
        slots, checks, i, out = self._slots, self._checkv, self._home(fp), []
        while e := slots[i]:
            if e >> 32 == fp and checks[e & _U32] == check:
                out.append(e & _U32)
            i += 1
        return out

    def find(self, h: int, h2: int) -> int:
        """The first row id whose key is ``(h, h2)``, 0 if none."""
        fp, check = (h & _U64) >> 32, (h & _U32) << 32 | h2 & _U32
        slots, checks, i = self._slots, self._checkv, self._home(fp)
        while e := slots[i]:
            if e >> 32 == fp and checks[e & _U32] == check:
                return e & _U32
            i += 1
        return 0

    def qd(self, id_: int) -> int:
        """The depth row ``id_`` is queued at (0: not queued, :data:`_QD_ANY`: ask the database)."""
        return self._qdv[id_]

    def set_qd(self, id_: int, qd: int) -> None:
        self._qdv[id_] = qd

    def add(self, h: int, h2: int, id_: int, qd: int = 0) -> None:
        if id_ >= 1 << 32:
            raise ValueError("UrlKeys: row ids past 2**32")
        if id_ >= len(self._check):
            self._grow_rows(id_)
        self._checkv[id_] = (h & _U32) << 32 | h2 & _U32
        self._qdv[id_] = qd
        fp = (h & _U64) >> 32
        slots, i = self._slots, self._home(fp)
        while slots[i]:
            i += 1
        if i >= len(slots) - 1:  # the last slot stays empty (it ends every probe)
            self._build(np.append(self._table[self._table != 0], np.uint64(fp << 32 | id_)), self.bits + 1)
        else:
            slots[i] = fp << 32 | id_
        self.n += 1
        if self.n >= (1 << self.bits) * self.LOAD:
            self._build(self._table[self._table != 0], self.bits + 1)

    def nbytes(self) -> int:
        return self._table.nbytes + self._check.nbytes + self._qd.nbytes


class FrontierLocked(RuntimeError):
    """Another crawl process holds this output directory."""


@dataclass(frozen=True)
class Claim:
    id: int
    url: str
    depth: int
    attempts: int


@dataclass(frozen=True)
class Completed:
    new_pairs: int
    new_links: int


class Frontier:
    """``with Frontier(out_dir / "state") as f: ...`` (single process, single thread)."""

    #: the URL key and its name in ``meta``; tests swap in a tiny hash (in a subclass) to force collisions
    url_hash: Callable[[str], tuple[int, int]] = staticmethod(url_hash)
    url_hash_name = "blake2b-12"
    #: True: a URL is known only when a row with its key also has its text (one row read per link to a known URL:
    #: the rule before ``h2``); tests that force tiny hashes use it to show colliding URLs stay two rows
    verify_text = False

    def __init__(self, state_dir: str | os.PathLike[str], revisit_after_days: float | None = None,
                 policy: Mapping[str, str] | None = None) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        try:  # never through a symlink, never blocked on a FIFO planted there
            self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                                    | os.O_CLOEXEC, 0o644)
        except OSError as e:
            from clipcrawl.schemas.configbase import ConfigError

            raise ConfigError(f"{self.dir}/lock cannot be used as the crawl lock ({e.strerror}: a symbolic link?; "
                              "fix: remove it)") from None
        if not stat.S_ISREG(os.fstat(self._lock_fd).st_mode):
            from clipcrawl.schemas.configbase import ConfigError

            os.close(self._lock_fd)
            raise ConfigError(f"{self.dir}/lock is not a regular file (fix: remove it)")
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise FrontierLocked(f"{self.dir}: another crawl is running on this directory") from None
        try:
            self._open(revisit_after_days, policy)
        except BaseException:
            if getattr(self, "db", None) is not None:
                self.db.close()
            os.close(self._lock_fd)  # a failed open (a migration that failed, rolled back) holds no lock
            raise

    def _open(self, revisit_after_days: float | None, policy: Mapping[str, str] | None) -> None:
        self.db = sqlite3.connect(self.dir / "frontier.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # reads are memory-mapped (up to the 2 GiB SQLite allows by default; the pages are the OS's file cache);
        # SQLite's own page cache is sized by _fit_cache (2 MiB below 1 GiB of database, 128 MiB above)
        self.db.execute("PRAGMA mmap_size=2147418112")  # read path
        self.db.execute("PRAGMA temp_store=MEMORY")
        self.db.create_function("url_h", 1, lambda u: self.url_hash(u)[0], deterministic=True)
        self.db.create_function("url_h2", 1, lambda u: self.url_hash(u)[1], deterministic=True)
        self.db.executescript(_SCHEMA)
        self._pending_page = (1 << 30) // self.db.execute("PRAGMA page_size").fetchone()[0] + 1  # 262,145 at 4 KiB
        self._cache_kib = 0
        self._fit_cache()
        have = {r[1] for r in self.db.execute("PRAGMA table_info(pairs)")}
        for c in LATER_PAIR_COLUMNS:
            if c not in have:
                self.db.execute(f"ALTER TABLE pairs ADD COLUMN {c}")
        url_cols = {r[1] for r in self.db.execute("PRAGMA table_info(urls)")}
        if "h" not in url_cols:
            self._rebuild_urls(url_cols)
        elif "h2" not in url_cols or self._meta("url_hash") != self.url_hash_name:
            self._rekey("h2" not in url_cols)
        if "refused" not in {r[1] for r in self.db.execute("PRAGMA table_info(urls)")}:
            self._add_refused_column()
        self._next_id = (self.db.execute("SELECT MAX(id) FROM urls").fetchone()[0] or 0) + 1
        self._keys: UrlKeys | None = None  # loaded below, once the states are settled (it holds queued depths)
        self._txn_new: dict[str, list[int]] = {}  # URLs inserted by the open transaction: [h, h2, id, qd]
        self._txn_qd: dict[int, int] = {}  # rows whose queued depth the open transaction changed: id -> qd
        self.requeued = self._execute(f"UPDATE urls SET state='{QUEUED}' WHERE state='{IN_FLIGHT}'")
        self.retried = self._execute(
            f"UPDATE urls SET state='{QUEUED}' WHERE state='{FAILED}' AND retryable=1 AND attempts < ?",
            (MAX_ATTEMPTS,))
        self.revisits = 0
        if revisit_after_days:
            cutoff = time.time() - revisit_after_days * 86400
            self.revisits = self._execute(
                f"UPDATE urls SET state='{QUEUED}' WHERE state IN ('{DONE}','{FAILED}') AND fetched_at < ?",
                (cutoff,))
        self.redecided = self._redecide(policy or {})
        self._keys = self._load_keys()

    #: SQLite's page cache (KiB) while the database is smaller than SQLite's pending-byte page (1 GiB), and past it
    SMALL_CACHE_KIB, LARGE_CACHE_KIB = 2 << 10, 128 << 10

    def _fit_cache(self) -> None:
        """Size SQLite's page cache to the database: small while the file is under 1 GiB, 128 MiB past it.

        Why (``perf``, bench/RESULTS.md "Crawl frontier at scale"): when a write splits B-tree pages, SQLite's
        ``balance_nonroot`` swaps two page numbers through a temporary number, the pending-byte page (262,145 at
        4 KiB pages), which raises the page cache's largest key to it; at the end of that transaction
        ``pager_end_transaction`` truncates the cache to the database size, and while the database is smaller
        than 1 GiB that key lies more than the hash table's size past it, so ``pcache1TruncateUnsafe`` walks the
        **whole cache** (every cached page's header): with 128 MiB cached, 51-59 % of a claim's CPU at 186k and
        1.1M URLs (~0.5-0.8 ms per call of 64; claims move index entries to in-flight and split pages often).
        Past 1 GiB that page is inside the database and nothing is walked. Reads are memory-mapped, so a small
        cache costs nothing measurable below 1 GiB; above it the large cache is kept as it was."""
        count = self.db.execute("PRAGMA page_count").fetchone()[0]
        kib = self.LARGE_CACHE_KIB if count >= self._pending_page else self.SMALL_CACHE_KIB
        if kib != self._cache_kib:
            self.db.execute(f"PRAGMA cache_size=-{kib}")
            self._cache_kib = kib

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, value))

    def _rebuild_urls(self, cols: set[str]) -> None:
        """A database of an earlier version (``url TEXT UNIQUE``, no ``h``): copy ``urls`` into the current
        layout (same ids, so claim order and pages stay as they were) in one transaction: a crash leaves
        the old database."""
        n = self.db.execute("SELECT MAX(id) FROM urls").fetchone()[0] or 0
        if n > 100_000:
            log.info("frontier %s: moving %d URLs to the hash-keyed layout (once)", self.dir, n)
        keep = ", ".join(c for c in URL_COLUMNS if c in cols)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DROP TABLE IF EXISTS urls_new")
            self.db.execute(_URLS_TABLE.format(name="urls_new"))
            self.db.execute(f"INSERT INTO urls_new(id, h, h2, {keep}) SELECT id, url_h(url), url_h2(url), {keep} "
                            "FROM urls ORDER BY id")
            self.db.execute("DROP TABLE urls")
            self.db.execute("ALTER TABLE urls_new RENAME TO urls")
            self.db.execute("CREATE INDEX urls_queue ON urls(state, depth, id)")
            if "refused" not in cols:
                self._fill_refused()
            self._set_meta("url_hash", self.url_hash_name)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _rekey(self, add_h2: bool) -> None:
        """A database of the previous version (``h`` without ``h2``) or keyed by another hash: add ``h2`` and
        compute both keys again, in place (no copy of the table: its index is untouched) and in one
        transaction: a crash leaves the database as it was."""
        n = self.db.execute("SELECT MAX(id) FROM urls").fetchone()[0] or 0
        if n > 100_000:
            log.info("frontier %s: computing the 96-bit keys of %d URLs (once)", self.dir, n)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if add_h2:
                self.db.execute("ALTER TABLE urls ADD COLUMN h2 INTEGER NOT NULL DEFAULT 0")
            self.db.execute("UPDATE urls SET h = url_h(url), h2 = url_h2(url)")
            self._set_meta("url_hash", self.url_hash_name)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _add_refused_column(self) -> None:
        """An older database: add ``urls.refused``, filled from each URL's last page status."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("ALTER TABLE urls ADD COLUMN refused TEXT")
            self._fill_refused()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _fill_refused(self) -> None:
        """``urls.refused`` from each URL's last page (one pass over ``urls``, a temporary index on the pages)."""
        cases = " ".join(f"WHEN '{st}' THEN '{name}'" for st, name in REFUSAL_STATUSES.items())
        self.db.execute("DROP TABLE IF EXISTS temp.last_status")
        self.db.execute(f"CREATE TEMP TABLE last_status AS SELECT url, CASE status {cases} END AS refused "
                        "FROM pages WHERE id IN (SELECT MAX(id) FROM pages GROUP BY url)")
        self.db.execute("CREATE INDEX temp.last_status_url ON last_status(url)")
        self.db.execute(
            "UPDATE urls SET refused = (SELECT refused FROM last_status WHERE last_status.url = urls.url) "
            f"WHERE state IN ('{DONE}','{FAILED}')")
        self.db.execute("DROP TABLE temp.last_status")

    def _load_keys(self) -> UrlKeys:
        """:class:`UrlKeys` from ``urls``, a million rows at a time as text that SQLite joins and numpy parses (no
        Python object per row: ~4x faster than fetching rows); the ids are read only where they are not
        consecutive. Every row's depth is taken as its queued depth: for a row that is not queued any value is
        safe (a link to it that looks shallower asks the database, which finds nothing to move)."""
        n = self._next_id - 1
        if n > 1_000_000:
            log.info("frontier %s: loading the keys of %d URLs", self.dir, n)
        hs, h2s, ids, depths, last = [], [], [], [], -(1 << 63)
        q = ("SELECT group_concat(h), group_concat(h2), group_concat(depth), min(id), max(id), count(*) FROM "
             "(SELECT h, h2, depth, id FROM urls WHERE id > ? ORDER BY id LIMIT 1000000)")
        while True:
            h_text, h2_text, depth_text, low, top, count = self.db.execute(q, (last,)).fetchone()
            if not count:
                break
            parsed = [np.fromstring(t, dtype=np.int64, sep=",") for t in (h_text, h2_text, depth_text)]  # in C
            if top - low + 1 == count and self._in_id_order(parsed[0], low):
                parsed.append(np.arange(low, top + 1, dtype=np.int64))
            else:
                q_ids = "SELECT group_concat(id) FROM (SELECT id FROM urls WHERE id > ? ORDER BY id LIMIT 1000000)"
                parsed.append(np.fromstring(self.db.execute(q_ids, (last,)).fetchone()[0], dtype=np.int64, sep=","))
            if any(len(x) != count for x in parsed):
                raise RuntimeError(f"frontier {self.dir}: reading the keys gave {[len(x) for x in parsed]} values "
                                   f"for {count} rows")
            for out, x in zip((hs, h2s, depths, ids), parsed):
                out.append(x)
            last = top
        if not ids:
            return UrlKeys()
        qds = np.clip(np.concatenate(depths), 0, _QD_ANY)
        return UrlKeys(np.concatenate(hs), np.concatenate(ids), np.concatenate(h2s), qds)

    def _in_id_order(self, hs: np.ndarray, low: int) -> bool:
        """Spot check that ``group_concat`` gave the rows in id order (it does over an ordered subquery; SQLite
        does not promise it): the first, middle and last keys against their rows."""
        for i in (0, len(hs) // 2, len(hs) - 1):
            row = self.db.execute("SELECT h FROM urls WHERE id=?", (low + i,)).fetchone()
            if row is None or row[0] != hs[i]:
                return False
        return True

    def _redecide(self, policy: Mapping[str, str]) -> int:
        """Queue again the URLs refused by each policy whose setting differs from the stored one."""
        if not policy:
            return 0
        stored = dict(self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'policy:%'").fetchall())
        changed = [name for name, value in policy.items() if stored.get(f"policy:{name}") != value]
        if not changed:
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            marks = ",".join("?" * len(changed))
            n = self.db.execute(
                f"UPDATE urls SET state='{QUEUED}', refused=NULL, attempts=0 "
                f"WHERE state IN ('{DONE}','{FAILED}') AND refused IN ({marks})", changed).rowcount
            self.db.executemany("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                                "SET value=excluded.value", ((f"policy:{k}", policy[k]) for k in changed))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return n

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None  # type: ignore[assignment]
            self._keys = None  # type: ignore[assignment]  # its memory (128 MiB at 10M URLs) goes now
            os.close(self._lock_fd)

    def __enter__(self) -> Frontier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _begin(self) -> None:
        if self._keys is None:  # dropped after a failed update: loaded again outside any transaction
            self._keys = self._load_keys()
        self.db.execute("BEGIN IMMEDIATE")
        self._txn_new.clear()
        self._txn_qd.clear()
        self._txn_next_id = self._next_id

    def _commit(self) -> None:
        """COMMIT, then the URLs it inserted become keys and the queued depths it changed are noted (if that
        fails, the table is loaded again when next used: it never misses a committed URL)."""
        self.db.execute("COMMIT")
        new, self._txn_new = list(self._txn_new.values()), {}
        moved, self._txn_qd = self._txn_qd, {}
        if self._keys is None:
            return
        try:
            keys = self._keys
            for h, h2, id_, qd in new:
                keys.add(h, h2, id_, qd)
            for id_, qd in moved.items():
                keys.set_qd(id_, qd)
        except BaseException:
            self._keys = None
            raise

    def _rollback(self) -> None:
        """Undo an open transaction (none is open when the COMMIT itself succeeded)."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
            self._next_id = self._txn_next_id
        self._txn_new.clear()
        self._txn_qd.clear()

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            n = self.db.execute(sql, args).rowcount
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return n

    # ------------------------------------------------------------------ queue
    def add(self, urls: Iterable[str], depth: int) -> int:
        """Queue URLs (seeds); a known queued URL moves to the smaller depth. Returns new rows."""
        self._fit_cache()
        self._begin()
        try:
            before = self.db.total_changes
            self._upsert(urls, depth, time.time())
            n = self.db.total_changes - before
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return n

    def _known(self, keyed: Sequence[tuple[tuple[int, int], str]]) -> dict[str, list[int]]:
        """The rows of these ``((h, h2), url)`` that exist: url -> [id, qd] (qd: :meth:`UrlKeys.qd`, as this
        transaction left it). A row is the URL's when its 96-bit key matches, read from memory (no database
        read); with :attr:`verify_text`, when its text matches too."""
        assert self._keys is not None  # loaded by _begin
        if self.verify_text:
            return self._known_by_text(keyed)
        keys, pending, moved = self._keys, self._txn_new, self._txn_qd
        find, qd = keys.find, keys.qd
        found: dict[str, list[int]] = {}
        for (h, h2), u in keyed:
            p = pending.get(u)
            if p is not None:
                found[u] = [p[2], moved.get(p[2], p[3])]
            elif id_ := find(h, h2):
                found[u] = [id_, moved.get(id_, qd(id_))]
        return found

    def _known_by_text(self, keyed: Sequence[tuple[tuple[int, int], str]]) -> dict[str, list[int]]:
        """:meth:`_known` when a candidate row's text decides: a row with the same key whose text differs is
        another URL and is not returned."""
        want, cands = set(), set()
        keys, pending = self._keys, self._txn_new
        assert keys is not None
        for (h, h2), u in keyed:
            want.add(u)
            cands.update(keys.ids(h, h2))
            if u in pending:
                cands.add(pending[u][2])
        found: dict[str, list[int]] = {}
        ids = list(cands)
        for i in range(0, len(ids), _LOOKUP_MAX):
            part = ids[i:i + _LOOKUP_MAX]
            width = 1 << (len(part) - 1).bit_length()  # pad with a repeat: one statement per power of two
            part += part[:1] * (width - len(part))
            q = f"SELECT id, url, depth, state FROM urls WHERE id IN ({','.join('?' * width)})"
            for id_, url, d, st in self.db.execute(q, part):
                if url in want:
                    found[url] = [id_, _qd(d) if st == QUEUED else 0]
        return found

    def _new_id(self, key: tuple[int, int], url: str, qd: int) -> int:
        id_ = self._next_id
        if id_ >= 1 << 32:
            raise RuntimeError(f"frontier {self.dir}: more than 2**32 URLs (the key table's row ids are 32-bit)")
        self._next_id += 1
        self._txn_new[url] = [key[0], key[1], id_, qd]
        return id_

    def _upsert(self, urls: Iterable[str], depth: int, now: float) -> None:
        """Insert the new URLs (in order), move known queued ones to a smaller depth."""
        h = self.url_hash
        keyed = [(h(u), u) for u in urls]
        if not keyed:
            return
        known = self._known(keyed)
        new, shallower, qd = [], [], _qd(depth)
        for k, u in keyed:
            row = known.get(u)
            if row is None:
                id_ = self._new_id(k, u, qd)
                new.append((id_, k[0], k[1], u, depth, QUEUED, now))
                known[u] = [id_, qd]
            elif depth < row[1] or row[1] == _QD_ANY:  # it may be queued deeper: the database decides
                shallower.append((depth, row[0], depth))
                row[1] = self._txn_qd[row[0]] = min(qd, row[1])
        self.db.executemany("INSERT INTO urls(id, h, h2, url, depth, state, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            new)
        self.db.executemany(f"UPDATE urls SET depth=? WHERE id=? AND state='{QUEUED}' AND depth > ?", shallower)

    def claim(self, n: int, max_depth: int, take: Callable[[str], bool] | None = None,
              window: int = 0) -> list[Claim]:
        """Atomically move up to ``n`` queued URLs (shallowest first) to in-flight. With ``take``,
        only URLs it accepts are claimed, from the first ``max(window, n)`` queued ones (the
        crawler skips hosts that already have enough pages in flight, so one slow host does not
        hold every worker)."""
        if n <= 0:
            return []
        self._fit_cache()  # the database may have grown past 1 GiB since the last call
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute(
                f"SELECT id, url, depth, attempts FROM urls WHERE state='{QUEUED}' AND depth <= ? "
                "ORDER BY depth, id LIMIT ?", (max_depth, max(n, window) if take else n))
            if take is None:
                rows = cur.fetchall()
            else:  # rows are read as they are taken: usually ~n of the window, not all of it
                rows = []
                for r in cur:
                    if take(r[1]):
                        rows.append(r)
                        if len(rows) == n:
                            break
                cur.close()
            self.db.executemany(f"UPDATE urls SET state='{IN_FLIGHT}' WHERE id=?", ((r[0],) for r in rows))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if self._keys is not None:
            for r in rows:
                self._keys.set_qd(r[0], 0)  # not queued
        return [Claim(*r) for r in rows]

    def complete(self, claim: Claim, page: dict[str, Any], pairs: Sequence[dict[str, Any]],
                 links: Sequence[str], ok: bool, final_url: str | None = None,
                 retryable: bool = False, refused: str | None = None) -> Completed:
        """Record one processed page in one transaction (see the module doc)."""
        now = page.get("fetched_at") or time.time()
        self._begin()
        try:
            self.db.execute("UPDATE urls SET state=?, attempts=attempts+1, fetched_at=?, retryable=?, refused=? "
                            "WHERE id=?", (DONE if ok else FAILED, now, int(retryable and not ok), refused, claim.id))
            self.db.execute(f"INSERT INTO pages({', '.join(PAGE_COLUMNS)}) VALUES ({', '.join('?' * len(PAGE_COLUMNS))})",
                            tuple(page.get(c) for c in PAGE_COLUMNS))
            before = self.db.total_changes
            self.db.executemany(
                f"INSERT OR IGNORE INTO pairs({', '.join(PAIR_COLUMNS)}) VALUES ({', '.join('?' * len(PAIR_COLUMNS))})",
                (tuple(p.get(c) for c in PAIR_COLUMNS) for p in pairs))
            new_pairs = self.db.total_changes - before
            if final_url and final_url != claim.url:
                k = self.url_hash(final_url)
                row = self._known([(k, final_url)]).get(final_url)
                if row is None:
                    self.db.execute("INSERT INTO urls(id, h, h2, url, depth, state, fetched_at, added_at) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                    (self._new_id(k, final_url, 0), k[0], k[1], final_url, claim.depth, REDIRECTED,
                                     now, now))
                else:  # a row queued at depth 0 has qd 0 too: the database decides
                    self.db.execute(f"UPDATE urls SET state='{REDIRECTED}', fetched_at=? WHERE id=? AND state='{QUEUED}'",
                                    (now, row[0]))
                    self._txn_qd[row[0]] = 0
            before = self.db.total_changes
            self._upsert(links, claim.depth + 1, now)
            new_links = self.db.total_changes - before
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return Completed(new_pairs, new_links)

    # ------------------------------------------------------------------ counts
    def processed(self) -> int:
        """URLs finished (done or failed): what ``max_pages`` bounds."""
        return self.db.execute(f"SELECT COUNT(*) FROM urls WHERE state IN ('{DONE}','{FAILED}')").fetchone()[0]

    def queued(self, max_depth: int) -> int:
        q = f"SELECT COUNT(*) FROM urls WHERE state='{QUEUED}' AND depth <= ?"
        return self.db.execute(q, (max_depth,)).fetchone()[0]

    def has_queued(self, max_depth: int) -> bool:
        q = f"SELECT 1 FROM urls WHERE state='{QUEUED}' AND depth <= ? LIMIT 1"
        return self.db.execute(q, (max_depth,)).fetchone() is not None

    def counts(self) -> dict[str, int]:
        out = dict(self.db.execute("SELECT state, COUNT(*) FROM urls GROUP BY state").fetchall())
        out["pages"] = self.db.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
        out["pairs"] = self.db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
        return out

    def unsealed(self, table: str) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM {_table(table)} WHERE chunk IS NULL").fetchone()[0]

    # ------------------------------------------------------------------ chunks
    def seal_chunk(self, table: str, max_rows: int) -> int | None:
        """Give up to ``max_rows`` unsealed rows of ``pages``/``pairs`` the next chunk number."""
        t = _table(table)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            n = self.db.execute(f"SELECT COALESCE(MAX(chunk), -1) + 1 FROM {t}").fetchone()[0]
            cur = self.db.execute(
                f"UPDATE {t} SET chunk=? WHERE id IN (SELECT id FROM {t} WHERE chunk IS NULL ORDER BY id LIMIT ?)",
                (n, max_rows))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return n if cur.rowcount else None

    def chunks(self, table: str) -> list[int]:
        t = _table(table)
        return [r[0] for r in self.db.execute(f"SELECT DISTINCT chunk FROM {t} WHERE chunk IS NOT NULL ORDER BY 1")]

    def chunk_rows(self, table: str, chunk: int) -> list[dict[str, Any]]:
        t = _table(table)
        cols = PAGE_COLUMNS if t == "pages" else PAIR_COLUMNS
        cur = self.db.execute(f"SELECT {', '.join(cols)} FROM {t} WHERE chunk=? ORDER BY id", (chunk,))
        return [dict(zip(cols, r)) for r in cur]


def _table(name: str) -> str:
    if name not in ("pages", "pairs"):
        raise ValueError(f"unknown table {name!r}")
    return name
