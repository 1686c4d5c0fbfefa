"""Worker processes that leave Ctrl-C to their parent.

A terminal sends SIGINT to the whole foreground process group: every decode worker used to raise
its own ``KeyboardInterrupt`` and print a traceback. Here a worker never sees SIGINT: the parent
blocks it in the starting thread while the child is created (a blocked mask is inherited across
``fork`` and ``exec``, so a ``spawn`` child is covered from its first instruction, imports
included), and the worker's initializer ignores it for good. The parent gets the interrupt,
stops, and shuts its pools down; the CLI prints one line (see :mod:`clipcrawl.cli`).
"""

from __future__ import annotations

import multiprocessing.context as mpc
import os
import signal
import sys
from typing import Any


def ignore_sigint() -> None:
    """In a worker process: SIGINT is the parent's business."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # ignored now: a pending one is dropped


class _QuietStart:
    """Mixin: ``start()`` with SIGINT blocked in this thread, so the child inherits it blocked."""

    def start(self) -> None:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            super().start()  # type: ignore[misc]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


# module-level classes: a spawned child unpickles its process object by name
class QuietSpawnProcess(_QuietStart, mpc.SpawnProcess):
    pass


class QuietForkProcess(_QuietStart, mpc.ForkProcess):
    pass


class QuietForkServerProcess(_QuietStart, mpc.ForkServerProcess):
    pass


class _QuietSpawnContext(mpc.SpawnContext):
    Process = QuietSpawnProcess


class _QuietForkContext(mpc.ForkContext):
    Process = QuietForkProcess


class _QuietForkServerContext(mpc.ForkServerContext):
    Process = QuietForkServerProcess


_CONTEXTS = {"spawn": _QuietSpawnContext, "fork": _QuietForkContext, "forkserver": _QuietForkServerContext}


def quiet_context(method: str = "spawn") -> Any:
    """A multiprocessing context whose processes start with SIGINT blocked (pass it as
    ``mp_context`` to ``ProcessPoolExecutor``; pair it with :func:`ignore_sigint` in the initializer)."""
    return _CONTEXTS[method]()


def passive_openmp() -> None:
    """Let OpenMP's idle threads (torch's intra-op pool on CPU) sleep instead of spinning, unless the user
    chose (``OMP_WAIT_POLICY``). libgomp reads the variable once, when torch loads it, so this acts only
    before the first ``import torch`` of the process. Spinning threads burn the cores that decode, resize
    and hash on this machine: tiny CLIP on 2 threads cost 1.6-2.1 CPU-ms per image spinning vs 0.8-0.9
    passive, at the same or better wall time (bench/RESULTS.md)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
