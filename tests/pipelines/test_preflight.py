"""Output paths that cannot hold a dataset: exit 2 with the fix, before anything starts (issue 14, bug 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clipcrawl.pipelines.preflight import check_output
from clipcrawl.schemas.config import ConfigError

needs_non_root = pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any permission bits")


def _clipcrawl(*args):
    return subprocess.run([sys.executable, "-m", "clipcrawl", *args], capture_output=True, text=True, timeout=120)


def _config(tmp_path, dataset) -> str:
    (tmp_path / "urls.csv").write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a thing\n")
    cfg = {"dataset": str(dataset), "sources": {"urls": {"path": str(tmp_path / "urls.csv")}},
           "filters": {"clip": {"enabled": False}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "run.yaml")


def test_dataset_path_is_a_file(tmp_path):
    f = tmp_path / "ds"
    f.write_text("not a folder")
    with pytest.raises(ConfigError, match="existing file.*fix: "):
        check_output(str(f))
    with pytest.raises(ConfigError, match="is a file.*fix: "):
        check_output(str(f / "sub"))


@pytest.mark.parametrize("check", [True, False])
def test_run_and_run_check_exit_2_when_dataset_is_a_file(tmp_path, check):
    """Was a raw FileExistsError (exit 1), and run --check said nothing."""
    (tmp_path / "ds").write_text("x")
    r = _clipcrawl("run", _config(tmp_path, tmp_path / "ds"), *(["--check"] if check else []))
    assert r.returncode == 2, r.stderr
    assert "existing file" in r.stderr and "fix:" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "ds").read_text() == "x"


def test_download_exits_2_when_out_is_a_file(tmp_path):
    (tmp_path / "urls.csv").write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a thing\n")
    (tmp_path / "out").write_text("x")
    r = _clipcrawl("download", str(tmp_path / "urls.csv"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    assert "output path is an existing file" in r.stderr and "fix:" in r.stderr


@needs_non_root
def test_unwritable_output_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="cannot write.*fix: "):
            check_output(str(ro / "ds"))
        r = _clipcrawl("run", _config(tmp_path, ro / "ds"), "--check")
        assert r.returncode == 2 and "cannot write" in r.stderr, r.stderr
    finally:
        ro.chmod(0o700)


def test_unwritable_folder_found_by_the_probe(tmp_path, monkeypatch):
    """As root (where permission bits do not stop writes) the probe's refusal is simulated."""
    import clipcrawl.pipelines.preflight as pf

    real_open = os.open

    def refuse(path, *a, **kw):
        if ".clipcrawl-write-probe-" in str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **kw)

    monkeypatch.setattr(pf.os, "open", refuse)
    with pytest.raises(ConfigError, match=r"cannot write the dataset here \(Permission denied\).*chmod u\+w"):
        check_output(str(tmp_path / "ds"))


def test_writable_and_remote_paths_pass(tmp_path):
    check_output(str(tmp_path / "new" / "ds"))
    (tmp_path / "ds" / "shards").mkdir(parents=True)
    check_output(str(tmp_path / "ds"))
    check_output("s3://bucket/prefix")
    assert not list(tmp_path.rglob(".clipcrawl-write-probe-*"))


def _config_with(tmp_path, **extra) -> str:
    path = _config(tmp_path, tmp_path / "ds")
    cfg = yaml.safe_load(Path(path).read_text())
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("check", [True, False])
def test_missing_exclude_near_folder_exits_2_before_anything(tmp_path, check):
    """Issue 25: a dedup.exclude_near folder that does not exist passed --check, and the run failed after
    crawling and downloading. Now: exit 2 naming the field and the path, instantly, nothing written."""
    missing = tmp_path / "no-eval-set"
    cfg = _config_with(tmp_path, dedup={"exclude_near": [str(missing)]})
    r = _clipcrawl("run", cfg, *(["--check"] if check else []))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "dedup.exclude_near" in r.stderr and str(missing) in r.stderr
    assert not (tmp_path / "ds").exists()


def test_missing_checkpoint_path_exits_2(tmp_path):
    ckpt = tmp_path / "weights" / "model.safetensors"
    cfg = _config_with(tmp_path, filters={"clip": {"enabled": True, "model": "ViT-B-32", "pretrained": str(ckpt)}})
    r = _clipcrawl("run", cfg, "--check")
    assert r.returncode == 2 and "filters.clip.pretrained" in r.stderr and str(ckpt) in r.stderr


def test_config_paths_found_and_tags_left_alone(tmp_path):
    from clipcrawl.pipelines.preflight import check_paths, config_paths
    from clipcrawl.schemas.config import load_config

    (tmp_path / "eval").mkdir()
    cfg = load_config(_config_with(tmp_path, dedup={"exclude_near": [str(tmp_path / "eval"), "s3://b/eval"]},
                                   filters={"clip": {"enabled": True, "pretrained": "openai"}}))
    check_paths(cfg)  # everything there; the remote folder and the pretrained tag are not probed
    fields = {f for f, _ in config_paths(cfg)}
    assert fields == {"sources.urls.path", "dedup.exclude_near"}
