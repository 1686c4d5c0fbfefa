"""``clipcrawl demo``: crawl a bundled website and build a small dataset, offline, in about a minute."""

from __future__ import annotations

from pathlib import Path

import typer

ORDER = 0


def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Dataset folder to write."),
    serve: bool = typer.Option(False, "--serve", help="Keep the demo site running after the run (Ctrl-C stops)."),
) -> None:
    """Crawl a bundled sample website on 127.0.0.1 and build a dataset from it (offline, ~1 minute)."""
    from rich.console import Console

    from clipcrawl.base.layout import DatasetLayout
    from clipcrawl.pipelines.demo import demo_config
    from clipcrawl.pipelines.demo.site import DemoSite
    from clipcrawl.pipelines.run import run
    from clipcrawl.pipelines.summary import print_run_summary

    console = Console()
    out = out.resolve()
    with DemoSite() as site:
        console.print(f"demo site: {site.url}  ->  dataset: {out}")
        cfg = demo_config(site.url, str(out))
        st = run(cfg)
        print_run_summary(DatasetLayout(str(out)), st, console,
                          extra={"report": f"clipcrawl stats {out} --html {out}/report.html"})
        if serve:
            console.print(f"serving {site.url} (Ctrl-C to stop)")
            from clipcrawl.pipelines.commands import wait_for_ctrl_c

            wait_for_ctrl_c()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
