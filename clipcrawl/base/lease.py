"""A lock that works across machines for a dataset on an object store: a lease object, ``DATASET/.lock.json``.

The lease holds its owner (host, pid, a random id) and an expiry time. It is created with a
conditional write (S3 ``PutObject`` with ``If-None-Match: *``: exactly one of several writers
succeeds), renewed by a heartbeat thread every ``ttl / 3`` seconds while held (``If-Match`` on the
ETag the holder last wrote), and taken over by another run only once it has expired (again
``If-Match`` on the ETag read, so of several runs taking over, one wins). A holder that is killed
stops renewing: its lease is free ``ttl`` seconds later. Release deletes it (``If-Match``).

Expiry compares the writer's clock with the reader's: machines sharing a dataset need clocks
within a fraction of ``ttl`` (NTP). A holder that finds its lease taken over (it was paused for
longer than ``ttl``) interrupts itself (``SIGINT``, as Ctrl-C) rather than keep writing next to the new owner.

A store that cannot do conditional writes (probed once per bucket: the second create of an object
must fail with 412) is refused with a :class:`LeaseUnsupported` error, never locked silently on one
machine. Only S3 and S3-compatible stores are supported for now: AWS (since 2024-08/11 for
``If-None-Match``/``If-Match``), MinIO, R2, SeaweedFS (conditional PUT since 3.97, seaweedfs#7154;
concurrent conditional PUTs race-free since seaweedfs#8801, 2026-03; the tests and the compose file
use 4.48). The probe cannot detect a store that checks the condition but races concurrent writers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

from clipcrawl.base.storage import fs_and_path

log = logging.getLogger("clipcrawl.lock")

LEASE_FILE = ".lock.json"
DEFAULT_TTL = 60.0
_PROBED: dict[tuple[str, str], str | None] = {}  # (endpoint, bucket) -> None (ok) or why not


class LeaseUnsupported(RuntimeError):
    """The store cannot do conditional writes (or is not S3): no cross-machine lock is possible."""


class LeaseHeld(RuntimeError):
    """A live lease of another owner; ``owner`` is its content."""

    def __init__(self, msg: str, owner: dict[str, Any]):
        super().__init__(msg)
        self.owner = owner


def _status(e: BaseException) -> tuple[str | None, int | None]:
    """(S3 error code, HTTP status) of a botocore error, also when s3fs wrapped it."""
    seen = 0
    while e is not None and seen < 5:
        resp = getattr(e, "response", None)
        if isinstance(resp, dict):
            return resp.get("Error", {}).get("Code"), resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None, None


def _precondition_failed(e: BaseException) -> bool:
    code, status = _status(e)
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or status in (409, 412)


def _not_found(e: BaseException) -> bool:
    code, status = _status(e)
    return isinstance(e, FileNotFoundError) or code in ("NoSuchKey", "404") or status == 404


class Lease:
    """``Lease(url).acquire()`` / ``.release()`` for the object at ``url`` (``s3://bucket/prefix/.lock.json``)."""

    def __init__(self, url: str, ttl: float | None = None, *, info: dict[str, Any] | None = None):
        self.url = url
        self.ttl = float(ttl or os.environ.get("CLIPCRAWL_LOCK_TTL") or DEFAULT_TTL)
        self.fs, path = fs_and_path(url)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        if protocol not in ("s3", "s3a"):
            raise LeaseUnsupported(f"{url}: only S3 object stores support the cross-machine lease "
                                   f"(this is {protocol}://)")
        self.bucket, self.key = path.split("/", 1)
        self.id = uuid.uuid4().hex
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), **(info or {})}
        self.etag: str | None = None
        self.took_over: dict[str, Any] | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    # ---------------------------------------------------------------- S3 calls
    def _call(self, method: str, **kw: Any) -> dict[str, Any]:
        return self.fs.call_s3(method, Bucket=self.bucket, **kw)

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({**self.info, "id": self.id, "ttl": self.ttl, "renewed": now, "expires": now + self.ttl,
                           "started": self.info.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()

    def _put(self, **cond: str) -> str:
        return self._call("put_object", Key=self.key, Body=self._body(), ContentType="application/json",
                          **cond)["ETag"]

    def _read(self) -> tuple[dict[str, Any], str] | None:
        """The lease's content and ETag, read in one GET (None when there is none)."""
        from fsspec.asyn import sync

        async def get() -> tuple[bytes, str]:
            r = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            async with r["Body"] as stream:
                return await stream.read(), r["ETag"]

        try:
            body, etag = sync(self.fs.loop, get)
        except Exception as e:
            if _not_found(e):
                return None
            raise
        try:
            owner = json.loads(body)
        except ValueError:
            owner = {}
        return (owner if isinstance(owner, dict) else {}), etag

    def probe(self) -> None:
        """Refuse a store that ignores ``If-None-Match`` (a second create must fail with 412)."""
        where = (str(getattr(self.fs, "client_kwargs", {}).get("endpoint_url") or
                     getattr(self.fs, "endpoint_url", "") or ""), self.bucket)
        if where not in _PROBED:
            key = f"{self.key}.probe-{uuid.uuid4().hex[:8]}"
            why: str | None = None
            try:
                self._call("put_object", Key=key, Body=b"probe")
                try:
                    self._call("put_object", Key=key, Body=b"probe", IfNoneMatch="*")
                    why = "it accepted a second create of one object with If-None-Match: *"
                except Exception as e:
                    if not _precondition_failed(e):
                        why = f"a conditional PutObject failed with {type(e).__name__}: {e}"
            finally:
                with contextlib.suppress(Exception):  # a stray probe object is harmless
                    self._call("delete_object", Key=key)
            _PROBED[where] = why
        if _PROBED[where] is not None:
            raise LeaseUnsupported(f"{self.url}: the object store cannot do conditional writes ({_PROBED[where]})")

    # ---------------------------------------------------------------- acquire / renew / release
    def acquire(self) -> Lease:
        self.probe()
        for _ in range(3):
            try:
                self.etag = self._put(IfNoneMatch="*")
                break
            except Exception as e:
                if not _precondition_failed(e):
                    raise
            held = self._read()
            if held is None:  # released between our write and our read: try again
                continue
            owner, etag = held
            left = float(owner.get("expires", 0)) - time.time()
            if left > 0:
                raise LeaseHeld(f"another run holds {self.url} (pid {owner.get('pid', '?')} on "
                                f"{owner.get('host', '?')}, since {owner.get('started', '?')}; lease expires in "
                                f"{left:.0f}s unless renewed)", owner)
            try:
                self.etag = self._put(IfMatch=etag)
            except Exception as e:
                if _precondition_failed(e):  # another run took it over first
                    continue
                raise
            self.took_over = owner
            log.warning("took over the expired lock %s of pid %s on %s (expired %.0fs ago)", self.url,
                        owner.get("pid", "?"), owner.get("host", "?"), -left)
            break
        else:
            raise LeaseHeld(f"{self.url}: lost the race for the lock three times", {})
        self._stop.clear()
        _interruptible()
        self._thread = threading.Thread(target=self._heartbeat, name="clipcrawl-lease", daemon=True)
        self._thread.start()
        return self

    def renew(self) -> bool:
        """Extend the lease; False (and :attr:`lost`) when another owner took it over."""
        with self._mutex:
            if self.etag is None:
                return False
            try:
                self.etag = self._put(IfMatch=self.etag)
                return True
            except Exception as e:
                if _precondition_failed(e) or _not_found(e):
                    self.lost = True
                    return False
                raise

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.renew():
                    log.error("lost the lock %s (another run took it over after it expired): stopping", self.url)
                    os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the run stops and cleans up
                    return
            except Exception as e:  # noqa: BLE001 - a transient store error: retry at the next beat
                log.warning("could not renew the lock %s: %s", self.url, e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._thread = None
        with self._mutex:
            if self.etag is None or self.lost:
                self.etag = None
                return
            try:
                self._call("delete_object", Key=self.key, IfMatch=self.etag)
            except Exception as e:
                if not (_precondition_failed(e) or _not_found(e)):
                    code, _ = _status(e)
                    if code in ("NotImplemented", "InvalidArgument"):  # no conditional delete: check, then delete
                        held = self._read()
                        if held and held[0].get("id") == self.id:
                            self._call("delete_object", Key=self.key)
                    else:
                        log.warning("could not remove the lock %s: %s (it expires in %.0fs)", self.url, e, self.ttl)
            self.etag = None


def read_lease(url: str) -> dict[str, Any] | None:
    """The content of the lease at ``url`` (None when there is none)."""
    fs, path = fs_and_path(url)
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError):
        return None


def _interruptible() -> None:
    """A lost lease stops the run with SIGINT; a process started with SIGINT ignored (a background job of a
    non-interactive shell: ``clipcrawl run ... &`` in a script, cron wrappers) would never see it and keep
    writing next to the new owner. So, from the main thread, an ignored SIGINT becomes Python's default
    (KeyboardInterrupt), as the CLI's own handler already does; a handler the caller set is kept."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
