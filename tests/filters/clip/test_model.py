"""load_clip: the shipped tiny model, local checkpoints, offline failures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipcrawl.filters.clip.model import (
    ClipWeightsUnavailable,
    load_clip,
    resolve_precision,
    tiny_checkpoint,
)
from clipcrawl.schemas.config import ConfigError

TINY_DIR = tiny_checkpoint().parent


def test_tiny_asset_is_small_and_loads(tiny_fp32):
    total = sum(p.stat().st_size for p in TINY_DIR.iterdir() if p.is_file())
    assert total <= 5_000_000
    assert tiny_fp32.name == "clipcrawl-tiny" and tiny_fp32.device == "cpu" and tiny_fp32.embed_dim == 64
    assert tiny_fp32.tokenizer(["a red circle"]).shape == (1, 77)  # the standard SimpleTokenizer context


def test_precision_resolution():
    assert resolve_precision("auto", "cpu") == "fast"
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("fast", "cuda:1") == "fp16"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ConfigError):
        resolve_precision("int4", "cpu")


def test_local_checkpoint_with_config_beside_it(tmp_path, tiny_fp32):
    import torch

    shutil.copy(TINY_DIR / "clipcrawl-tiny.safetensors", tmp_path / "mine.safetensors")
    shutil.copy(TINY_DIR / "clipcrawl-tiny.json", tmp_path / "mine.json")
    clip = load_clip("mine", pretrained=str(tmp_path / "mine.safetensors"), device="cpu", precision="fp32")
    tokens = clip.tokenizer(["a blue star"])
    with torch.no_grad():
        a = clip.model.encode_text(tokens)
        b = tiny_fp32.model.encode_text(tokens)
    assert torch.allclose(a, b)
    assert clip.name == f"mine/{tmp_path / 'mine.safetensors'}"
    # a known architecture name + a checkpoint path
    known = load_clip("clipcrawl-tiny", pretrained=str(tmp_path / "mine.safetensors"), device="cpu", precision="fp32")
    assert known.embed_dim == 64


def test_bad_local_inputs_are_config_errors(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="no model config JSON"):
        load_clip("no-such-arch", pretrained=str(tmp_path / "w.safetensors"), device="cpu")
    with pytest.raises(ConfigError, match="not found"):
        load_clip("ViT-B-32", pretrained=str(tmp_path / "missing.bin"), device="cpu")
    with pytest.raises(ConfigError, match="unknown CLIP model"):
        load_clip("ViT-Z-99", pretrained="openai", device="cpu")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("mode", ["hf_offline", "no_network"])
def test_offline_fails_fast_with_one_line_hint(tmp_path, monkeypatch, mode):
    cache = tmp_path / "does-not-exist"
    if mode == "hf_offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # the hub endpoint refuses connections: no retries with back-off
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("CLIPCRAWL_OFFLINE", raising=False)
        for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
            monkeypatch.delenv(v, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    t0 = time.monotonic()
    for model, pretrained in (("ViT-B-32", "openai"), ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)):
        with pytest.raises(ClipWeightsUnavailable) as e:
            load_clip(model, pretrained, device="cpu", cache_dir=str(cache))
        msg = str(e.value)
        assert "\n" not in msg
        assert "--pretrained /path/to/open_clip_pytorch_model.bin" in msg and "--model tiny" in msg
    assert time.monotonic() - t0 < 30
    assert isinstance(e.value, ConfigError)  # the CLI maps it to exit code 2


def test_cli_exit_code_2_offline(tmp_path, shape_pairs):
    from clipcrawl.base.shardfiles import ShardRef
    from clipcrawl.pipelines.writer import write_shard
    from tests.filters.clip.conftest import make_table

    write_shard(ShardRef.of(str(tmp_path), 0), make_table([shape_pairs[0][0]], [shape_pairs[0][1]]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.run(
        [sys.executable, "-m", "clipcrawl", "score", str(tmp_path), "--model", "ViT-B-32", "--pretrained", "openai"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("clipcrawl: error:")]
    assert len(err) == 1 and "--model tiny" in err[0]


def test_local_folder_in_hf_layout(tmp_path):
    """A downloaded hf-hub snapshot (open_clip_config.json + weights) passed as --pretrained DIR."""
    import json

    cfg = json.loads((TINY_DIR / "clipcrawl-tiny.json").read_text())
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    shutil.copy(TINY_DIR / "clipcrawl-tiny.safetensors", tmp_path / "open_clip_model.safetensors")
    clip = load_clip("ViT-B-32", pretrained=str(tmp_path), device="cpu", precision="fp32")
    assert clip.embed_dim == 64 and clip.tokenizer(["a"]).shape == (1, 77)
