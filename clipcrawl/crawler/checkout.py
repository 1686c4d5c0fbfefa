"""The crawl state of a remote dataset: a local working copy, checked out and checked in.

The frontier is SQLite, which cannot live on an object store. For a dataset at ``s3://...`` the
crawl runs in a local working copy (``WORK``) of ``DATASET/crawl``::

    DATASET/crawl/state/frontier.sqlite   the last checked-in frontier (a consistent snapshot)
    DATASET/crawl/state/checkin.json      {"id", "time", "host"}: which check-in that is
    DATASET/crawl/{pairs,pages}/NNNNN.parquet   the chunks that frontier has sealed

:func:`checkout` makes ``WORK`` that copy: kept as it is when it comes from the latest check-in
(``WORK/state/.checkout.json`` has its id; it may be further along, which is consistent), replaced by
a download otherwise (another machine ran since, or a fresh container). Chunk files are not
downloaded: the crawler rewrites missing ones from the database (:meth:`ChunkWriter.recover`).

:func:`checkin` uploads a snapshot (SQLite's backup API: consistent while the crawl writes) *first*,
then the chunk files the snapshot has sealed and the dataset lacks, then the stamp. So every chunk
file in the dataset belongs to a frontier that was checked in, and a frontier's missing chunk files
are written by the next run that checks it out. A killed run resumes from the last check-in
(:class:`Checkin` repeats it every ``interval`` seconds during the crawl, and once at the end).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from clipcrawl.base.storage import fs_and_path, write_json
from clipcrawl.schemas.keys import shard_name

log = logging.getLogger("clipcrawl.crawl")

DB = "state/frontier.sqlite"
STAMP = "state/checkin.json"
LOCAL_STAMP = "state/.checkout.json"
TABLES = ("pairs", "pages")


def _read_stamp(url: str) -> dict | None:
    fs, path = fs_and_path(url)
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError, OSError):
        return None


def checkout(remote: str, work: str | os.PathLike[str]) -> str:
    """Make ``work`` the working copy of ``remote``'s crawl state; returns what was done."""
    work = Path(work)
    fs, rdb = fs_and_path(f"{remote}/{DB}")
    fs.invalidate_cache(rdb.rsplit("/", 1)[0])
    local_db = work / DB
    if not fs.exists(rdb):
        if local_db.exists():  # an older version kept the only copy here
            log.info("crawl state of %s found in its old local place %s: it moves into the dataset at the "
                     "next check-in", remote, work)
            return "migrate"
        return "new"
    stamp = _read_stamp(f"{remote}/{STAMP}")
    mine = _read_stamp(str(work / LOCAL_STAMP))
    if stamp and mine and stamp.get("id") == mine.get("id") and local_db.exists():
        return "kept"
    shutil.rmtree(work, ignore_errors=True)
    (work / "state").mkdir(parents=True)
    tmp = work / "state" / f".frontier.sqlite.tmp-{uuid.uuid4().hex[:8]}"
    fs.get_file(rdb, str(tmp))
    os.replace(tmp, local_db)
    if stamp:
        (work / LOCAL_STAMP).write_text(json.dumps(stamp))
    log.info("crawl state of %s checked out to %s (check-in %s)", remote, work,
             (stamp or {}).get("time", "without a stamp"))
    return "downloaded"


def _snapshot(db: Path, out: Path) -> dict[str, set[int]]:
    """A consistent single-file copy of ``db`` (also while another connection writes); its sealed chunks."""
    src = sqlite3.connect(db)
    dst = sqlite3.connect(out)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # self-contained: no -wal file to carry
        return {t: {r[0] for r in dst.execute(f"SELECT DISTINCT chunk FROM {t} WHERE chunk IS NOT NULL")}
                for t in TABLES}
    finally:
        dst.close()
        src.close()


def checkin(work: str | os.PathLike[str], remote: str) -> int:
    """Upload ``work``'s crawl state into ``remote`` (see the module doc); returns the chunk files uploaded."""
    work = Path(work)
    db = work / DB
    if not db.exists():
        return 0
    snap = work / "state" / f".frontier.snapshot-{uuid.uuid4().hex[:8]}.sqlite"
    try:
        sealed = _snapshot(db, snap)
        fs, rdb = fs_and_path(f"{remote}/{DB}")
        fs.put_file(str(snap), rdb)  # one object, whole: the frontier first
    finally:
        snap.unlink(missing_ok=True)
    n = 0
    for table in TABLES:
        _, folder = fs_and_path(f"{remote}/{table}")
        fs.invalidate_cache(folder)
        have = {p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)} if fs.isdir(folder) else set()
        for chunk in sorted(sealed[table]):
            name = f"{shard_name(chunk)}.parquet"
            local = work / table / name
            if name not in have and local.exists():  # not written yet: the next check-in (or checkout) has it
                fs.put_file(str(local), f"{folder}/{name}")
                n += 1
    stamp = {"id": uuid.uuid4().hex, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname()}
    write_json(stamp, f"{remote}/{STAMP}")
    (work / LOCAL_STAMP).write_text(json.dumps(stamp))
    return n


class Checkin:
    """``with Checkin(work, remote, interval):`` checks in every ``interval`` seconds while the crawl runs,
    and once more at the end."""

    def __init__(self, work: str | os.PathLike[str], remote: str, interval: float | None = None) -> None:
        self.work, self.remote = Path(work), remote
        self.interval = float(interval or os.environ.get("CLIPCRAWL_CHECKIN_INTERVAL") or 300)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.count = 0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                checkin(self.work, self.remote)
                self.count += 1
            except Exception as e:  # noqa: BLE001 - the final check-in reports a persistent failure
                log.warning("crawl state check-in to %s failed: %s", self.remote, e)

    def __enter__(self) -> Checkin:
        self._thread = threading.Thread(target=self._loop, name="clipcrawl-checkin", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:  # also after a failure or Ctrl-C: what the crawl did is kept (the frontier is consistent)
            checkin(self.work, self.remote)
            self.count += 1
        except Exception as e:
            if exc_type is None:
                raise
            log.warning("crawl state check-in to %s failed: %s", self.remote, e)
