"""``clipcrawl crawl --seeds URL... --out DIR``: follow links from seed pages, collect image/alt-text pairs."""

from __future__ import annotations

from pathlib import Path

import typer

ORDER = 10


def crawl(
    more_seeds: list[str] | None = typer.Argument(None, metavar="[URL]...", help="More seed URLs."),
    seeds: list[str] | None = typer.Option(None, "--seeds", help="Seed URL(s): --seeds URL URL ... (or repeat)."),
    seeds_file: Path | None = typer.Option(None, "--seeds-file", help="File with one seed URL per line."),
    out: Path = typer.Option(..., "--out", help="Output dir: state/, pairs/NNNNN.parquet, pages/NNNNN.parquet."),
    max_pages: int = typer.Option(1000, "--max-pages", min=1, help="Pages processed in total, across reruns."),
    max_depth: int = typer.Option(3, "--max-depth", min=0, help="Link hops from a seed."),
    allowed_domains: list[str] | None = typer.Option(
        None, "--allowed-domains", help="Registered domains to stay in (repeat); default: the seeds'."),
    deny_pattern: list[str] | None = typer.Option(None, "--deny-pattern", help="Regex of URLs never fetched (repeat)."),
    concurrency: int = typer.Option(16, "--concurrency", min=1, help="Pages in flight in total."),
    per_host_concurrency: int = typer.Option(2, "--per-host-concurrency", min=1, help="Pages in flight per host."),
    delay: float = typer.Option(0.0, "--delay", min=0, help="Seconds between two requests to one host."),
    user_agent: str | None = typer.Option(None, "--user-agent", help="Default: clipcrawl/<version> (+project URL)."),
    allow_private_networks: bool = typer.Option(
        False, "--allow-private-networks", help="Allow private/loopback/link-local addresses (off: SSRF guard)."),
    allowed_networks: list[str] | None = typer.Option(
        None, "--allowed-networks", help="CIDR exempt from the address guard, e.g. 10.1.0.0/16 (repeat)."),
    revisit_after_days: float | None = typer.Option(
        None, "--revisit-after-days", help="Refetch pages fetched longer ago than this."),
    no_robots: bool = typer.Option(False, "--ignore-robots", help="Do not read robots.txt (your own sites only)."),
    no_robots_alias: bool = typer.Option(False, "--no-robots", hidden=True, help="Old name of --ignore-robots."),
    blocklist: list[Path] | None = typer.Option(
        None, "--blocklist", help="Blocklist file (repeat): URL and domain: lines are never requested."),
    no_tdmrep: bool = typer.Option(False, "--ignore-tdmrep", help="Do not honour TDMRep (your own sites only)."),
) -> None:
    """Crawl from seed pages, politely, and write (image URL, caption) pairs. Rerun to continue."""
    from clipcrawl.base.progress import log
    from clipcrawl.crawler.crawl import crawl as run_crawl
    from clipcrawl.crawler.frontier import FrontierLocked
    from clipcrawl.schemas.config import DEFAULT_USER_AGENT, CrawlConfig, parse_config

    seed_list = [s for arg in (seeds or []) + (more_seeds or []) for s in arg.split()]
    data = {
        "seeds": seed_list, "seeds_file": seeds_file, "max_pages": max_pages, "max_depth": max_depth,
        "allowed_domains": allowed_domains or None, "deny_patterns": deny_pattern or [],
        "concurrency": concurrency, "per_host_concurrency": per_host_concurrency, "delay": delay,
        "user_agent": user_agent or DEFAULT_USER_AGENT, "allow_private_networks": allow_private_networks,
        "allowed_networks": allowed_networks or [], "revisit_after_days": revisit_after_days,
        "respect_robots": not (no_robots or no_robots_alias), "respect_tdmrep": not no_tdmrep,
        "blocklists": [str(p) for p in blocklist or []],
    }
    cfg = parse_config(data, CrawlConfig, "command line")
    try:
        summary = run_crawl(cfg, out)
    except FrontierLocked as e:
        log.error("%s", e)
        raise typer.Exit(3) from None
    _print_summary(summary)
    if summary.pages and summary.errors == summary.pages and not summary.pairs_total:
        raise typer.Exit(1)


def _print_summary(s) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    console.print(f"[bold]crawl of {s.out_dir}[/bold]: {s.stop_reason}", highlight=False)
    t = Table(show_header=True)
    t.add_column("")
    t.add_column("this run", justify="right")
    t.add_column("total", justify="right")
    t.add_row("pages", str(s.pages), str(s.pages_total))
    t.add_row("pairs", str(s.pairs), str(s.pairs_total))
    t.add_row("errors", str(s.errors), "")
    for status, n in sorted(s.by_status.items(), key=lambda kv: -kv[1]):
        t.add_row(f"  {status}", str(n), "")
    t.add_row("still queued", "", str(s.queued))
    if s.deeper:
        t.add_row("beyond --max-depth", "", str(s.deeper))
    t.add_row("pages/s", f"{s.pages_per_s:.1f}", "")
    t.add_row("downloaded", f"{s.bytes / 1e6:.1f} MB", "")
    t.add_row("time", f"{s.elapsed:.1f} s (fetching {s.crawl_seconds:.1f} s)", "")
    if s.requeued or s.retried or s.revisits:
        t.add_row("queued again", f"{s.requeued} interrupted, {s.retried} retried, {s.revisits} revisits", "")
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("crawl")(crawl)
