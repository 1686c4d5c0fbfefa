"""Partitions as Ray actors (P = 2) decide as the single index.

Ray is started by the test itself on loopback (``_node_ip_address=127.0.0.2``, one CPU) and stopped
with ``ray.shutdown()``: unlike ``ray start`` / ``ray stop --force`` this touches no other Ray
processes on a shared machine, and its token authentication is set up by the driver that starts it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from clipcrawl.filters.dedup import partitioned

from .test_partitioned import _decide

pytestmark = [pytest.mark.slow, pytest.mark.network]
ray = pytest.importorskip("ray")
NODE_IP = "127.0.0.2"  # Ray swaps 127.0.0.1 for the machine's external address; .2 stays on loopback


def test_ray_partitions_equal_single_index(tmp_path, monkeypatch):
    single = _decide(tmp_path / "single", [1, 1, 1])
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # ray.init() of a local Ray would otherwise set RAY_AUTH_MODE=token (and PYTHONBREAKPOINT) in os.environ
    # for good, and later drivers (tests/pipelines/test_ray_*.py) would refuse their clusters' calls
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("PYTHONBREAKPOINT", os.environ.get("PYTHONBREAKPOINT", ""))  # restored (or removed) after
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit 107 bytes
    ray.init(num_cpus=1, include_dashboard=False, _node_ip_address=NODE_IP, log_to_driver=False, _temp_dir=temp)
    backends = []
    real = partitioned._backend
    monkeypatch.setattr(partitioned, "_backend", lambda parts, b: backends.append(real(parts, b)) or backends[-1])
    try:
        assert _decide(tmp_path / "ray", [2, 2, 2]) == single
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert backends and all(isinstance(b, partitioned._Ray) for b in backends)
