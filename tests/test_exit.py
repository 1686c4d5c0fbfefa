"""Exit path of the ``clipcrawl`` executable (issue 14, bug 4).

The SIGABRT at exit ("terminate called without an active exception", exit 134) came from a native
thread pool torn down by a C++ static destructor. The simulation here registers, the way C++
registers a static destructor (``__cxa_atexit``), a destructor that aborts: the interpreter's own
finalisation (``sys.exit(main())``, the old exit) runs it and dies with SIGABRT; the executable's
exit skips it, while Python's cleanup (atexit handlers, flushed output) still happens.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys

import pytest

SIMULATION = """
import atexit, ctypes, sys
libc = ctypes.CDLL(None)
libc.__cxa_atexit(ctypes.cast(libc.abort, ctypes.c_void_p), None, None)  # a static destructor that aborts
marker = sys.argv[1]
atexit.register(lambda: open(marker, "w").write("python cleanup ran"))
sys.argv = ["clipcrawl", *sys.argv[2:]]
{call}
"""

ENTRY = "import runpy; runpy.run_module('clipcrawl', run_name='__main__')"
OLD_EXIT = "from clipcrawl.cli import main; sys.exit(main())"


def _run(tmp_path, call: str) -> subprocess.CompletedProcess:
    (tmp_path / "empty.csv").write_text("url,caption\n")
    return subprocess.run([sys.executable, "-c", SIMULATION.format(call=call), str(tmp_path / "marker"), "download",
                           str(tmp_path / "empty.csv"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(autouse=True)
def _needs_glibc():
    try:
        ctypes.CDLL(None).__cxa_atexit  # noqa: B018
    except AttributeError:
        pytest.skip("no __cxa_atexit in this C library")


def test_the_old_exit_runs_native_destructors(tmp_path):
    """The failure mode, reproduced deterministically: finalisation reaches native destructors."""
    r = _run(tmp_path, OLD_EXIT)
    assert r.returncode == -signal.SIGABRT, (r.returncode, r.stderr[-2000:])


def test_clipcrawl_exit_skips_native_destructors_but_not_python_cleanup(tmp_path):
    r = _run(tmp_path, ENTRY)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert (tmp_path / "marker").read_text() == "python cleanup ran"
    assert "download ->" in r.stdout  # the summary was flushed before the hard exit
