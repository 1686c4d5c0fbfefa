"""Shared fixtures. Every server a test starts listens on an ephemeral loopback port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Real-world files written by others (HTML pages, WARC/WAT, images). Present on the team's
#: machines, absent in a user's clone: tests that use it skip cleanly.
TESTDATA = Path(os.environ.get("CLIPCRAWL_TESTDATA", REPO.parent / "shared" / "testdata"))


#: Test files that start a Ray or Spark cluster (or a local Ray): under pytest-xdist they run one after the other on
#: one worker (``--dist loadgroup``), as two clusters on one machine would race for Ray's worker ports and the
#: process-wide Ray connection.
CLUSTER_FILES = ("tests/pipelines/test_ray_", "tests/filters/dedup/test_partitioned_ray.py",
                 "tests/pipelines/download/test_spark.py",
                 "tests/pipelines/download/test_img2dataset_compat.py",
                 "tests/pipelines/download/test_img2dataset_progress.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(CLUSTER_FILES):
            item.add_marker(pytest.mark.xdist_group("cluster"))


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"shared testdata not found at {TESTDATA} (set CLIPCRAWL_TESTDATA)")
    return TESTDATA


# ---------------------------------------------------------------------------------------------------------
# Every test that leaves a dataset (or a shard folder) in its tmp_path has it checked by `clipcrawl verify`
# when it passes: the dataset a command writes must keep every invariant. Tests that corrupt a dataset on
# purpose say so with @pytest.mark.unverified("why").


def _clipcrawl_datasets(root: Path) -> list[Path]:
    """Datasets (a clipcrawl manifest.json) and plain shard folders (NNNNN_stats.json) under ``root``."""
    import json

    datasets: set[Path] = set()
    for m in root.rglob("manifest.json"):
        try:
            if json.loads(m.read_text(encoding="utf-8")).get("format") == "clipcrawl-dataset":
                datasets.add(m.parent)
        except (OSError, ValueError, AttributeError):
            continue
    folders: set[Path] = set()
    for s in root.rglob("*_stats.json"):
        d = s.parent
        if not s.name[:-len("_stats.json")].isdigit() or d.name == "dropped":
            continue
        if d.name == "shards" and d.parent in datasets:
            continue
        if not any(d.glob("[0-9]*.parquet")):  # img2dataset's output_format dummy: stats only, nothing to check
            continue
        folders.add(d.parent if d.name == "shards" else d)
    found = sorted(datasets | folders)
    return [d for d in found if not any(o != d and o in d.parents for o in found if o in datasets)]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call":
        item._clipcrawl_passed = rep.passed
    return rep


@pytest.fixture(autouse=True)
def _datasets_verify_clean(request):
    check = "tmp_path" in request.fixturenames and not request.node.get_closest_marker("unverified")
    tmp = request.getfixturevalue("tmp_path") if check else None  # set up first, so it is still there after
    yield
    if tmp is None or not getattr(request.node, "_clipcrawl_passed", False):
        return
    from tests.verify_helpers import assert_verified

    for folder in _clipcrawl_datasets(tmp):
        assert_verified(folder)
