"""The same ``download()`` call on the real img2dataset 1.47 and on clipcrawl.img2dataset: same keys, statuses,
Parquet columns, sizes, hashes, stats and tar/file names. Runs when img2dataset has its own venv
(``CLIPCRAWL_IMG2DATASET_BIN``: its python, bin/ folder or venv; default /work/.venv-img2dataset), else skips.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from clipcrawl import img2dataset

from .server import make_image
from .test_img2dataset_compat import IMAGES, read_out, rows_of, write_input


@pytest.fixture(scope="module")
def urls(server):
    for name, (w, h, fmt) in IMAGES.items():
        server.files[name] = make_image(w, h, fmt, seed=w)
    return [server.url(f"/f/{n}") for n in [*IMAGES, "missing.jpg"]]


# ------------------------------------------------------------------ against the real img2dataset
def _real_python() -> str | None:
    env = os.environ.get("CLIPCRAWL_IMG2DATASET_BIN")
    cands = [env] if env else []
    cands.append("/work/.venv-img2dataset/bin/python")
    for c in cands:
        p = Path(c)
        if p.is_dir():
            p = p / "bin" / "python"
        if p.name.startswith("img2dataset"):
            p = p.parent / "python"
        if p.exists():
            return str(p)
    return None


REAL_RUNNER = "import json, sys\nfrom img2dataset import download\nif __name__ == '__main__':\n" \
              "    download(**json.loads(sys.argv[1]))\n"

REAL_CASES = {
    "webdataset-captions": dict(input_format="csv", output_format="webdataset", caption_col="text",
                                save_additional_columns=["extra"]),
    "parquet-md5": dict(input_format="parquet", output_format="parquet", compute_hash="md5"),
    "files-txt": dict(input_format="txt", output_format="files", number_sample_per_shard=2),
    "skip-reencode": dict(input_format="jsonl", output_format="parquet", resize_mode="keep_ratio", image_size=64,
                          resize_only_if_bigger=True, skip_reencode=True, caption_col="text"),
    "center-crop-dummy": dict(input_format="tsv", output_format="dummy", resize_mode="center_crop"),
}


@pytest.mark.unverified("its tmp_path also holds the real img2dataset output")
@pytest.mark.slow
@pytest.mark.parametrize("case", list(REAL_CASES))
def test_same_as_real_img2dataset(tmp_path, urls, server, case):
    real = _real_python()
    if real is None:
        pytest.skip("no img2dataset venv (set CLIPCRAWL_IMG2DATASET_BIN or create /work/.venv-img2dataset)")
    kw = dict(REAL_CASES[case])
    rows = rows_of(urls + [urls[0]])  # a repeated row
    src = write_input(tmp_path / "in", kw["input_format"], rows)
    args = dict(kw, url_list=str(src), image_size=kw.get("image_size", 32), thread_count=4, processes_count=1, timeout=2,
                number_sample_per_shard=kw.get("number_sample_per_shard", 10))
    runner = tmp_path / "real.py"
    runner.write_text(REAL_RUNNER)
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    proc = subprocess.run([real, str(runner), json.dumps({**args, "output_folder": str(theirs)})],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    img2dataset.download(**{**args, "output_folder": str(ours)})
    a, b = read_out(theirs), read_out(ours)
    assert b["columns"] == a["columns"]
    assert sorted(b["rows"]) == sorted(a["rows"])
    for k in a["rows"]:
        ra, rb = a["rows"][k], b["rows"][k]
        assert (rb["status"], rb["url"], rb.get("caption")) == (ra["status"], ra["url"], ra.get("caption")), k
        assert (rb["width"], rb["height"], rb["original_width"], rb["original_height"]) == \
            (ra["width"], ra["height"], ra["original_width"], ra["original_height"]), k
        for h in ("md5", "sha256"):
            assert rb.get(h) == ra.get(h), (k, h)
        if ra.get("jpg") is not None:  # the bytes as fetched (skip_reencode) in both, or re-encoded in both
            fetched = set(server.files.values())
            assert (rb["jpg"] in fetched) == (ra["jpg"] in fetched), k
            if ra["jpg"] in fetched:
                assert rb["jpg"] == ra["jpg"], k
    assert sorted(b["stats"]) == sorted(a["stats"])
    for name, sa in a["stats"].items():
        sb = b["stats"][name]
        assert set(sb) == set(sa)
        assert {f: sb[f] for f in ("count", "successes", "failed_to_download", "failed_to_resize", "status_dict")} \
            == {f: sa[f] for f in ("count", "successes", "failed_to_download", "failed_to_resize", "status_dict")}
    assert b["tars"] == a["tars"]
    assert b["files"] == a["files"]
