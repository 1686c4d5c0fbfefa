"""A throwaway Ray cluster on loopback for tests: a head on 127.0.0.2 and optional workers on 127.0.0.3...

Ray replaces 127.0.0.1 with the machine's external address, so nodes use other loopback addresses and no
traffic leaves the machine. Every process of the cluster names its own temp dir on its command line;
:meth:`RayCluster.stop` ends exactly those (by pid), never another cluster on the same machine.

Token authentication: a Ray driver caches ``RAY_AUTH_MODE`` early (a fixture that changes it later is too late)
and in token mode refuses calls without a token to its own gRPC server. ``ray.init()`` starting a *local* Ray sets
``os.environ["RAY_AUTH_MODE"] = "token"`` (and ``PYTHONBREAKPOINT``) for good, so a test doing that in
the pytest process leaks token mode into every later test and subprocess. A driver in token mode on a
cluster started with ``RAY_AUTH_MODE=disabled`` sees its actors "cancelled before they started, all
references removed" (the GCS's calls to the owner are refused: "Missing authorization header"). Hence
:func:`ray_cluster` restores ``os.environ``, drivers get :data:`DRIVER_ENV`, and a test that calls
``ray.init()`` itself sets ``RAY_AUTH_MODE=disabled`` with ``monkeypatch`` first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

HEAD_IP = "127.0.0.2"
#: what drivers (this process, the CLI it starts) need in their environment to join the cluster
DRIVER_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@contextlib.contextmanager
def restored_environ() -> Iterator[None]:
    """``os.environ`` as it was on entry, on exit (whatever Ray or the body set or removed)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def ray_cluster(*head_args: str, workers: Sequence[tuple[str, Sequence[str]]] = ()) -> Iterator[RayCluster]:
    """A loopback cluster for one test module: the head (``ray start --head *head_args``) and ``workers``
    (``(ip, args)`` each). Skips when it does not start. While it runs, this process has
    :data:`DRIVER_ENV`; on exit this process's Ray connection is shut down, the cluster's processes are
    ended and ``os.environ`` is restored."""
    import pytest

    with restored_environ():
        os.environ.update(DRIVER_ENV)
        c = RayCluster()
        try:
            ok = c.head(*head_args) and all(c.worker(ip, *args) for ip, args in workers)
            if ok and workers:
                ok = c.wait_nodes(1 + len(workers))
            if not ok:
                pytest.skip(f"ray cluster did not start: {c.error}")
            yield c
        finally:
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                sys.modules["ray"].shutdown()
            c.stop()


def free_port(ip: str = HEAD_IP) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class RayCluster:
    def __init__(self) -> None:
        # short: Ray's unix sockets live under it (107 bytes at most), pytest's tmp paths are too long
        self.tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        self.ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
        root = str(Path(__file__).resolve().parents[2])  # actors unpickle test classes and this checkout
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(self.tmp), "PYTHONPATH": path,
                    "RAY_AUTH_MODE": "disabled"}  # loopback only; a token in ~/.ray would otherwise switch auth on
        self.address: str | None = None
        self.error = ""

    def _start(self, args: list[str], temp: Path) -> bool:
        temp.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([self.ray_bin, "start", *args, "--disable-usage-stats", f"--temp-dir={temp}"],
                           capture_output=True, text=True, timeout=180, env=self.env)
        self.error = r.stderr[-800:]
        return r.returncode == 0

    def head(self, *args: str) -> bool:
        port = free_port()
        ok = self._start(["--head", f"--node-ip-address={HEAD_IP}", f"--port={port}", "--include-dashboard=false",
                          f"--dashboard-agent-listen-port={free_port()}", *args], self.tmp / "h")
        self.address = f"{HEAD_IP}:{port}" if ok else None
        return ok

    def worker(self, ip: str, *args: str) -> bool:
        assert self.address
        return self._start([f"--address={self.address}", f"--node-ip-address={ip}",
                            f"--dashboard-agent-listen-port={free_port(ip)}", *args], self.tmp / f"n{ip.rsplit('.', 1)[-1]}")

    def wait_nodes(self, n: int, timeout: float = 60) -> bool:
        code = ("import ray,sys; ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], log_to_driver=False);"
                "print(sum(1 for x in ray.nodes() if x['Alive']))")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = subprocess.run([sys.executable, "-c", code, self.address, HEAD_IP], capture_output=True, text=True,
                               timeout=120, env=self.env)
            if r.stdout.strip().isdigit() and int(r.stdout.strip()) >= n:
                return True
            time.sleep(1)
        return False

    def pids(self) -> list[int]:
        """The cluster's processes: those naming its temp dir, and their descendants (workers, agents)."""
        parent: dict[int, int] = {}
        mine: set[int] = set()
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ")
                state, ppid = (p / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                if state == "Z":  # exited, waiting to be reaped
                    continue
                parent[int(p.name)] = int(ppid)
            except (OSError, IndexError, ValueError):
                continue
            if str(self.tmp).encode() in cmd:
                mine.add(int(p.name))
        grew = True
        while grew:
            kids = {pid for pid, pp in parent.items() if pp in mine} - mine
            grew = bool(kids)
            mine |= kids
        return sorted(mine - {os.getpid()})

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            end = time.monotonic() + 4
            while pids and time.monotonic() < end and self.pids():
                time.sleep(0.2)
        shutil.rmtree(self.tmp, ignore_errors=True)


def shard_rows(folder: Path, columns=("key", "status", "clip_similarity")) -> list[tuple]:
    """The given columns of a dataset folder's shard Parquet files, row by row in shard order."""
    import pyarrow.parquet as pq

    out = []
    for f in sorted(folder.glob("[0-9]*.parquet")):
        t = pq.read_table(f)
        out += list(zip(*[t.column(c).to_pylist() if c in t.column_names else [None] * t.num_rows
                          for c in columns]))
    return out
