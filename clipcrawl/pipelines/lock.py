"""One run at a time per dataset: an ``flock`` on ``DATASET/.lock`` holding the owner's PID.

The ``flock`` is the truth. The kernel drops it when its process dies, so a crashed (``kill -9``)
run never blocks the next one; a free ``flock`` means a free lock whatever PID the file holds
(a dead PID, a zombie not yet reaped, or a PID the system has since given to an unrelated
process). The PID, host and start time written inside only explain who holds a live lock.
Processes forked by the holder close their copy of the descriptor, so a worker that outlives
a killed parent cannot keep the dataset locked. Remote datasets (``s3://...``) are locked on
this machine under ``~/.cache/clipcrawl/locks``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_HELD_FDS: set[int] = set()  # descriptors holding a flock in this process


def _close_in_child() -> None:
    """After ``fork``: the child must not keep the parent's lock alive with its copy of the fd."""
    for fd in _HELD_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_FDS.clear()


class LockedError(RuntimeError):
    """Another live run holds the dataset. The CLI exits with code 3."""


def lock_path(dataset: str) -> Path:
    if "://" in dataset and not dataset.startswith("file://"):
        digest = hashlib.sha256(dataset.encode()).hexdigest()[:16]
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipcrawl" / "locks"
        return base / f"{digest}.lock"
    return Path(dataset.removeprefix("file://")) / ".lock"


def read_owner(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


class RunLock:
    """``with RunLock(dataset): ...`` raises :class:`LockedError` when a live run holds it."""

    def __init__(self, dataset: str) -> None:
        self.path = lock_path(dataset)
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # owner info of a stale lock we replaced

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = read_owner(self.path) or {}
            raise LockedError(
                f"another run holds {self.path} (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, "
                f"since {owner.get('started', '?')})"
            ) from None
        # the flock is ours, so whoever the file names (dead, a zombie, or a reused PID) holds nothing
        owner = read_owner(self.path)
        if isinstance(owner, dict) and owner:
            self.took_over = owner
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        _HELD_FDS.add(fd)
        return self

    def release(self) -> None:
        if self._fd is None or self._fd not in _HELD_FDS:  # not held, or a forked child's copy
            self._fd = None
            return
        _HELD_FDS.discard(self._fd)
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


os.register_at_fork(after_in_child=_close_in_child)


@contextmanager
def hold_dataset(root: str) -> Iterator[RunLock]:
    """What every pass that rewrites a dataset holds: the dataset lock (:class:`LockedError`, exit 3, while a
    run or another pass holds it), then the temp files a killed writer left are removed (safe: nobody else
    writes while the lock is held)."""
    from clipcrawl.base.storage import remove_temp_files

    with RunLock(root) as lock:
        remove_temp_files(root)
        yield lock
