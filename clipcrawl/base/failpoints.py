"""Named crash points for crash-safety tests (the "failpoint" technique of storage engines).

``failpoint("shard.before_stats")`` does nothing unless ``CLIPCRAWL_FAILPOINT`` names that point
(``name`` or ``name:N`` for its N-th hit in this process); then the process SIGKILLs itself there,
exactly like ``kill -9`` from outside: no cleanup, no atexit, no flush. Tests use it to stop a run
at a chosen step and check that the next run ends with the same dataset as an uninterrupted one.
With ``CLIPCRAWL_FAILPOINT_ONCE=/path/marker`` the point fires only while that file does not exist
(it is created just before the kill): across processes, only the first attempt dies, so a retry on
another worker (a fresh Ray actor) passes.

``CLIPCRAWL_PAUSE=name[:N]@/folder`` pauses instead (concurrency tests: a command held at a chosen step while
another one starts): at the point's first (N-th) hit the process writes ``/folder/paused`` (its PID) and waits
until ``/folder/resume`` exists (at most ten minutes), then goes on.
"""

from __future__ import annotations

import os
import signal
import time

_hits: dict[str, int] = {}


def _pause(name: str) -> None:
    target, _, folder = os.environ.get("CLIPCRAWL_PAUSE", "").partition("@")
    target, _, nth = target.partition(":")
    if target != name or not folder:
        return
    hit = _hits[f"pause:{name}"] = _hits.get(f"pause:{name}", 0) + 1
    if hit != int(nth or 1):
        return
    tmp = os.path.join(folder, f".paused.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, os.path.join(folder, "paused"))
    deadline = time.monotonic() + 600
    while not os.path.exists(os.path.join(folder, "resume")) and time.monotonic() < deadline:
        time.sleep(0.02)


def failpoint(name: str) -> None:
    if "CLIPCRAWL_PAUSE" in os.environ:
        _pause(name)
    spec = os.environ.get("CLIPCRAWL_FAILPOINT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        once = os.environ.get("CLIPCRAWL_FAILPOINT_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)
