"""Ctrl-C (issue 14, bug 5): one line on stderr, exit 130, no worker tracebacks, nothing partial.

Progress logging is off (``-q``): what counts is what the interrupt prints. A terminal sends SIGINT to the whole foreground process group, workers included: the command
runs in its own session here and the signal goes to its group, as a Ctrl-C would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time

import pyarrow.parquet as pq
import pytest
import yaml

from tests.pipelines.download.server import HostileServer

pytestmark = [pytest.mark.network]


@pytest.fixture(scope="module")
def server():
    s = HostileServer().start()
    yield s
    s.stop()


def _url_list(server: HostileServer, path) -> None:
    rows = "".join(f"{server.url('/ok.jpg' if i % 3 else '/slow.jpg')}?i={i},a thing {i}\n" for i in range(400))
    path.write_text("url,caption\n" + rows)


def _interrupt(cmd: list[str], server: HostileServer, min_requests: int = 20) -> tuple[int, str]:
    before = len(server.requests)
    p = subprocess.Popen([sys.executable, "-m", "clipcrawl", "--log-format", "text", "-q", *cmd], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 90
    while len(server.requests) - before < min_requests and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()[1][-2000:]
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=60)
    gone = time.time() + 10  # the workers were shut down by the parent, not left behind
    while time.time() < gone:
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("worker processes outlived the interrupted command")
    return p.returncode, err


def _assert_one_line(rc: int, err: str) -> None:
    assert rc == 130, err[-3000:]
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err and len(lines) <= 2, err[-3000:]
    assert lines[-1] == "clipcrawl: interrupted; rerun the same command to resume"


def _assert_nothing_partial(folder) -> None:
    for p in folder.rglob("*"):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix == ".tar":
            with tarfile.open(p) as t:
                t.getmembers()
        elif p.suffix == ".parquet":
            pq.read_table(p)


def test_ctrl_c_during_download(server, tmp_path):
    _url_list(server, tmp_path / "urls.csv")
    out = tmp_path / "out"
    rc, err = _interrupt(["download", str(tmp_path / "urls.csv"), "--out", str(out), "--allow-private-networks",
                          "--workers", "2", "--samples-per-shard", "20", "--timeout", "30"], server)
    _assert_one_line(rc, err)
    _assert_nothing_partial(out)


@pytest.mark.slow
def test_ctrl_c_during_run(server, tmp_path):
    _url_list(server, tmp_path / "urls.csv")
    ds = tmp_path / "ds"
    cfg = {"dataset": str(ds), "sources": {"urls": {"path": str(tmp_path / "urls.csv")}},
           "download": {"allowed_networks": ["127.0.0.0/8"], "workers": 2, "timeout": 30, "image_size": 64},
           "filters": {"clip": {"model": "tiny", "pretrained": None, "precision": "fp32"}},
           "output": {"samples_per_shard": 20}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    rc, err = _interrupt(["run", str(tmp_path / "run.yaml")], server, min_requests=30)
    _assert_one_line(rc, err)
    _assert_nothing_partial(ds)


def test_ctrl_c_during_crawl(tmp_path):
    from clipcrawl.pipelines.demo.site import DemoSite, DemoSiteContent

    with DemoSite(DemoSiteContent(seed=1, n_images=48)) as site:
        p = subprocess.Popen([sys.executable, "-m", "clipcrawl", "-q", "crawl", site.url, "--out", str(tmp_path / "c"),
                              "--allowed-networks", "127.0.0.0/8", "--delay", "0.5", "--per-host-concurrency", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.time() + 60  # interrupt once the crawl has written its first state
        while not list((tmp_path / "c").rglob("*")) and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        time.sleep(1.0)
        assert p.poll() is None, p.communicate()[1][-2000:]
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    _assert_one_line(p.returncode, err)
    _assert_nothing_partial(tmp_path / "c")
