"""``clipcrawl cron CONFIG --schedule "0 3 * * *" [--install]``: the crontab line for a run."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import typer

ORDER = 11
MARKER = "clipcrawl:"


def cron_escape(text: str) -> str:
    """cron turns an unescaped ``%`` of the command field into a newline (and feeds the rest to
    stdin), even inside shell quotes: a path like ``/data/50%/run.yaml`` must be written ``\\%``."""
    return text.replace("%", "\\%")


def crontab_line(config: Path, schedule: str, log_file: Path, executable: str | None = None) -> str:
    """A lock-safe crontab entry with absolute paths (cron runs with an empty PATH and $HOME as cwd).

    The run takes the dataset lock itself and exits 3 when another run holds it, so overlapping
    schedules never touch shared state; ``--log-format text`` keeps cron mail and the log readable.
    """
    exe = executable or os.path.abspath(sys.executable)  # not resolve(): a venv python is a symlink
    cmd = (f"cd {shlex.quote(str(config.parent))} && {shlex.quote(exe)} -m clipcrawl --log-format text run "
           f"{shlex.quote(str(config))} >> {shlex.quote(str(log_file))} 2>&1")
    return f"{schedule} {cron_escape(cmd)} # {cron_escape(MARKER + str(config))}"


def validate_schedule(schedule: str) -> None:
    from croniter import croniter

    if not croniter.is_valid(schedule):
        raise typer.BadParameter(f"{schedule!r} is not a cron schedule (e.g. '0 3 * * *')", param_hint="--schedule")


def install(line: str, config: Path, tabfile: Path | None = None) -> bool:
    """Add ``line`` to the user's crontab (or to ``tabfile``), replacing an earlier entry for the
    same config. Returns False when the identical line was already there (idempotent)."""
    import shutil

    from crontab import CronTab

    if tabfile is None and shutil.which("crontab") is None:
        raise typer.BadParameter("no 'crontab' command on this machine: install cron (apt-get install cron) "
                                 "or use --crontab-file", param_hint="--install")
    if tabfile is not None and not tabfile.exists():
        tabfile.parent.mkdir(parents=True, exist_ok=True)
        tabfile.write_text("")
    cron = CronTab(tabfile=str(tabfile)) if tabfile is not None else CronTab(user=True)
    comment = cron_escape(f"{MARKER}{config}")
    existing = list(cron.find_comment(comment))
    command = line.split(" # ", 1)[0].split(None, 5)[5]
    schedule = " ".join(line.split(None, 5)[:5])
    if len(existing) == 1 and existing[0].command == command and str(existing[0].slices) == schedule:
        return False
    for job in existing:
        cron.remove(job)
    job = cron.new(command=command, comment=comment)
    job.setall(schedule)
    cron.write()
    return True


def cron_command(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    schedule: str = typer.Option("0 3 * * *", "--schedule", "-s", help="Cron schedule (5 fields)."),
    log_file: Path = typer.Option(None, "--log-file", help="Where runs append their logs (default DATASET/logs/cron.log)."),
    do_install: bool = typer.Option(False, "--install", help="Add the line to your crontab (idempotent)."),
    crontab_file: Path = typer.Option(None, "--crontab-file", help="With --install: edit this crontab file "
                                      "instead of the user's crontab."),
) -> None:
    """Print (or --install) the crontab line that runs CONFIG on a schedule, lock-safe."""
    from clipcrawl.schemas.config import load_config

    config = config.resolve()
    cfg = load_config(config)  # a broken config should fail now, not at 3 a.m.
    validate_schedule(schedule)
    if log_file is None:
        if "://" in cfg.dataset:
            log_file = Path.home() / ".cache" / "clipcrawl" / "cron.log"
        else:
            log_file = Path(cfg.dataset) / "logs" / "cron.log"
    log_file = log_file.resolve()
    os.makedirs(log_file.parent, exist_ok=True)
    line = crontab_line(config, schedule, log_file)
    if do_install:
        changed = install(line, config, crontab_file)
        typer.echo(("installed: " if changed else "already installed: ") + line)
    else:
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("cron")(cron_command)
