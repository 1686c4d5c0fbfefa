"""``clipcrawl cron``: the crontab line (absolute paths, logs, lock-safe) and idempotent install."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from clipcrawl.schemas.config import ConfigError


def _cron(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "clipcrawl", "cron", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _config(tmp_path):
    p = tmp_path / "conf" / "run.yaml"
    p.parent.mkdir()
    p.write_text(yaml.safe_dump({"dataset": "../ds", "sources": {"crawl": {"seeds": ["http://example.com/"]}}}))
    return p


def test_prints_an_absolute_lock_safe_line(tmp_path):
    cfg = _config(tmp_path)
    r = _cron("conf/run.yaml", "--schedule", "*/30 2-4 * * *", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    schedule, command = line[: len("*/30 2-4 * * *")], line[len("*/30 2-4 * * *"):]
    assert schedule == "*/30 2-4 * * *"
    assert f"cd {cfg.parent}" in command and f"run {cfg}" in command
    assert f"{os.path.abspath(sys.executable)} -m clipcrawl --log-format text" in command
    assert f">> {tmp_path / 'ds' / 'logs' / 'cron.log'} 2>&1" in command
    assert (tmp_path / "ds" / "logs").is_dir()


def test_install_is_idempotent(tmp_path):
    cfg = _config(tmp_path)
    tab = tmp_path / "crontab"
    tab.write_text("MAILTO=someone\n5 * * * * echo keep-me\n")
    r1 = _cron(str(cfg), "--install", "--crontab-file", str(tab))
    r2 = _cron(str(cfg), "--install", "--crontab-file", str(tab))
    assert r1.returncode == r2.returncode == 0 and r1.stdout.startswith("installed") and "already" in r2.stdout
    r3 = _cron(str(cfg), "--install", "--crontab-file", str(tab), "--schedule", "0 4 * * 1")
    text = tab.read_text()
    assert r3.returncode == 0 and text.count("clipcrawl:") == 1 and "0 4 * * 1" in text
    assert "echo keep-me" in text and "MAILTO=someone" in text


def test_bad_schedule_or_config_exit_2(tmp_path):
    cfg = _config(tmp_path)
    assert _cron(str(cfg), "--schedule", "every night").returncode == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: x\n")
    r = _cron(str(bad))
    assert r.returncode == 2 and "sources" in r.stderr


def test_percent_in_paths_is_escaped_for_cron(tmp_path):
    """cron reads an unescaped % in the command as a newline: the run would get a truncated path."""
    import re

    from clipcrawl.pipelines.commands.cron import crontab_line

    folder = tmp_path / "50%off"
    folder.mkdir()
    cfg = folder / "run.yaml"
    log = folder / "cron.log"
    line = crontab_line(cfg, "0 3 * * *", log, executable="/bin/echo")
    command = line.split(None, 5)[5]
    assert not re.search(r"(?<!\\)%", command), command
    # what cron does with the command field: the first unescaped % ends it, \% becomes %
    as_cron_runs_it = re.split(r"(?<!\\)%", command, maxsplit=1)[0].replace("\\%", "%")
    r = subprocess.run(["/bin/sh", "-c", as_cron_runs_it], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert log.read_text().strip() == f"-m clipcrawl --log-format text run {cfg}"


def test_percent_in_config_path_installs_and_is_idempotent(tmp_path):
    folder = tmp_path / "a%b"
    folder.mkdir()
    cfg = folder / "run.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": str(tmp_path / "ds"), "sources": {"crawl": {"seeds": ["http://example.com/"]}}}))
    tab = tmp_path / "crontab"
    r1 = _cron(str(cfg), "--install", "--crontab-file", str(tab))
    r2 = _cron(str(cfg), "--install", "--crontab-file", str(tab))
    assert r1.returncode == r2.returncode == 0 and "already" in r2.stdout, (r1.stderr, r2.stdout)
    text = tab.read_text()
    assert text.count("clipcrawl:") == 1 and "a\\%b" in text and "a%b" not in text.replace("a\\%b", "")


# ---------------------------------------------------------------- hostile input (issue 24)
# Every test edits a --crontab-file under tmp_path (or a fake `crontab` on PATH), never the user's crontab.

INJECTED = "* * * * * touch /tmp/clipcrawl-pwned #"


def _jobs(tab):
    from crontab import CronTab

    return [(j.slices.render(), j.command) for j in CronTab(tab=tab.read_text()).crons] if tab.exists() else []


def _install(tmp_path, cfg, *args):
    tab = tmp_path / "crontab"
    tab.write_text("5 * * * * echo keep-me\n")
    r = _cron(str(cfg), "--install", "--crontab-file", str(tab), *args)
    return r, tab


def test_newline_in_config_path_is_refused_before_anything_is_written(tmp_path):
    folder = tmp_path / f"x\n{INJECTED}"  # INJECTED has a /: nested folders
    folder.mkdir(parents=True)
    cfg = folder / "run.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": str(tmp_path / "ds"), "sources": {"crawl": {"seeds": ["http://e.com/"]}}}))
    r, tab = _install(tmp_path, cfg)
    assert r.returncode == 2 and "control character" in r.stderr and "config path" in r.stderr, r.stderr
    assert tab.read_text() == "5 * * * * echo keep-me\n"
    assert not (tmp_path / "ds").exists()  # not even the log folder
    assert _cron(str(cfg)).returncode == 2  # printing the line is refused too


def test_newline_in_log_file_is_refused(tmp_path):
    cfg = _config(tmp_path)
    r, tab = _install(tmp_path, cfg, "--log-file", str(tmp_path / f"log\n{INJECTED}"))
    assert r.returncode == 2 and "--log-file" in r.stderr, r.stderr
    assert tab.read_text() == "5 * * * * echo keep-me\n"
    assert _cron(str(cfg), "--log-file", str(tmp_path / f"log\r{INJECTED}")).returncode == 2


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"])
def test_every_control_or_line_separator_is_refused_in_every_part(tmp_path, char):
    from clipcrawl.pipelines.commands.cron import make_entry

    good = tmp_path / "run.yaml"
    bad = f"a{char}{INJECTED}"
    for kwargs in ({"config": tmp_path / bad / "run.yaml"}, {"log_file": tmp_path / bad},
                   {"executable": f"/usr/bin/{bad}"}, {"schedule": f"0 3 * * *{char}{INJECTED}"}):
        args = {"config": good, "schedule": "0 3 * * *", "log_file": tmp_path / "cron.log", **kwargs}
        with pytest.raises(ConfigError, match="control character"):
            make_entry(**args)
    assert make_entry(good, "0 3 * * *", tmp_path / "cron.log").line.count("\n") == 0


@pytest.mark.parametrize("schedule", ["0 3 * * * *", "0 3 * * * * *", "0 3 * * * touch /tmp/pwned", "0 3 * *",
                                      "@every_night", "@daily touch /tmp/pwned", "0 3 * * 5#3", "0 0 L * *",
                                      "0\u30003 * * *", "60 3 * * *", ""])
def test_schedule_must_be_five_cron_fields_or_a_macro(schedule):
    from clipcrawl.pipelines.commands.cron import validate_schedule

    with pytest.raises(ConfigError, match="--schedule"):
        validate_schedule(schedule)


def test_six_or_seven_field_schedules_are_not_installed(tmp_path):
    cfg = _config(tmp_path)
    for schedule in ("0 3 * * * *", "0 3 * * * * *", "0 3 * * * touch"):
        r, tab = _install(tmp_path, cfg, "--schedule", schedule)
        assert r.returncode == 2 and "exactly 5 fields" in r.stderr, (schedule, r.stderr)
        assert _jobs(tab) == [("5 * * * *", "echo keep-me")]


@pytest.mark.parametrize("macro", ["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight",
                                   "@reboot"])
def test_macros_install_and_parse_back(tmp_path, macro):
    from clipcrawl.pipelines.commands.cron import install, make_entry

    cfg = tmp_path / "run.yaml"
    entry = make_entry(cfg, macro, tmp_path / "cron.log", executable="/bin/python3")
    tab = tmp_path / "crontab"
    assert install(entry, tab) is True and install(entry, tab) is False
    jobs = _jobs(tab)
    assert len(jobs) == 1 and jobs[0][1] == entry.command
    assert tab.read_text().strip().startswith(macro if macro != "@annually" else ("@annually", "@yearly"))


def test_normal_schedules_parse_back_identically(tmp_path):
    from clipcrawl.pipelines.commands.cron import install, make_entry

    tab = tmp_path / "crontab"
    for i, schedule in enumerate(["*/30 2-4 * * *", "0 3 * * MON-FRI", "0 3 1 jan *", "0 3 * * 7", "0  3 * * *"]):
        entry = make_entry(tmp_path / f"c{i}.yaml", schedule, tmp_path / "cron.log", executable="/bin/python3")
        assert install(entry, tab)
    assert len(_jobs(tab)) == 5


def test_a_line_that_does_not_parse_back_is_not_written(tmp_path):
    """python-crontab reads ' #' as the start of the comment: such a path would install a job that the next
    --install can no longer find (and a different command than intended is recorded): exit 2, nothing written."""
    folder = tmp_path / "a #b"
    folder.mkdir()
    cfg = folder / "run.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": str(tmp_path / "ds"), "sources": {"crawl": {"seeds": ["http://e.com/"]}}}))
    r, tab = _install(tmp_path, cfg)
    assert r.returncode == 2 and "parse back" in r.stderr, r.stderr
    assert tab.read_text() == "5 * * * * echo keep-me\n"


def test_check_rendered_refuses_extra_or_changed_jobs(tmp_path):
    from clipcrawl.pipelines.commands.cron import check_rendered, make_entry

    entry = make_entry(tmp_path / "run.yaml", "0 3 * * *", tmp_path / "cron.log", executable="/bin/python3")
    keep = "5 * * * * echo keep-me"
    check_rendered(f"{keep}\n{entry.line}\n", entry, [keep])
    for text in (f"{keep}\n{entry.line}\n{INJECTED}\n", f"{entry.line}\n", f"{keep}\n{entry.line}\n{entry.line}\n",
                 f"{keep}\n{entry.line.replace('0 3', '0 4', 1)}\n", f"{keep}\n{entry.line.replace(' 2>&1', '')}\n",
                 f"{keep}\n# {entry.line}\n"):
        with pytest.raises(ConfigError, match="parse back"):
            check_rendered(text, entry, [keep])


def test_backslash_before_percent_is_refused(tmp_path):
    """cron has no way to write a literal backslash before %: the command would be cut there."""
    from clipcrawl.pipelines.commands.cron import make_entry

    with pytest.raises(ConfigError, match="unchanged"):
        make_entry(tmp_path / "a\\%b" / "run.yaml", "0 3 * * *", tmp_path / "cron.log")


def test_installed_percent_command_is_what_cron_runs(tmp_path):
    from clipcrawl.pipelines.commands.cron import as_cron_runs, install, make_entry

    cfg = tmp_path / "50%" / "run.yaml"
    entry = make_entry(cfg, "0 3 * * *", tmp_path / "cron.log", executable="/bin/python3")
    tab = tmp_path / "crontab"
    install(entry, tab)
    line = tab.read_text().strip()
    assert as_cron_runs(line.split(None, 5)[5]) == (f"{entry.command} # {entry.comment}", "")


def test_cron_validates_the_config_like_run_check(tmp_path):
    cfg = tmp_path / "run.yaml"
    (tmp_path / "ds").write_text("a file, not a folder")
    cfg.write_text(yaml.safe_dump({"dataset": "ds", "sources": {"crawl": {"seeds": ["http://e.com/"]}}}))
    r = _cron(str(cfg))
    assert r.returncode == 2 and "existing file" in r.stderr, r.stderr
    cfg.write_text(yaml.safe_dump({"dataset": "ds2", "sources": {"crawl": {"seeds": ["http://e.com/"]}},
                                   "download": {"image_size": 10**26}}))
    r = _cron(str(cfg))
    assert r.returncode == 2 and "download.image_size" in r.stderr, r.stderr


def test_user_crontab_is_not_touched_by_an_attack(tmp_path):
    """Without --crontab-file: a fake `crontab` program on PATH stands in for the user's crontab."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "crontab"
    fake.write_text('#!/bin/sh\necho "$@" >> "$FAKE_CRONTAB_LOG"\n'
                    'if [ "$1" = "-l" ]; then cat "$FAKE_CRONTAB"; exit 0; fi\ncp "$1" "$FAKE_CRONTAB"\n')
    fake.chmod(0o755)
    store, calls = tmp_path / "user.tab", tmp_path / "calls.log"
    store.write_text("5 * * * * echo keep-me\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CRONTAB": str(store),
           "FAKE_CRONTAB_LOG": str(calls)}
    cfg = _config(tmp_path)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "clipcrawl", "cron", str(cfg), "--install", *args],
                              capture_output=True, text=True, timeout=120, env=env)

    r = run("--schedule", "0 3 * * * *")
    assert r.returncode == 2 and not calls.exists(), r.stderr
    r = run("--log-file", str(tmp_path / f"l\u2028{INJECTED}"))
    assert r.returncode == 2 and not calls.exists(), r.stderr
    r = run("--schedule", "@daily")
    assert r.returncode == 0, r.stderr
    read, write = calls.read_text().splitlines()  # `crontab -l`, then `crontab FILE`
    assert read.split() == ["-l"] and len(write.split()) == 1
    jobs = _jobs(store)
    assert ("5 * * * *", "echo keep-me") in jobs and len(jobs) == 2


# ---------------------------------------------------------------- YAML bombs
def test_billion_laughs_config_exits_2(tmp_path):
    from tests.schemas.test_config_limits import billion_laughs

    cfg = tmp_path / "lol.yaml"
    cfg.write_text(billion_laughs(str(tmp_path / "ds")))
    r = _cron(str(cfg), "--install", "--crontab-file", str(tmp_path / "tab"))
    assert r.returncode == 2 and "billion laughs" in r.stderr, r.stderr
    assert not (tmp_path / "tab").exists()
