"""The ``clipcrawl`` command line.

Commands live in :mod:`clipcrawl.pipelines.commands`, one module each, discovered here; a
module exposes ``ORDER`` (position in ``--help``) and ``register(app)``. Command modules keep
their heavy imports inside the command functions so ``clipcrawl --help`` stays fast.

Exit codes: 0 success, 1 failure, 2 unusable config or input, 3 another run holds the lock,
130 interrupted (Ctrl-C: one line on stderr, see :func:`_on_sigint`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import signal
import sys

import typer

from clipcrawl.base.progress import setup_logging
from clipcrawl.schemas.config import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
INTERRUPTED = "clipcrawl: interrupted; rerun the same command to resume"
_interrupted = False


def _on_sigint(signum: int, frame: object) -> None:
    """Ctrl-C: say so once, then stop. Worker processes ignore SIGINT (clipcrawl.base.workers) and
    are shut down by the ``finally`` blocks this exception unwinds through. What the interpreter
    prints while it cleans up after an interrupt (a cancelled task's error, "Unclosed client
    session", "Event loop is closed") is noise: stderr goes to /dev/null from here, and a second
    Ctrl-C no longer interrupts the cleanup. Every file is published atomically, so nothing
    partial is visible; the next run resumes."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sys.stderr.flush()
        print(INTERRUPTED, file=sys.stderr, flush=True)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except (OSError, ValueError):
        pass
    raise KeyboardInterrupt

app = typer.Typer(
    name="clipcrawl",
    help="Build image-text datasets for CLIP-style pretraining: crawl, download, filter, dedup, write.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    log_format: str = typer.Option("auto", "--log-format", help="auto (bars on a TTY), text, or json lines."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
) -> None:
    if log_format not in ("auto", "text", "json"):
        raise typer.BadParameter("use auto, text or json", param_hint="--log-format")
    setup_logging(log_format, verbose=verbose, quiet=quiet)


def _register_commands() -> None:
    from clipcrawl.pipelines import commands

    mods = [importlib.import_module(f"{commands.__name__}.{m.name}") for m in pkgutil.iter_modules(commands.__path__)]
    for mod in sorted(mods, key=lambda m: getattr(m, "ORDER", 100)):
        if hasattr(mod, "register"):
            mod.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    global _interrupted
    _interrupted = False
    from clipcrawl.base.workers import passive_openmp

    passive_openmp()  # torch's CPU threads sleep when idle: they share the cores with decoders
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread (an in-process caller): keep Python's default
        previous = None
    try:
        return _main(argv)
    finally:
        if previous is not None and not _interrupted:
            signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None) -> int:
    from clipcrawl.pipelines.lock import LockedError

    try:
        app(args=argv, standalone_mode=True)
    except ConfigError as e:
        if _interrupted:
            return EXIT_INTERRUPTED
        print(f"clipcrawl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # typer/click exit codes pass through
        if _interrupted:
            return EXIT_INTERRUPTED
        code = e.code
        if code is None:
            return EXIT_OK
        return code if isinstance(code, int) else EXIT_FAILED
    except LockedError as e:  # another run or pass holds the dataset
        print(f"clipcrawl: locked: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except KeyboardInterrupt:
        if not _interrupted:  # raised without our handler (e.g. by a library): say it here
            print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug or an infrastructure failure: one line, traceback with -v
        if _interrupted:  # cleanup after Ctrl-C failed: the interrupt is the answer
            return EXIT_INTERRUPTED
        from clipcrawl.base.extras import extra_hint

        hint = extra_hint(e) if isinstance(e, ModuleNotFoundError) else None
        if hint:  # an optional feature on a core install: name the extra (exit 2)
            print(f"clipcrawl: error: {hint}", file=sys.stderr)
            return EXIT_USAGE
        import logging

        if logging.getLogger("clipcrawl").isEnabledFor(logging.DEBUG):
            raise
        print(f"clipcrawl: failed: {type(e).__name__}: {e} (rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_INTERRUPTED if _interrupted else EXIT_OK


def entry() -> None:
    """The ``clipcrawl`` executable (console script and ``python -m clipcrawl``): :func:`main`,
    then Python's own exit steps, then ``os._exit``.

    Why not a plain ``sys.exit``: Arrow's process-wide CPU and I/O thread pools (and other native
    pools: torch, onnxruntime) cannot be joined from Python; they are destroyed by C++ static
    destructors inside ``exit()``, racing with their worker threads, and a ``std::thread`` still
    joinable there calls ``std::terminate``: "terminate called without an active exception",
    SIGABRT, exit 134 after a run that printed "done" (apache/arrow#34314, #39862). So every
    Python-level cleanup runs here, in order (non-daemon threads and ``concurrent.futures``
    pools joined by ``threading._shutdown``; ``atexit``: multiprocessing children, logging
    flushed), the standard streams are flushed, and the process ends with ``os._exit``, which
    skips the C++ destructors that have nothing left to do. Every file we write is complete
    before this point (closed by its context manager, published by rename)."""
    code = main()
    try:
        import atexit
        import threading

        threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx does first
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
