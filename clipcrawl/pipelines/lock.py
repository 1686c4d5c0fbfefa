"""One run at a time per dataset: an ``flock`` on ``DATASET/.lock`` holding the owner's PID.

The ``flock`` is the truth. The kernel drops it when its process dies, so a crashed (``kill -9``)
run never blocks the next one; a free ``flock`` means a free lock whatever PID the file holds
(a dead PID, a zombie not yet reaped, or a PID the system has since given to an unrelated
process). The PID, host and start time written inside only explain who holds a live lock.
Processes forked by the holder close their copy of the descriptor, so a worker that outlives
a killed parent cannot keep the dataset locked. On a shared filesystem (NFS) the ``flock`` is only
as good as the server's lock support (NFSv4 forwards it; NFSv3 needs ``lockd``; ``nolock`` mounts
lock each client on its own): prefer an ``s3://`` dataset for a cluster.

Remote datasets (``s3://...``) are locked across machines by a lease object ``DATASET/.lock.json``
(:mod:`clipcrawl.base.lease`: conditional writes, a heartbeat, takeover after expiry). A store that
cannot do conditional writes is refused (:class:`LockUnsupported`, exit 2) unless the user accepts
a lock of this machine only: ``--lock local`` / ``CLIPCRAWL_LOCK=local`` (a local ``flock`` under
``~/.cache/clipcrawl/locks``).
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


LOCK_MODES = ("auto", "lease", "local")


def lock_mode() -> str:
    """``auto`` (flock for a local dataset, lease for a remote one), ``lease`` or ``local`` (``$CLIPCRAWL_LOCK``)."""
    mode = os.environ.get("CLIPCRAWL_LOCK", "auto").strip().lower() or "auto"
    if mode not in LOCK_MODES:
        from clipcrawl.schemas.config import ConfigError

        raise ConfigError(f"CLIPCRAWL_LOCK={mode!r}: use auto, lease or local")
    return mode


def _remote(dataset: str) -> bool:
    return "://" in dataset and not dataset.startswith("file://")


def lock_path(dataset: str) -> Path:
    """The ``flock`` file: ``DATASET/.lock``; for a remote dataset locked with ``--lock local``, a file of
    this machine."""
    if _remote(dataset):
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
    """``with RunLock(dataset): ...`` raises :class:`LockedError` when a live run holds it.

    A remote dataset gets the cross-machine lease (``mode`` ``auto``/``lease``; ``ttl`` seconds, default
    ``$CLIPCRAWL_LOCK_TTL`` or 60) or, with ``mode="local"``, a lock of this machine only."""

    def __init__(self, dataset: str, mode: str | None = None, ttl: float | None = None) -> None:
        self.dataset = dataset.rstrip("/")
        self.mode = mode or lock_mode()
        self.path = lock_path(dataset)
        self.ttl = ttl
        self._fd: int | None = None
        self.lease: Any = None
        self.took_over: dict[str, Any] | None = None  # owner info of a stale lock we replaced

    def acquire(self) -> RunLock:
        if _remote(self.dataset) and self.mode != "local":
            return self._acquire_lease()
        if self.mode == "lease":
            from clipcrawl.schemas.config import ConfigError

            raise ConfigError(f"--lock lease: {self.dataset} is a local path (it is locked with flock)")
        return self._acquire_flock()

    def _acquire_lease(self) -> RunLock:
        from clipcrawl.base.lease import LEASE_FILE, Lease, LeaseHeld, LeaseUnsupported
        from clipcrawl.schemas.config import ConfigError

        try:
            lease = Lease(f"{self.dataset}/{LEASE_FILE}", self.ttl,
                          info={"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            lease.acquire()
        except LeaseUnsupported as e:
            raise ConfigError(f"cannot lock {self.dataset} across machines: {e} (fix: use a store with "
                              "conditional writes, or accept a lock of this machine only with `--lock local` / "
                              "CLIPCRAWL_LOCK=local when no other machine writes this dataset)") from None
        except LeaseHeld as e:
            raise LockedError(str(e)) from None
        self.lease = lease
        self.took_over = lease.took_over
        return self

    def _acquire_flock(self) -> RunLock:
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
        if self.lease is not None:
            lease, self.lease = self.lease, None
            lease.release()
            return
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
