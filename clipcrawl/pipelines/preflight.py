"""Checks before any work starts: can the output be written where the user pointed?

A dataset path that is an existing file, or a folder this process cannot write, used to surface
as a raw ``FileExistsError``/``PermissionError`` (exit 1) after the crawl or the first downloads.
:func:`check_output` raises a :class:`ConfigError` (exit 2) naming the path and the fix before
anything is fetched; ``clipcrawl run --check`` runs it too. Remote outputs (``s3://``...) are not
probed here (listing a bucket may need credentials the run gets later); the run reports them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from clipcrawl.schemas.config import ConfigError

#: Sub-folders a dataset writes into; each one that exists must be writable too.
DATASET_DIRS = ("shards", "samples", "runs", "crawl", "dedup", "embeddings")


def _writable(folder: Path) -> str | None:
    """None when a file can be created in ``folder`` (a real probe: permissions, ACLs, read-only
    mounts), else the reason."""
    probe = folder / f".clipcrawl-write-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as e:
        return e.strerror or type(e).__name__
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def check_output(path: str, what: str = "dataset") -> None:
    """Raise :class:`ConfigError` unless ``path`` is (or can become) a writable folder."""
    if "://" in path and not path.startswith("file://"):
        return
    p = Path(path.removeprefix("file://")).expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: the {what} path is an existing file, not a folder "
                          f"(fix: point the {what} at a folder, or move the file away)")
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{existing}: is a file, so the {what} folder {p} cannot be created "
                          f"(fix: choose a path whose parent folders are folders)")
    folders = [existing] + ([p / d for d in DATASET_DIRS if (p / d).is_dir()] if existing == p else [])
    for folder in folders:
        reason = _writable(folder)
        if reason:
            raise ConfigError(f"{folder}: cannot write the {what} here ({reason}) "
                              f"(fix: choose a writable folder, or give this user write permission: "
                              f"chmod u+w {folder})")


def check_run(cfg: Any) -> None:
    """Preflight of ``clipcrawl run`` (and ``run --check``): the dataset folder can be written."""
    check_output(str(cfg.dataset), "dataset")
