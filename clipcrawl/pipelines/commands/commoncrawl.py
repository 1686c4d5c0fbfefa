"""``clipcrawl commoncrawl PATH... --out DIR``: image/alt-text pairs from WARC, WAT and ARC files."""

from __future__ import annotations

from pathlib import Path

import typer

from clipcrawl.pipelines.commands import RAY_ADDRESS_HELP, make_pass_engine

ORDER = 15


def commoncrawl(
    paths: list[str] = typer.Argument(
        ..., help="WARC/WAT/ARC files (.gz or not), globs, or URLs (s3://commoncrawl/..., https://data.commoncrawl.org/...)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output dir: pairs/NNNNN.parquet and state/ (resumable)."),
    fmt: str = typer.Option("auto", "--format", help="auto (HTML responses and WAT records), warc, or wat."),
    max_records: int | None = typer.Option(None, "--max-records", min=1, help="Read at most N records per input."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Inputs read in parallel (default: CPU count)."),
    pairs_per_file: int = typer.Option(100_000, "--pairs-per-file", min=1, help="Rows per pairs Parquet file."),
    blocklist: list[Path] | None = typer.Option(
        None, "--blocklist", help="Blocklist file (repeat): pairs whose image or page URL/domain is listed are dropped."),
    engine: str = typer.Option("local", "--engine", help="local (a process pool on this machine, --workers) or ray "
                               "(every input file is a job on the actors of a Ray cluster)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Collect (image URL, alt text) pairs from Common Crawl files, as LAION/DataComp did.

    WAT files give IMG@/src links with alt text; WARC HTML responses go through the crawler's
    HTML extractor (srcset, lazy images, figcaptions, meta robots noai). The output dir is a valid
    input for `clipcrawl download`. Rerunning skips inputs already read.
    """
    from clipcrawl.crawler.commoncrawl import read_commoncrawl
    from clipcrawl.schemas.config import CommonCrawlConfig, ConfigError, parse_config

    if fmt not in ("auto", "warc", "wat"):
        raise ConfigError(f"--format {fmt!r}: use auto, warc or wat")
    cfg = parse_config(
        {"paths": list(paths), "format": fmt, "max_records": max_records, "workers": workers,
         "pairs_per_file": pairs_per_file, "blocklists": [str(p) for p in blocklist or []]},
        CommonCrawlConfig,
        "clipcrawl commoncrawl",
    )
    runner = None
    if engine not in ("local", "ray"):  # spark: no ids shared by its workers (file numbers); checked before any write
        raise ConfigError(f"--engine {engine!r}: commoncrawl runs on local or ray")
    if engine != "local":
        from clipcrawl.pipelines.passes.commoncrawl import engine_runner

        runner = engine_runner(make_pass_engine(engine, ray_address))
    summary = read_commoncrawl(cfg, out, runner=runner)
    _print_summary(summary, out)
    if not summary.ok:
        raise typer.Exit(1)


def _print_summary(s, out: Path) -> None:  # noqa: ANN001 - CommonCrawlSummary, imported lazily
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Common Crawl -> {out}", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("count", justify="right")
    rows = [
        ("inputs", s.inputs), ("already read (skipped)", s.already_done), ("read to the end", s.done),
        ("failed (partly read)", s.failed - s.unusable), ("unusable", s.unusable), ("records", s.records),
        ("pages examined", s.pages), ("pages with noai/noindex robots", s.noai_pages),
        ("truncated records (used)", s.truncated_records), ("pairs", s.pairs),
    ]
    for name, v in rows:
        t.add_row(name, f"{v:,}")
    for title, d in (("records skipped", s.skipped), ("images dropped", s.dropped)):
        for k, v in sorted(d.items(), key=lambda kv: -kv[1]):
            t.add_row(f"{title}: {k}", f"{v:,}")
    rate = s.records / s.seconds if s.seconds else 0.0
    t.add_row("seconds", f"{s.seconds:.1f} ({rate:,.0f} records/s)")
    console = Console()
    console.print(t)
    for e in s.errors:
        console.print(f"[red]failed[/red] {e}", markup=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("commoncrawl")(commoncrawl)
