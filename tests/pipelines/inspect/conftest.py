"""Fixtures of the inspect tests: the demo dataset (crawled, scored by the shipped tiny CLIP with
embeddings saved, written) built once per session, and a copy of it to index."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    from clipcrawl.pipelines.demo import demo_config
    from clipcrawl.pipelines.demo.site import DemoSite
    from clipcrawl.pipelines.run import run

    out = tmp_path_factory.mktemp("inspect") / "demo"
    with DemoSite() as site:
        st = run(demo_config(site.url, str(out)))
    assert st.state == "done"
    assert (out / "embeddings" / "img_emb").is_dir()
    return out


@pytest.fixture(scope="session")
def indexed_demo(demo_dataset, tmp_path_factory):
    """A copy of the demo dataset with ``clipcrawl index`` run on it."""
    from clipcrawl.cli import main

    out = tmp_path_factory.mktemp("indexed") / "demo"
    shutil.copytree(demo_dataset, out)
    assert main(["-q", "index", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def searcher(indexed_demo):
    from clipcrawl.pipelines.inspect.search import Searcher

    return Searcher(indexed_demo)
