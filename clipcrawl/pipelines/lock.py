"""One run at a time per dataset: an ``flock`` on ``DATASET/.lock`` holding the owner's PID.

The ``flock`` is the truth. The kernel drops it when its process dies, so a crashed (``kill -9``)
run never blocks the next one; a free ``flock`` means a free lock whatever PID the file holds
(a dead PID, a zombie not yet reaped, or a PID the system has since given to an unrelated
process). The PID, host and start time written inside only explain who holds a live lock.
Processes forked by the holder close their copy of the descriptor, so a worker that outlives
a killed parent cannot keep the dataset locked. On a shared filesystem (NFS) the ``flock`` is only
as good as the server's lock support (NFSv4 forwards it; NFSv3 needs ``lockd``; ``nolock`` mounts
lock each client on its own): prefer an ``s3://`` dataset for a cluster.

Two kinds of holder (one rule, :func:`hold_dataset`): a command that rewrites a dataset (run, download
into it, score, dedup, curate, reshard's OUT, index) holds it **exclusively** (``LOCK_EX``), taken before
it lists anything, so what it reads is what it rewrites; a command that only reads a dataset another
may be rewriting (reshard's source, search, card, stats) holds it **shared** (``LOCK_SH``): readers run
side by side, never next to a writer. Either way a held lock is :class:`LockedError` (exit 3) naming
who holds it. A process re-entering a lock it holds (score then curate in one command) reuses it.

The lock file cannot be turned against the user: it is opened with ``O_NOFOLLOW`` (a symlink is
refused, never followed), must be a regular file with one link, and is only ever truncated when it is
empty or holds a clipcrawl owner record (a file of other content is refused, exit 2, untouched). The last
holder removes it on release (a killed one leaves it, harmlessly: the ``flock`` died with it); a lock
taken on a file that was removed meanwhile is taken again on the path's new file (the usual
``flock``-then-``stat`` check), so removing it never lets two holders in.

Remote datasets (``s3://...``) are locked across machines by a lease object ``DATASET/.lock.json``
(:mod:`clipcrawl.base.lease`: conditional writes, a heartbeat, takeover after expiry). A store that
cannot do conditional writes is refused (:class:`LockUnsupported`, exit 2) unless the user accepts
a lock of this machine only: ``--lock local`` / ``CLIPCRAWL_LOCK=local`` (a local ``flock`` under
``~/.cache/clipcrawl/locks``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import stat
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
    _HELD.clear()  # the child holds nothing: it must take the lock itself if it needs one


class LockedError(RuntimeError):
    """Another live run holds the dataset. The CLI exits with code 3."""


_OWNER_KEYS = {"pid", "host", "started"}


def _config_error(msg: str) -> Exception:
    from clipcrawl.schemas.config import ConfigError

    return ConfigError(msg)


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

    def __init__(self, dataset: str, mode: str | None = None, ttl: float | None = None, *,
                 shared: bool = False, create: bool = True) -> None:
        self.dataset = dataset.rstrip("/")
        self.create = create  # make the dataset folder if missing (a new dataset); else a missing one is exit 2
        self.shared = shared  # a reader: LOCK_SH, side by side with other readers, never with a writer
        self.mode = mode or lock_mode()
        self.path = lock_path(dataset)
        self.ttl = ttl
        self._fd: int | None = None
        self.lease: Any = None
        self.took_over: dict[str, Any] | None = None  # owner info of a stale lock we replaced

    def acquire(self) -> RunLock:
        if _remote(self.dataset) and self.mode != "local":
            return self._check_lease() if self.shared else self._acquire_lease()
        if self.mode == "lease":
            from clipcrawl.schemas.config import ConfigError

            raise ConfigError(f"--lock lease: {self.dataset} is a local path (it is locked with flock)")
        return self._acquire_flock()

    def _check_lease(self) -> RunLock:
        """A reader of a remote dataset: refused while a live lease says a writer is at work (an object
        store has no shared lock; the reader then reads the committed manifest's shards)."""
        from clipcrawl.base.lease import LEASE_FILE, read_lease

        owner = read_lease(f"{self.dataset}/{LEASE_FILE}")
        if isinstance(owner, dict) and float(owner.get("expires", 0) or 0) > time.time():
            raise LockedError(f"another run holds {self.dataset}/{LEASE_FILE} (pid {owner.get('pid', '?')} on "
                              f"{owner.get('host', '?')}, since {owner.get('started', '?')})")
        return self

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

    def _open(self) -> int:
        """The lock file, safely: no symlink followed (``O_NOFOLLOW``), no FIFO/device blocking the open
        (``O_NONBLOCK``), a regular file with one link; a reader falls back to a read-only descriptor (or
        none, on a dataset it cannot write to: nobody can rewrite it through this machine's user)."""
        flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        if not self.path.parent.is_dir() and not _remote(self.dataset):
            if self.shared:
                return -1  # nothing to read there (the reader says so itself); never create a folder for it
            if not self.create:
                raise _config_error(f"{self.dataset}: no such dataset folder, so no finished shards (fix: check the path)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags | os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _config_error(f"{self.path} is a symbolic link: refusing to use it as the dataset lock "
                                    "(it could point at any file; fix: remove it)") from None
            if not self.shared or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            try:
                fd = os.open(self.path, flags | os.O_RDONLY)
            except FileNotFoundError:
                return -1  # a read-only dataset without a lock file: nobody writes it through us
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 0:  # its last holder removed it just now: open anew
            os.close(fd)
            return -2
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            what = "has other hard links" if stat.S_ISREG(st.st_mode) else "is not a regular file"
            raise _config_error(f"{self.path} {what}: refusing to use it as the dataset lock (fix: remove it)")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return fd

    def _holder(self) -> str:
        owner = read_owner(self.path)
        if isinstance(owner, dict) and owner.get("pid"):
            return (f"another run holds {self.path} (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, "
                    f"since {owner.get('started', '?')}, {owner.get('command', 'a clipcrawl command')})")
        readers = ", ".join(f"pid {pid} ({cmd})" for pid, cmd in _flock_holders(self.path)) or "a reader"
        return (f"another command holds {self.path} for reading ({readers}: search, stats, verify, card --out or a "
                "reshard source); rerun when it has ended")

    def _same_file(self, fd: int) -> bool:
        """Whether the path still names the file we locked (a releasing holder unlinks it: a lock taken on
        the unlinked file is no lock, so take it again on the new one)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _acquire_flock(self) -> RunLock:
        for _ in range(100):
            fd = self._open()
            if fd == -2:
                continue
            if fd < 0:
                return self
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockedError(self._holder()) from None
            if self._same_file(fd):
                break
            os.close(fd)
        else:
            raise LockedError(f"{self.path} keeps being replaced: another command is taking and releasing it")
        self._fd = fd
        _HELD_FDS.add(fd)
        if self.shared:  # readers leave the owner record alone (it names the last writer or nobody)
            return self
        # the flock is ours, so whoever the file names (dead, a zombie, or a reused PID) holds nothing
        size = os.fstat(fd).st_size
        owner = read_owner(self.path) if size else None
        if size and not (isinstance(owner, dict) and (not owner or set(owner) & _OWNER_KEYS)):
            _HELD_FDS.discard(fd)
            self._fd = None
            os.close(fd)  # closing drops the flock; the file stays as it was
            raise _config_error(f"{self.path} holds {size} bytes that are not a clipcrawl lock record: refusing "
                                "to overwrite it (fix: move it away)")
        if isinstance(owner, dict) and owner:
            self.took_over = owner
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": _command_line()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
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
            # the last holder removes the file, so a dataset (or an img2dataset-layout folder) keeps no .lock
            # behind; a reader removes it only when it can take it exclusively (no other reader left)
            last = not self.shared
            if self.shared:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    last = True
                except BlockingIOError:
                    pass
            if last and self._same_file(self._fd):
                try:
                    os.unlink(self.path)
                except OSError:  # a folder we may not write: leave an empty record
                    if not self.shared:
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


def _flock_holders(path: Path) -> list[tuple[int, str]]:
    """(pid, command line) of the processes of this machine holding a ``flock`` on ``path`` (Linux'
    ``/proc/locks``; empty elsewhere): names the readers, which write no owner record."""
    try:
        st = os.stat(path, follow_symlinks=False)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            pid, ino = int(parts[4]), int(parts[5].rsplit(":", 1)[1])
        except (ValueError, IndexError):
            continue
        if ino != st.st_ino or any(p == pid for p, _ in found):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            cmd = " ".join(a.decode(errors="replace") for a in argv[:4] if a)[:120]
        except OSError:
            cmd = "?"
        found.append((pid, cmd))
    return found[:5]


def _command_line() -> str:
    import sys

    prog = os.path.basename(sys.argv[0] or "python")
    argv = ["clipcrawl" if prog in ("__main__.py", "cli.py") else prog] + sys.argv[1:3]
    return " ".join(a.replace("\n", " ")[:80] for a in argv)


_HELD: dict[str, list[Any]] = {}  # dataset root -> [RunLock, depth]: this process's holds (re-entrant)


def _key(root: str) -> str:
    root = root.rstrip("/")
    return root if _remote(root) else os.path.realpath(root.removeprefix("file://"))


def check_manifest(root: str) -> None:
    """Check before write: an unreadable manifest stops the pass before it changes a byte (exit 2)."""
    from clipcrawl.pipelines.manifest import load_manifest, manifest_path

    try:
        load_manifest(root)
    except (OSError, ValueError) as e:
        raise _config_error(f"{manifest_path(root)} cannot be read ({type(e).__name__}: {e}); nothing was "
                            "changed (fix: restore it, or move it away and rerun `clipcrawl verify`)") from None


@contextmanager
def hold_dataset(root: str, *, shared: bool = False, check: bool = True, create: bool = False
                 ) -> Iterator[RunLock]:
    """What every command that reads or rewrites a dataset holds, from before it lists anything to its
    last write: the dataset lock, exclusive (a writer) or ``shared`` (a reader), :class:`LockedError`
    (exit 3) while a writer holds it (or, for a writer, anyone). Then, for a writer: the manifest must be
    readable (``check``; :class:`ConfigError`, exit 2, nothing changed; a missing folder is made only with
    ``create``, else exit 2) and the temp files a killed writer
    left are removed (safe: nobody else writes while the lock is held). Re-entrant within a process: an
    inner hold of a dataset this process already holds exclusively (or shared, for an inner reader) reuses
    it."""
    from clipcrawl.base.failpoints import failpoint
    from clipcrawl.base.storage import remove_temp_files

    key = _key(root)
    held = _HELD.get(key)
    if held is not None:
        if held[0].shared and not shared:
            raise RuntimeError(f"{root}: a shared hold cannot be upgraded to an exclusive one")
        held[1] += 1
        try:
            yield held[0]
        finally:
            held[1] -= 1
        return
    with RunLock(root, shared=shared, create=create) as lock:
        _HELD[key] = [lock, 1]
        try:
            if not shared:
                if check:
                    check_manifest(root)
                remove_temp_files(root)
            failpoint("lock.held.shared" if shared else "lock.held")
            yield lock
        finally:
            _HELD.pop(key, None)


def holds(root: str) -> bool:
    """Whether this process holds ``root`` exclusively (for code that must run under a writer's lock)."""
    held = _HELD.get(_key(root))
    return held is not None and not held[0].shared
