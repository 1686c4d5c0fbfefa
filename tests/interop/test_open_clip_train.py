"""open_clip's own training entry point (``open_clip_train.main``) trains on our shards: the proof
that the output is ready for contrastive pretraining. CPU, the shipped tiny CLIP, a few steps."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clipcrawl.pipelines.passes.reshard import reshard

from .conftest import REPO
from .fixtures import make_dataset

TINY_DIR = Path(os.environ.get("CLIPCRAWL_TINY_CLIP", REPO / "clipcrawl" / "assets" / "tiny_clip"))

#: Registers the tiny model's config, reports what it will read, then runs open_clip_train.
WRAPPER = """
import json, sys
import open_clip, webdataset
open_clip.add_model_config(sys.argv[1])
from open_clip_train.data import get_dataset_size
from open_clip_train.main import main
argv = sys.argv[2:]
size, shards = get_dataset_size(argv[argv.index("--train-data") + 1])
print("CHECK " + json.dumps({"webdataset": webdataset.__version__, "size": size, "shards": shards}), flush=True)
sys.exit(main(argv) or 0)
"""


def _tiny_clip() -> tuple[Path, Path | None]:
    configs = sorted(p for p in TINY_DIR.glob("*.json") if "vision_cfg" in p.read_text(encoding="utf-8"))
    if not configs:
        pytest.skip(f"tiny CLIP config (an open_clip model JSON) not found in {TINY_DIR}")
    cfg = configs[0]
    weights = next((p for ext in (".safetensors", ".pt", ".bin") if (p := cfg.with_suffix(ext)).is_file()), None)
    return cfg, weights


@pytest.mark.slow
def test_open_clip_train_runs_on_our_shards(tmp_path, wds_overlay):
    pytest.importorskip("open_clip_train")
    cfg, weights = _tiny_clip()
    ds = str(tmp_path / "ds")
    make_dataset(ds, n_shards=3, n=15)  # 30 kept samples
    out = reshard(ds, samples_per_shard=10, shuffle=True, seed=0)  # what a user trains on
    tars = f"{out.out}/shards/{{00000..00002}}.tar"
    argv = ["--dataset-type", "webdataset", "--train-data", tars, "--train-num-samples", "24",
            "--model", cfg.stem, "--batch-size", "8", "--epochs", "1", "--workers", "1", "--device", "cpu",
            "--precision", "fp32", "--lr", "1e-3", "--warmup", "1", "--seed", "0", "--logs", str(tmp_path / "logs"),
            "--name", "smoke", "--save-frequency", "0", "--zeroshot-frequency", "0", "--val-frequency", "0",
            "--report-to", "", "--log-every-n-steps", "1"]
    if weights is not None:
        argv += ["--pretrained", str(weights)]
    env = {**os.environ, "PYTHONPATH": str(wds_overlay), "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    r = subprocess.run([sys.executable, "-c", WRAPPER, str(cfg), *argv], env=env, capture_output=True, text=True,
                       timeout=240, cwd=tmp_path)
    output = r.stdout + r.stderr
    assert r.returncode == 0, output[-4000:]
    check = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("CHECK "))[6:])
    assert check == {"webdataset": "0.2.86", "size": 30, "shards": 3}  # our sizes.json, the overlay's webdataset
    log = (tmp_path / "logs" / "smoke" / "out.log").read_text()
    losses = [float(x) for x in re.findall(r"\bLoss: ([-+0-9.einf]+) ", log)]
    assert len(losses) == 3, log[-3000:]  # 24 samples / batch 8
    assert all(math.isfinite(v) and v > 0 for v in losses), losses
