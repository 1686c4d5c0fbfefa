"""Fixtures of the report tests: the demo dataset (written once per session) and its report."""

from __future__ import annotations

import pytest

from tests.pipelines.report.fixtures import DemoDataset, make_demo_dataset


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> DemoDataset:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "dataset")


@pytest.fixture(scope="session")
def demo_agg(demo) -> dict:
    from clipcrawl.pipelines.report.aggregate import aggregate
    from clipcrawl.pipelines.report.layout import find_parts

    return aggregate(find_parts(demo.root))


@pytest.fixture(scope="session")
def demo_samples(demo) -> dict:
    from clipcrawl.pipelines.report.layout import find_parts
    from clipcrawl.pipelines.report.samples import pick_samples

    return pick_samples(find_parts(demo.root))


@pytest.fixture(scope="session")
def demo_html(demo, tmp_path_factory) -> str:
    """The page ``clipcrawl stats DEMO --html FILE`` writes (rendered once per session)."""
    from clipcrawl.cli import main

    out = tmp_path_factory.mktemp("html") / "sub" / "report.html"
    assert main(["-q", "stats", str(demo.root), "--html", str(out), "--json"]) == 0
    return out.read_text(encoding="utf-8")
