"""img2dataset mode's terminal output (issue 25 item 7): on a terminal, ``clipcrawl.img2dataset.download`` and
``clipcrawl img2dataset`` print img2dataset's per-shard ``worker``/``total`` lines, a bar and the final
per-status counts; without a terminal, or with ``progress=False`` / ``--progress=False``, nothing but errors.

The runs are real processes on a pseudo-terminal (``pty``) or on pipes, against the package's loopback server.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from .server import make_image

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
API = ("import sys; from clipcrawl import img2dataset; "
       "img2dataset.download(sys.argv[1], output_folder=sys.argv[2], number_sample_per_shard=3, image_size=16, "
       "thread_count=4, timeout=5, {extra})")
#: what would make rich draw on a pipe, or not draw on a terminal
RICH_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR", "COLUMNS", "LINES", "JUPYTER_COLUMNS")


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in RICH_ENV}
    e.update(TERM="xterm-256color", PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *([e["PYTHONPATH"]] if e.get("PYTHONPATH") else [])])
    return e


def in_pty(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` with stdin, stdout and stderr on a new pseudo-terminal; (exit code, what it showed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec, whatever happens
        try:
            os.execvpe(argv[0], argv, env())
        finally:
            os._exit(127)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(fd)
    if time.monotonic() >= deadline:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), ANSI.sub("", out.decode("utf-8", "replace")).replace("\r", "\n")


def on_pipes(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture()
def url_list(server, tmp_path):
    """7 rows: 5 images and 2 missing ones -> shards of 3, 3 and 1 rows."""
    for i in range(5):
        server.files[f"prog{i}.jpg"] = make_image(40 + i, 30, seed=i)
    urls = [server.url(f"/f/prog{i}.jpg") for i in range(5)] + [server.url("/status/404")] * 2
    path = tmp_path / "urls.txt"
    path.write_text("".join(u + "\n" for u in urls))
    return str(path)


def api(url_list: str, out, extra: str = "") -> list[str]:
    return [sys.executable, "-c", API.format(extra=extra), url_list, str(out)]


def cli(url_list: str, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "clipcrawl", "img2dataset", f"--url_list={url_list}", f"--output_folder={out}",
            "--number_sample_per_shard=3", "--image_size=16", "--thread_count=4", "--timeout=5", *extra]


def assert_img2dataset_output(shown: str) -> None:
    assert "input file 1 of 1: " in shown and "7 rows to download in 3 shards" in shown
    workers = re.findall(r"^worker  - success: ([\d.]+) - failed to download: ([\d.]+) - failed to resize: 0\.000 - "
                         r"images per sec: \d+ - count: (\d)$", shown, re.M)
    assert sorted(workers) == sorted([("1.000", "0.000", "3"), ("0.667", "0.333", "3"), ("0.000", "1.000", "1")])
    totals = re.findall(r"^total   - success: ([\d.]+) - .* - count: (\d)$", shown, re.M)
    assert totals[-1] == ("0.714", "7")  # img2dataset's running total, after the last shard
    assert re.search(r"^done: 7 samples downloaded in [\d.]+s \([\d.]+ images/s\), 3 shards written -> ", shown, re.M)
    assert re.search(r"^  success +5 \(71\.4%\)$", shown, re.M)
    assert re.search(r"^  failed_to_download +2 \(28\.6%\)$", shown, re.M)
    assert re.search(r"^ +2  HTTP Error 404: ", shown, re.M)  # the reasons, img2dataset's status_dict
    assert re.search(r"img2dataset .*7/7 samples, 3/3 shards", shown)  # the bar, at its end


def test_api_and_cli_show_img2dataset_progress_on_a_terminal(url_list, tmp_path):
    code, shown = in_pty(api(url_list, tmp_path / "api"))
    assert code == 0, shown
    assert_img2dataset_output(shown)
    assert sorted(p.name for p in (tmp_path / "api").glob("*_stats.json")) == [
        "00000_stats.json", "00001_stats.json", "00002_stats.json"]

    code, shown = in_pty(cli(url_list, tmp_path / "cli"))
    assert code == 0, shown
    assert_img2dataset_output(shown)


def test_quiet_without_a_terminal_or_with_progress_off(url_list, tmp_path):
    for argv in (api(url_list, tmp_path / "a"), cli(url_list, tmp_path / "b")):  # pipes: no terminal
        r = on_pipes(argv)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert len(list((tmp_path / "a").glob("*_stats.json"))) == len(list((tmp_path / "b").glob("*_stats.json"))) == 3

    for argv in (api(url_list, tmp_path / "c", "progress=False"), cli(url_list, tmp_path / "d", "--progress=False"),
                 cli(url_list, tmp_path / "e", "--noprogress")):  # a terminal, turned off
        code, shown = in_pty(argv)
        assert (code, shown.strip()) == (0, "")

    # errors still show: an unusable input exits 2 with its reason, and nothing else
    r = on_pipes(cli(str(tmp_path / "missing.txt"), tmp_path / "f"))
    assert r.returncode == 2 and r.stdout == ""
    assert "missing.txt" in r.stderr and "worker" not in r.stderr


def test_progress_true_prints_the_lines_to_a_pipe(url_list, tmp_path):
    r = on_pipes(api(url_list, tmp_path / "out", "progress=True"))
    assert r.returncode == 0 and r.stdout == ""  # stderr, as every progress output
    assert re.search(r"^total   - success: 0\.714 - .* - count: 7$", r.stderr, re.M)
    assert "done: 7 samples" in r.stderr and "\x1b[" not in r.stderr  # lines, no bar on a pipe


@pytest.mark.slow
def test_progress_lines_with_distributor_ray(url_list, tmp_path):
    """On Ray the shards' lines come from the driver (the reporter never travels to the actors)."""
    pytest.importorskip("ray")
    r = subprocess.run(api(url_list, tmp_path / "out", "progress=True, distributor='ray'"), capture_output=True,
                       text=True, timeout=600, env={**env(), "RAY_USAGE_STATS_ENABLED": "0"}, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"^total   - success: 0\.714 - .* - count: 7$", r.stderr, re.M), r.stderr[-3000:]
    assert "done: 7 samples" in r.stderr
