"""One run at a time per dataset: an ``flock`` on ``DATASET/.lock`` holding the owner's PID.

The kernel drops an ``flock`` when its process dies, so a crashed run never blocks the next
one; the PID written inside the file says who holds a live lock, and a file left by a dead PID
(on filesystems without working ``flock``, or written by hand) is taken over. Remote datasets
(``s3://...``) are locked on this machine under ``~/.cache/clipcrawl/locks``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any


class LockedError(RuntimeError):
    """Another live run holds the dataset. The CLI exits with code 3."""


def lock_path(dataset: str) -> Path:
    if "://" in dataset and not dataset.startswith("file://"):
        digest = hashlib.sha256(dataset.encode()).hexdigest()[:16]
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipcrawl" / "locks"
        return base / f"{digest}.lock"
    return Path(dataset.removeprefix("file://")) / ".lock"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


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
        owner = read_owner(self.path)
        if owner and owner.get("host") == socket.gethostname() and pid_alive(int(owner.get("pid", 0))) \
                and int(owner["pid"]) != os.getpid():
            # flock is free but the recorded owner lives: flock is not honoured here (e.g. NFS); be safe
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise LockedError(f"another run holds {self.path} (pid {owner['pid']}, flock not honoured)")
        if owner:
            self.took_over = owner
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
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
