"""``clipcrawl run CONFIG.yaml``: the whole pipeline, incremental and resumable."""

from __future__ import annotations

from pathlib import Path

import typer

ORDER = 10


def run_command(
    config: Path = typer.Argument(..., help="Run config (YAML). See README 'Config'."),
    dry_run: bool = typer.Option(False, "--check", help="Validate the config and print it resolved; run nothing."),
) -> None:
    """Run the configured pipeline: collect -> download -> rules -> CLIP -> dedup -> write (incremental)."""
    from clipcrawl.base.progress import log, setup_logging
    from clipcrawl.pipelines.lock import LockedError
    from clipcrawl.schemas.config import dump_config, load_config

    cfg = load_config(config)  # ConfigError -> exit 2
    if dry_run:
        typer.echo(dump_config(cfg), nl=False)
        return
    if cfg.log_format != "auto":
        setup_logging(cfg.log_format)
    from clipcrawl.base.layout import DatasetLayout
    from clipcrawl.pipelines.run import run
    from clipcrawl.pipelines.summary import print_run_summary

    try:
        st = run(cfg)
    except LockedError as e:
        log.error("%s", e)
        raise typer.Exit(3) from None
    print_run_summary(DatasetLayout(cfg.dataset), st)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
