"""``clipcrawl stats DIR [--html FILE] [--json]``: funnel, drops, distributions, samples of a dataset."""

from __future__ import annotations

from pathlib import Path

import typer

ORDER = 80


def stats(
    dataset: Path = typer.Argument(..., help="Dataset dir (shards/, crawl/, runs/) or a download output dir."),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML report here."),
    as_json: bool = typer.Option(False, "--json", help="Print the aggregate as JSON instead of tables."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="CLIP threshold to mark; default: filters.clip.threshold of the newest config."
    ),
    samples: int = typer.Option(24, "--samples", min=0, help="Random kept samples in the HTML grid."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random sample picks."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="DuckDB threads (default: all cores)."),
) -> None:
    """Show what a dataset is: funnel, drops by cause, domains, captions, sizes, scores, runs."""
    import json
    import time

    from clipcrawl.base.progress import log
    from clipcrawl.pipelines.report.aggregate import aggregate
    from clipcrawl.pipelines.report.layout import find_parts
    from clipcrawl.pipelines.report.samples import pick_samples

    t0 = time.monotonic()
    parts = find_parts(dataset)
    agg = aggregate(parts, threshold=threshold, threads=threads)
    grids = pick_samples(parts, n_random=samples, seed=seed, images=html is not None)
    log.debug("aggregated %s in %.2fs", dataset, time.monotonic() - t0)
    if html is not None:
        from clipcrawl.pipelines.report.html import render as render_html

        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(agg, grids), encoding="utf-8")
        log.info("wrote %s (%.1f KB) in %.2fs", html, html.stat().st_size / 1024, time.monotonic() - t0)
    if as_json:
        for cards in grids.values():
            for c in cards:
                c.pop("image", None)
        typer.echo(json.dumps({**agg, "samples": grids}, indent=2, ensure_ascii=False, default=str))
    else:
        from clipcrawl.pipelines.report.terminal import render as render_terminal

        render_terminal(agg, grids)


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
