"""``clipcrawl cron``: the crontab line (absolute paths, logs, lock-safe) and idempotent install."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml


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
