"""The cross-machine lock of an ``s3://`` dataset: a lease object on a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fsspec
import pytest

from clipcrawl.base.lease import LEASE_FILE, read_lease
from clipcrawl.pipelines.lock import LockedError, RunLock
from clipcrawl.schemas.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.network


def test_second_holder_is_locked_out_until_release(s3_url):
    first = RunLock(s3_url, ttl=30).acquire()
    try:
        owner = read_lease(f"{s3_url}/{LEASE_FILE}")
        assert owner["pid"] == os.getpid() and owner["expires"] > time.time() + 20
        with pytest.raises(LockedError, match="another run holds"):
            RunLock(s3_url, ttl=30).acquire()
    finally:
        first.release()
    assert read_lease(f"{s3_url}/{LEASE_FILE}") is None  # released: the object is gone
    with RunLock(s3_url, ttl=30) as again:
        assert again.took_over is None


def test_heartbeat_keeps_a_short_lease_alive(s3_url):
    with RunLock(s3_url, ttl=1.5):
        time.sleep(3.5)  # two TTLs: only the heartbeat keeps it
        with pytest.raises(LockedError):
            RunLock(s3_url, ttl=1.5).acquire()


def test_expired_lease_is_taken_over(s3_url):
    fs, _ = fsspec.core.url_to_fs(s3_url)
    stale = {"host": "elsewhere", "pid": 4242, "id": "x", "ttl": 1, "expires": time.time() - 5, "started": "then"}
    fs.pipe_file(f"{s3_url}/{LEASE_FILE}", json.dumps(stale).encode())
    with RunLock(s3_url, ttl=30) as lock:
        assert lock.took_over is not None and lock.took_over["pid"] == 4242
        assert read_lease(f"{s3_url}/{LEASE_FILE}")["pid"] == os.getpid()


def test_a_killed_holder_frees_the_lock_after_its_ttl(s3_url):
    code = textwrap.dedent(f"""
        import time
        from clipcrawl.pipelines.lock import RunLock
        RunLock({s3_url!r}, ttl=2).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "locked"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        with pytest.raises(LockedError):  # not yet expired: the kill alone frees nothing on an object store
            RunLock(s3_url, ttl=30).acquire()
        time.sleep(2.5)
        with RunLock(s3_url, ttl=30) as lock:
            assert lock.took_over is not None and lock.took_over["pid"] == p.pid
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_store_without_conditional_writes_is_refused_unless_local(tmp_path, monkeypatch):
    url = "memory://clipcrawl-lock-test/ds"  # not S3: no conditional writes
    with pytest.raises(ConfigError, match="--lock local"):
        RunLock(url).acquire()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CLIPCRAWL_LOCK", "local")
    with RunLock(url) as lock:  # a flock of this machine, as the user asked
        assert lock.lease is None and lock.path.is_relative_to(tmp_path)


def test_concurrent_acquirers_exactly_one_wins(s3_url):
    """Conditional creates race on the server (SeaweedFS fixed a check-then-write race in seaweedfs#8801)."""
    import threading

    barrier, won, lost = threading.Barrier(6), [], []

    def take() -> None:
        lock = RunLock(s3_url, ttl=30)
        barrier.wait()
        try:
            won.append(lock.acquire())
        except LockedError:
            lost.append(1)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(won) == 1 and len(lost) == 5
    finally:
        for lock in won:
            lock.release()


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_a_holder_whose_lease_was_taken_over_stops(s3_url, sigint):
    """Paused past its TTL and taken over: the heartbeat finds the ETag changed and interrupts the run, also in
    a process started with SIGINT ignored (a background job of a non-interactive shell)."""
    code = textwrap.dedent(f"""
        import time
        from clipcrawl.pipelines.lock import RunLock
        RunLock({s3_url!r}, ttl=1.5).acquire()
        print("locked", flush=True)
        try:
            time.sleep(30)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    disposition = signal.SIG_IGN if sigint == "ignored" else signal.SIG_DFL  # SIG_DFL: Python installs its own
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "locked"
        fs, _ = fsspec.core.url_to_fs(s3_url)
        other = {"host": "elsewhere", "pid": 1, "id": "y", "ttl": 60, "expires": time.time() + 60}
        fs.pipe_file(f"{s3_url}/{LEASE_FILE}", json.dumps(other).encode())  # another run took it over
        out, err = p.communicate(timeout=20)
        assert "interrupted" in out and "lost the lock" in err
        assert read_lease(f"{s3_url}/{LEASE_FILE}")["id"] == "y"  # the new owner's lease is left alone
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_reader_of_an_s3_dataset_is_refused_while_a_writer_holds_the_lease(s3_url):
    """An object store has no shared lock: a reader (search, stats, verify, a reshard source) checks the lease
    and exits 3 while a live one exists; with none it reads (and writes no lease of its own)."""
    with RunLock(s3_url, ttl=30), pytest.raises(LockedError, match="another run holds"):
        RunLock(s3_url, shared=True).acquire()
    with RunLock(s3_url, shared=True) as reader:
        assert reader.lease is None and read_lease(f"{s3_url}/{LEASE_FILE}") is None
