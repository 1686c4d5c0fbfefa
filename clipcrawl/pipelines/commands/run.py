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
    from clipcrawl.pipelines.preflight import check_run
    check_run(cfg)  # dataset path is a file / not writable -> exit 2, before anything starts (--check too)
    if dry_run:
        typer.echo(dump_config(cfg), nl=False)
        return
    if cfg.log_format != "auto":
        setup_logging(cfg.log_format)
    from clipcrawl.pipelines.run import Dataset, run
    from clipcrawl.pipelines.summary import print_run_summary

    try:
        st = run(cfg)
    except LockedError as e:
        log.error("%s", e)
        raise typer.Exit(3) from None
    print_run_summary(Dataset(cfg.dataset), st)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
