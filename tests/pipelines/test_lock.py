"""The dataset lock: the flock is the truth, whatever PID ``.lock`` names (issue 14, bug 3)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from clipcrawl.pipelines.lock import LockedError, RunLock

REPO = Path(__file__).resolve().parents[2]


def _holder(ds: Path, fork_child: bool = False) -> subprocess.Popen:
    """A process that takes the lock (optionally forks a child that sleeps), says 'locked' and waits."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from clipcrawl.pipelines.lock import RunLock
        RunLock({str(ds)!r}).acquire()
        if {fork_child!r}:
            r, w = os.pipe()
            if os.fork() == 0:  # the at-fork hook has run when fork() returns here
                os.write(w, b"x")
                time.sleep(60)
                os._exit(0)
            os.read(r, 1)
        print("locked", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    return p


def test_live_unrelated_pid_in_lock_file_does_not_block(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                                    "started": "then"}))
        with RunLock(str(tmp_path)) as lock:
            assert lock.took_over and lock.took_over["pid"] == sleeper.pid
            assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_own_test_process_pid_in_lock_file_does_not_block(tmp_path):
    """A lock file naming a live process (here: pytest itself, as a child sees it) is not a lock."""
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    code = f"from clipcrawl.pipelines.lock import RunLock\nRunLock({str(tmp_path)!r}).acquire()\nprint('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_held_flock_still_refuses(tmp_path):
    p = _holder(tmp_path)
    try:
        with pytest.raises(LockedError, match=f"pid {p.pid}"):
            RunLock(str(tmp_path)).acquire()
    finally:
        p.kill()
        p.wait()
    with RunLock(str(tmp_path)):
        pass


def test_rerun_right_after_kill9_takes_the_lock(tmp_path):
    """kill -9 leaves a zombie until its parent reaps it: its PID is 'alive' but its flock is gone."""
    p = _holder(tmp_path)
    os.kill(p.pid, signal.SIGKILL)
    deadline = time.time() + 10  # wait until it is a zombie, without reaping it
    while time.time() < deadline and Path(f"/proc/{p.pid}/stat").read_text().split()[2] != "Z":
        time.sleep(0.01)
    try:
        with RunLock(str(tmp_path)) as lock:
            assert lock.took_over and lock.took_over["pid"] == p.pid
    finally:
        p.wait()


def test_forked_child_of_killed_holder_does_not_keep_the_lock(tmp_path):
    p = _holder(tmp_path, fork_child=True)
    children = [int(c) for c in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    try:
        with RunLock(str(tmp_path)):
            pass
    finally:
        for c in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c, signal.SIGKILL)


def test_run_proceeds_with_live_foreign_pid_in_lock(tmp_path):
    """``clipcrawl run`` on a dataset whose .lock names a live unrelated process: the run happens."""
    ds = tmp_path / "ds"
    ds.mkdir()
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a red square on white\n")
    cfg = {"dataset": str(ds), "sources": {"urls": {"path": str(urls)}},
           "download": {"allowed_networks": ["127.0.0.0/8"], "retries": 0, "timeout": 2},
           "filters": {"clip": {"enabled": False}}, "dedup": {"enabled": False}, "log_format": "text"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        (ds / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "started": "x"}))
        r = subprocess.run([sys.executable, "-m", "clipcrawl", "run", str(tmp_path / "run.yaml")],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((ds / "runs" / "0001" / "run.json").read_text())["state"] == "done"
