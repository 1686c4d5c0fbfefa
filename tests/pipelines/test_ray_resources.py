"""The Ray engine's resource, retry and lazy-job tests (tests/pipelines/ray_resources_cases.py), run in a
pytest process of their own (the clean driver a real command has).

Its environment gets :data:`~tests.pipelines.raycluster.DRIVER_ENV` explicitly: a ``ray.init()`` that
started a local Ray earlier in this pytest process used to leave ``RAY_AUTH_MODE=token`` in
``os.environ``, and a driver that imports Ray in token mode gets its actors on the (auth disabled) test
cluster "cancelled before they started" (see raycluster.py, "Token authentication").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .raycluster import DRIVER_ENV

pytestmark = [pytest.mark.slow, pytest.mark.network]
pytest.importorskip("ray")

CASES = Path(__file__).with_name("ray_resources_cases.py")
ROOT = Path(__file__).resolve().parents[2]


def test_ray_resource_and_retry_cases(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                        str(tmp_path / "t"), str(CASES)], capture_output=True, text=True, timeout=1200, cwd=ROOT,
                       env={**os.environ, **DRIVER_ENV, "PYTHONPATH": os.pathsep.join(
                           p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)})
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, tail
    if " passed" not in r.stdout:  # every case skipped (e.g. `ray start` failed): say why
        pytest.skip(tail[-500:])
