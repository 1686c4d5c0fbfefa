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


def test_url_list_download_reports_caption_languages(tmp_path, capsys):
    """Issue 25 #8c: a URL-list download has no page language; stats reports the captions' language."""
    import csv

    from tests.pipelines.download.server import HostileServer, make_image

    server = HostileServer()
    server.start()
    try:
        captions = ("a red circle on a white background", "a photo of a dog running on the beach",
                    "the old stone bridge over the river at sunset")
        for i in range(3):
            server.files[f"p{i}.jpg"] = make_image(48 + i, 40, "JPEG", seed=i)
        inp = tmp_path / "list.csv"
        with open(inp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["url", "caption"])
            w.writeheader()
            w.writerows({"url": server.url(f"/f/p{i}.jpg"), "caption": c} for i, c in enumerate(captions))
        out = tmp_path / "out"
        assert main(["download", str(inp), "--out", str(out), "--allow-private-networks", "--image-size", "32",
                     "--workers", "1"]) == 0
    finally:
        server.stop()
    capsys.readouterr()
    assert main(["stats", str(out), "--json"]) == 0
    langs = {r["language"]: r["count"] for r in json.loads(capsys.readouterr().out)["languages"]["top"]}
    assert langs == {"en": 3}


def test_stats_of_a_crawl_folder(tmp_path, capsys):
    """Issue 25 #8d: ``stats crawl/`` on ``clipcrawl crawl --out crawl/`` reports its pages, pairs and errors."""
    from tests.crawler.site import LoopbackServer, rules_site

    out = tmp_path / "crawl"
    with LoopbackServer(rules_site) as srv:
        assert main(["crawl", "--seeds", srv.base + "/", "--out", str(out), "--max-depth", "2",
                     "--max-pages", "50", "--allowed-networks", "127.0.0.0/8"]) == 0
    capsys.readouterr()
    assert main(["stats", str(out), "--json"]) == 0
    agg = json.loads(capsys.readouterr().out)
    assert agg["pages"]["total"] > 0 and agg["pages"]["by_status"].get("ok", 0) > 0
    assert agg["pairs"]["total"] > 0
    assert [s["step"] for s in agg["funnel"]] == ["pages crawled", "pairs found"]
    assert main(["stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pages crawled" in text and "no crawl output" not in text
