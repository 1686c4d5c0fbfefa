"""Issue 25 item 9: one flag name per concept across commands, old names kept as hidden aliases."""
from __future__ import annotations

import typer.main

from clipcrawl.cli import app


def _params(command: str) -> dict[str, object]:
    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    return {opt: p for p in cmd.params for opt in p.opts}


def test_robots_flag_has_one_visible_name_everywhere() -> None:
    group = typer.main.get_command(app)
    with_robots = [n for n in group.commands if "--ignore-robots" in _params(n) or "--no-robots" in _params(n)]
    assert set(with_robots) >= {"crawl", "download"}
    for name in with_robots:
        opts = _params(name)
        assert not opts["--ignore-robots"].hidden, name
        assert opts["--no-robots"].hidden, name  # old download name, still accepted


def _capture(monkeypatch, target: str, attr: str) -> list:
    seen: list = []

    class Stop(Exception):
        pass

    def fake(*args, **kwargs):
        seen.append(args)
        raise Stop

    monkeypatch.setattr(target + "." + attr, fake)
    return seen


def test_both_robots_names_turn_robots_off(monkeypatch, tmp_path) -> None:
    from typer.testing import CliRunner

    for flag in ("--ignore-robots", "--no-robots"):
        seen = _capture(monkeypatch, "clipcrawl.crawler.crawl", "crawl")
        CliRunner().invoke(app, ["crawl", "--seeds", "http://127.0.0.1/", "--out", str(tmp_path / "c"), flag])
        assert seen and seen[0][0].respect_robots is False, flag
        seen = _capture(monkeypatch, "clipcrawl.pipelines.passes.download", "download")
        urls = tmp_path / "urls.txt"
        urls.write_text("http://127.0.0.1/a.jpg\n")
        CliRunner().invoke(app, ["download", str(urls), "--out", str(tmp_path / "d"), flag])
        assert seen and seen[0][2].respect_robots is False, flag
    seen = _capture(monkeypatch, "clipcrawl.crawler.crawl", "crawl")
    CliRunner().invoke(app, ["crawl", "--seeds", "http://127.0.0.1/", "--out", str(tmp_path / "c")])
    assert seen[0][0].respect_robots is True
