"""Issue 25 item 9e: a second ``clipcrawl demo`` into the same folder starts fresh (not 0 samples kept)."""
from __future__ import annotations

import json

import pytest

from clipcrawl.pipelines.commands.demo import DEMO_MARK, is_demo_folder, start_fresh
from clipcrawl.schemas.config import ConfigError


def test_new_or_empty_folder_is_marked(tmp_path):
    out = tmp_path / "d"
    assert start_fresh(out) is False and (out / DEMO_MARK).is_file()
    assert start_fresh(out) is False  # only the mark: nothing to remove


def test_previous_demo_is_emptied(tmp_path):
    out = tmp_path / "d"
    start_fresh(out)
    (out / "shards").mkdir()
    (out / "shards" / "00000.tar").write_bytes(b"x")
    (out / "manifest.json").write_text("{}")
    assert start_fresh(out) is True
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == [DEMO_MARK]


def test_old_demo_without_mark_is_recognised_by_its_config(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "config.yaml").write_text(json.dumps({"sources": {"crawl": {"seeds": ["http://127.0.0.1:4567/"]}},
                                                 "filters": {"clip": {"model": "tiny"}}}))
    assert is_demo_folder(out) and start_fresh(out) is True
    assert not (out / "config.yaml").exists()


def test_other_datasets_are_refused_untouched(tmp_path):
    out = tmp_path / "real"
    out.mkdir()
    (out / "config.yaml").write_text(json.dumps({"sources": {"crawl": {"seeds": ["https://example.org/"]}},
                                                 "filters": {"clip": {"model": "ViT-B-32"}}}))
    with pytest.raises(ConfigError, match="holds no previous demo"):
        start_fresh(out)
    assert (out / "config.yaml").exists()


@pytest.mark.slow
@pytest.mark.network
def test_second_demo_into_the_same_folder_keeps_the_same_samples(tmp_path):
    from clipcrawl.cli import main

    out = tmp_path / "d"
    kept = []
    for _ in range(2):
        assert main(["demo", "--out", str(out)]) == 0
        kept.append(json.loads((out / "manifest.json").read_text())["totals"]["samples_kept"])
    assert kept[0] > 0 and kept[1] == kept[0]
    assert [p.name for p in (out / "runs").iterdir()] == ["0001"]
