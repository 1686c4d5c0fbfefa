"""The per-format writers of ``clipcrawl export``: each takes one input shard's kept samples at a time.

A sink has ``check()`` (before the first write: exit 2 when it cannot work), ``done(ref)`` (the shard's
part is complete in OUT: skipped on a rerun), ``write(ref, samples)`` (one part, published atomically) and
``finish()`` (the top-level index or card, written last). Every file goes through fsspec
(:func:`atomic_open` / :func:`put_folder`), so OUT may be a local folder or any fsspec URL (``s3://...``).
The formats: :mod:`.hf`, :mod:`.mds`, :mod:`.lit` (LitData); :mod:`.datacomp` writes one file, no parts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.storage import atomic_open
from clipcrawl.pipelines.export.source import Sample, SourcePlan


def put_folder(local: str, remote: str, last: str) -> None:
    """Copy the files of a local folder to ``remote`` (any fsspec URL), the file named ``last`` last."""
    names = sorted(os.listdir(local), key=lambda n: (n == last, n))
    for name in names:
        with open(os.path.join(local, name), "rb") as f, atomic_open(f"{remote}/{name}") as g:
            shutil.copyfileobj(f, g, 1 << 20)


class Sink:
    name = ""

    def __init__(self, out: str, plan: SourcePlan) -> None:
        self.out, self.plan = out.rstrip("/"), plan
        self.written = 0

    def check(self) -> None:
        """Exit 2 (ConfigError) when this format cannot be written; nothing is touched yet."""

    def begin(self) -> None:
        """OUT is held and prepared: start writing."""

    def done(self, ref: ShardRef) -> bool:
        return False

    def write(self, ref: ShardRef, samples: Iterator[Sample]) -> int:
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        """Called when the export stops early (an error, Ctrl-C): drop what is not published."""

    def clear(self) -> None:
        """Remove what an earlier export of this format left in OUT (its inputs changed)."""
