"""torch's OpenMP threads must not spin on cores shared with decoders: OMP_WAIT_POLICY=PASSIVE is set before
torch loads (the CLI, and load_clip for library callers and Ray actors), never over the user's own choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("open_clip")

CODE = """
import os, sys
from clipcrawl.filters.clip.model import load_clip
load_clip("tiny", None, "cpu", "fp32")
print(os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_load_clip_sets_a_passive_openmp_policy_unless_chosen(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == expected


def test_too_late_once_torch_is_loaded():
    code = ("import os, torch\nfrom clipcrawl.base.workers import passive_openmp\npassive_openmp()\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == "None"  # libgomp has read its environment already: no pretence
