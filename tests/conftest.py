"""Shared fixtures. Every server a test starts listens on an ephemeral loopback port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Real-world files written by others (HTML pages, WARC/WAT, images). Present on the team's
#: machines, absent in a user's clone: tests that use it skip cleanly.
TESTDATA = Path(os.environ.get("CLIPCRAWL_TESTDATA", REPO.parent / "shared" / "testdata"))


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"shared testdata not found at {TESTDATA} (set CLIPCRAWL_TESTDATA)")
    return TESTDATA
