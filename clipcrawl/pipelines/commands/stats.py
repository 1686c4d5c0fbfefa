"""``clipcrawl stats DATASET [--html FILE] [--json]``: funnel, drops, distributions, samples of a dataset.

``DATASET`` is a local folder or an fsspec URL (``s3://bucket/prefix``). Files that cannot be read
(a shard Parquet that is not Parquet, a truncated tar) are named (a warning line, ``unreadable``
in ``--json``) and make the command exit 1; the report covers the other files.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from clipcrawl.pipelines.commands import STORAGE_OPTIONS_HELP, apply_storage_options

ORDER = 80


def stats(
    dataset: str = typer.Argument(
        ..., help="Dataset dir or URL (shards/, crawl/, runs/), or a download output dir."),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML report here."),
    as_json: bool = typer.Option(False, "--json", help="Print the aggregate as JSON instead of tables."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="CLIP threshold to mark; default: filters.clip.threshold of the newest config."
    ),
    samples: int = typer.Option(24, "--samples", min=0, help="Random kept samples in the HTML grid."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random sample picks."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="DuckDB threads (default: all cores)."),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
) -> None:
    """Show what a dataset is: funnel, drops by cause, domains, captions, sizes, scores, runs."""
    import time

    from clipcrawl.base.progress import log
    from clipcrawl.pipelines.report.aggregate import aggregate
    from clipcrawl.pipelines.report.layout import find_parts
    from clipcrawl.pipelines.report.samples import pick_samples

    apply_storage_options(storage_options, dataset)
    from clipcrawl.pipelines.lock import hold_dataset

    t0 = time.monotonic()
    with hold_dataset(dataset, shared=True):  # one consistent state, never a half-rewritten one
        parts = find_parts(dataset)
        agg = aggregate(parts, threshold=threshold, threads=threads)
        grids = pick_samples(parts, n_random=samples, seed=seed, images=html is not None)
    agg["unreadable"] = parts.unreadable  # image reads may have found more
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
    if parts.unreadable:
        if as_json:  # stdout is the JSON; name the files on stderr too
            for u in parts.unreadable:
                typer.echo(f"warning: unreadable: {u['file']}: {u['error']}", err=True)
        typer.echo(f"clipcrawl: {len(parts.unreadable)} file(s) could not be read; the report covers the others",
                   err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
