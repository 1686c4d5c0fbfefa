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
