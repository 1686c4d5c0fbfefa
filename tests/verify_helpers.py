"""``assert_verified(path)``: call it after a test writes a dataset or a shard folder, so every test
that writes one also proves ``clipcrawl verify`` finds it clean."""

from __future__ import annotations

import os

import pytest


def assert_verified(path: str | os.PathLike[str], allow: tuple[str, ...] = ()) -> None:
    """Fail the test with the findings unless ``clipcrawl verify`` finds ``path`` clean (run in-process).
    ``allow``: finding codes the test expects (a state it set up on purpose)."""
    from clipcrawl.pipelines.verify import verify

    rep = verify(os.fspath(path), workers=2)
    errors = [f for f in rep.errors if f.code not in allow]
    if errors:
        pytest.fail(f"clipcrawl verify {path}: {len(errors)} finding(s):\n" +
                    "\n".join(f"  {f.code}  {f.path}: {f.message}" for f in errors), pytrace=False)
