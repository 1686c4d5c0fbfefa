"""``clipcrawl stats`` end to end: JSON, terminal tables in 80 columns, HTML, exit codes."""

from __future__ import annotations

import json

from rich.console import Console

from clipcrawl.cli import main
from clipcrawl.pipelines.report.terminal import render


def test_json_output(demo, demo_agg, capsys):
    assert main(["stats", str(demo.root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["funnel"] == demo_agg["funnel"]
    assert out["causes"] == demo_agg["causes"]
    assert set(out["samples"]) == {"random_kept", "lowest_kept", "top_dropped_clip"}
    assert all("image" not in c for cards in out["samples"].values() for c in cards)


def test_threshold_option_overrides(demo, capsys):
    assert main(["stats", str(demo.root), "--json", "--threshold", "0.3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threshold"] == 0.3 and out["threshold_source"] == "--threshold"
    assert out["clip"]["kept_below_threshold"] > 0


def test_terminal_fits_80_columns(demo_agg, demo_samples):
    console = Console(width=80, record=True, color_system=None, force_terminal=False)
    render(demo_agg, demo_samples, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for title in ("Funnel", "Drops and errors by cause", "Top domains", "Languages", "Scores", "Dedup",
                  "Throughput", "Runs", "Lowest-scoring kept", "Highest-scoring dropped by CLIP"):
        assert title in text
    assert "passed CLIP threshold" in text and "shapes-gallery.com" in text


def test_cli_terminal(demo, capsys):
    assert main(["stats", str(demo.root), "--samples", "6"]) == 0
    out = capsys.readouterr().out
    assert "Funnel" in out and "Highest-scoring dropped by CLIP" in out


def test_cli_html(demo_html):
    assert demo_html.count('class="card"') == 24 + 12 + 12


def test_bad_dir_exits_2(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["stats", str(tmp_path)]) == 2
    assert "no shards" in capsys.readouterr().err
