"""``clipcrawl serve`` as a command: serves on the port it prints, stops on SIGINT; exit 2 (one line,
nothing written) for a folder it cannot serve."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import call

pytestmark = [pytest.mark.slow, pytest.mark.network]
ROOT = Path(__file__).resolve().parents[3]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_serve_command(indexed_demo):
    proc = subprocess.Popen([sys.executable, "-m", "clipcrawl", "serve", str(indexed_demo), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        line = proc.stdout.readline()
        m = re.search(r"serving demo at (http://127\.0\.0\.1:\d+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert call(m.group(1) + "/indices-list")[2] == ["demo"]
        status, _, res = call(m.group(1) + "/knn-service", {"text": "a red circle", "modality": "image",
                                                             "indice_name": "demo", "num_images": 3})
        assert status == 200 and len(res) == 3
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode in (0, 130)


@pytest.mark.parametrize("make, message", [(False, "no such dataset folder"), (True, "no index/ and no embeddings/")])
def test_unusable_dataset_exits_2(tmp_path, make, message):
    ds = tmp_path / "ds"
    if make:
        ds.mkdir()
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "clipcrawl", "serve", str(ds), "--port", "0"],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert (sorted(os.listdir(ds)) == [] if make else not ds.exists()) and time.monotonic() - t < 120
