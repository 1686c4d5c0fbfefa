"""``clipcrawl cron CONFIG --schedule "0 3 * * *" [--install]``: the crontab line for a run.

What goes into the line is checked before anything is written (exit 2): no control or line-break
character in any part (a newline in a path would start a job of its own), a schedule of exactly five
cron fields or one of cron's ``@`` macros, and the line is read back the way cron reads it (``%``
rule) and, with ``--install``, parsed back with python-crontab: one job more, with the intended
schedule, command and marker, or nothing is written.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from clipcrawl.schemas.configbase import ConfigError

ORDER = 11
MARKER = "clipcrawl:"
#: cron's macros; @reboot is python-crontab's and cron's (croniter has no next time for it).
MACROS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight", "@reboot")
#: C0/C1 controls (newline, CR, tab, ...), DEL, and Unicode's line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FIELD = re.compile(r"[0-9A-Za-z*/,-]+")


def cron_escape(text: str) -> str:
    """cron turns an unescaped ``%`` of the command field into a newline (and feeds the rest to
    stdin), even inside shell quotes: a path like ``/data/50%/run.yaml`` must be written ``\\%``."""
    return text.replace("%", "\\%")


def as_cron_runs(field: str) -> tuple[str, str]:
    """What cron makes of a command field (cronie's do_command): the text before the first unescaped
    ``%`` with ``\\%`` turned into ``%``, and what follows it (fed to stdin)."""
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(field):
        if escaped:
            escaped = False
            if ch == "%":
                out[-1] = "%"
                continue
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            return "".join(out), field[i + 1:]
        out.append(ch)
    return "".join(out), ""


def check_text(what: str, text: str) -> str:
    """Refuse a part of the crontab line holding a control or line-break character (exit 2)."""
    m = _CONTROL.search(text)
    if m:
        raise ConfigError(f"{what} {text!r}: has the control character {m.group()!r}, which would end the crontab "
                          f"line and start a job of its own (fix: use a {what} without control characters)")
    return text


def validate_schedule(schedule: str) -> str:
    """The schedule, normalised (single spaces), or ConfigError: exactly five cron fields that croniter
    and python-crontab accept, or one of :data:`MACROS`."""
    from croniter import croniter
    from crontab import CronSlices

    check_text("--schedule", schedule)
    text = schedule.strip(" ")
    fix = "(fix: five fields 'minute hour day month weekday' such as '0 3 * * *', or @hourly, @daily, @weekly, " \
          "@monthly, @yearly, @annually, @midnight, @reboot)"
    if text.startswith("@"):
        if text not in MACROS:
            raise ConfigError(f"--schedule {schedule!r}: not a cron macro {fix}")
        ok = text == "@reboot" or croniter.is_valid(text)
    else:
        fields = [f for f in text.split(" ") if f]  # cron splits on blanks only, not on U+3000 &c.
        if len(fields) != 5 or not all(_FIELD.fullmatch(f) for f in fields):
            raise ConfigError(f"--schedule {schedule!r}: cron needs exactly 5 fields of digits, names and * / , - "
                              f"(got {len(fields)}; cron would run a 6th as the command) {fix}")
        text = " ".join(fields)
        ok = croniter.is_valid(text)
    if not ok or not CronSlices.is_valid(text):
        raise ConfigError(f"--schedule {schedule!r}: not a cron schedule {fix}")
    return text


@dataclass(frozen=True)
class CronEntry:
    """One crontab job: ``schedule`` (normalised), ``command`` (what the shell runs) and ``comment``
    (the marker ``clipcrawl:CONFIG`` that finds the job again), all unescaped."""

    schedule: str
    command: str
    comment: str

    @property
    def field(self) -> str:
        """The command field as written in the crontab (escaped for cron)."""
        return f"{cron_escape(self.command)} # {cron_escape(self.comment)}"

    @property
    def line(self) -> str:
        return f"{self.schedule} {self.field}"


def make_entry(config: Path, schedule: str, log_file: Path, executable: str | None = None) -> CronEntry:
    """A lock-safe crontab entry with absolute paths (cron runs with an empty PATH and $HOME as cwd).

    The run takes the dataset lock itself and exits 3 when another run holds it, so overlapping
    schedules never touch shared state; ``--log-format text`` keeps cron mail and the log readable.
    Raises ConfigError when a part would not reach cron unchanged.
    """
    exe = executable or os.path.abspath(sys.executable)  # not resolve(): a venv python is a symlink
    check_text("config path", str(config))
    check_text("--log-file", str(log_file))
    check_text("python executable", exe)
    cmd = (f"cd {shlex.quote(str(config.parent))} && {shlex.quote(exe)} -m clipcrawl --log-format text run "
           f"{shlex.quote(str(config))} >> {shlex.quote(str(log_file))} 2>&1")
    entry = CronEntry(validate_schedule(schedule), cmd, MARKER + str(config))
    if as_cron_runs(entry.field) != (f"{entry.command} # {entry.comment}", ""):
        raise ConfigError(f"{config}: cron would not run this command unchanged (a backslash before '%' in a "
                          f"path?) (fix: use paths without '\\%')")
    return entry


def crontab_line(config: Path, schedule: str, log_file: Path, executable: str | None = None) -> str:
    return make_entry(config, schedule, log_file, executable).line


def _same_schedule(job: Any, schedule: str) -> bool:
    from croniter import croniter

    got = job.slices.render()
    if schedule == "@reboot" or got == "@reboot":
        return got == schedule
    return croniter.is_valid(got) and croniter(got).expanded == croniter(schedule).expanded


def _is(job: Any, entry: CronEntry) -> bool:
    return (job.is_enabled() and job.is_valid() and job.command == entry.command and not job.stdin
            and _same_schedule(job, entry.schedule))


def check_rendered(text: str, entry: CronEntry, others: list[str]) -> None:
    """The crontab about to be written, parsed back: the jobs ``others`` unchanged and exactly one job
    more, ours, with its schedule, command and marker; cron reads its line as the intended command."""
    from crontab import CronTab

    jobs = list(CronTab(tab=text).crons)
    comment = cron_escape(entry.comment)
    ours = [j for j in jobs if j.comment == comment]
    ok = len(ours) == 1 and _is(ours[0], entry) and [j.render() for j in jobs if j is not ours[0]] == others
    if ok:
        line = ours[0].render()
        rend = ours[0].slices.render()
        ok = line.startswith(rend + " ") and as_cron_runs(line[len(rend) + 1:]) == (
            f"{entry.command} # {entry.comment}", "")
    if not ok:
        raise ConfigError(f"{entry.comment.removeprefix(MARKER)}: the crontab line does not parse back as one job "
                          f"with schedule {entry.schedule!r} and the run command (a '#' in a path?); nothing was "
                          f"written (fix: use paths without '#' or control characters)")


def install(entry: CronEntry, tabfile: Path | None = None) -> bool:
    """Add ``entry`` to the user's crontab (or to ``tabfile``), replacing an earlier entry for the
    same config. Returns False when the identical job was already there (idempotent)."""
    import shutil

    from crontab import CronTab

    if tabfile is None and shutil.which("crontab") is None:
        raise typer.BadParameter("no 'crontab' command on this machine: install cron (apt-get install cron) "
                                 "or use --crontab-file", param_hint="--install")
    cron = CronTab(tabfile=str(tabfile)) if tabfile is not None and tabfile.exists() else (
        CronTab(tab="") if tabfile is not None else CronTab(user=True))
    comment = cron_escape(entry.comment)
    existing = list(cron.find_comment(comment))
    if len(existing) == 1 and _is(existing[0], entry):
        return False
    others = [j.render() for j in cron.crons if not any(j is e for e in existing)]
    for job in existing:
        cron.remove(job)
    job = cron.new(command=entry.command, comment=comment)  # python-crontab escapes the command's %
    job.setall(entry.schedule)
    check_rendered(cron.render(), entry, others)
    if tabfile is not None:
        tabfile.parent.mkdir(parents=True, exist_ok=True)
        cron.write(str(tabfile))
    else:
        cron.write()
    return True


def cron_command(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    schedule: str = typer.Option("0 3 * * *", "--schedule", "-s", help="Cron schedule: 5 fields or @daily, "
                                 "@hourly, ... (@reboot too)."),
    log_file: Path = typer.Option(None, "--log-file", help="Where runs append their logs (default DATASET/logs/cron.log)."),
    do_install: bool = typer.Option(False, "--install", help="Add the line to your crontab (idempotent)."),
    crontab_file: Path = typer.Option(None, "--crontab-file", help="With --install: edit this crontab file "
                                      "instead of the user's crontab."),
) -> None:
    """Print (or --install) the crontab line that runs CONFIG on a schedule, lock-safe."""
    from clipcrawl.filters.presets import apply_preset
    from clipcrawl.pipelines.preflight import check_run
    from clipcrawl.schemas.config import load_config

    config = Path(check_text("config path", str(config.resolve())))
    validate_schedule(schedule)
    cfg = load_config(config)  # a broken config should fail now, not at 3 a.m.: as `run --check` does
    cfg = apply_preset(cfg, cfg.preset)
    check_run(cfg)
    if log_file is None:
        if "://" in cfg.dataset:
            log_file = Path.home() / ".cache" / "clipcrawl" / "cron.log"
        else:
            log_file = Path(cfg.dataset) / "logs" / "cron.log"
    log_file = log_file.resolve()
    entry = make_entry(config, schedule, log_file)  # every part checked before anything is written
    os.makedirs(log_file.parent, exist_ok=True)
    if do_install:
        changed = install(entry, crontab_file)
        typer.echo(("installed: " if changed else "already installed: ") + entry.line)
    else:
        typer.echo(entry.line)


def register(app: typer.Typer) -> None:
    app.command("cron")(cron_command)
