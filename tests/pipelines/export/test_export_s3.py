"""``clipcrawl export`` to and from a real S3-compatible server (SeaweedFS on loopback): the files equal a
local export's, byte for byte (every format writes through fsspec)."""

from __future__ import annotations

import os

import pytest

from clipcrawl.base.storage import fs_and_path
from clipcrawl.pipelines.export import STATE, export
from tests.interop.conftest import s3_server, s3_url  # noqa: F401 - the session's SeaweedFS fixtures
from tests.interop.fixtures import make_dataset

from .test_export import _streaming_python, _uid_dataset

pytestmark = pytest.mark.network


def _files(root: str) -> dict[str, bytes]:
    fs, path = fs_and_path(root)
    fs.invalidate_cache()
    return {f[len(path) + 1:]: fs.cat_file(f) for f in fs.find(path)
            if not f.endswith((STATE, "/.lock")) and "/.lock" not in f}


@pytest.mark.parametrize("fmt", ["hf", "litdata", pytest.param("mds", marks=pytest.mark.slow), "datacomp-uids"])
def test_s3_export_equals_local(tmp_path, s3_url, fmt):  # noqa: F811
    if fmt == "hf":
        pytest.importorskip("datasets")
    if fmt == "litdata":
        pytest.importorskip("litdata")
    py = None
    if fmt == "mds":
        py = _streaming_python()
        if py is None:
            pytest.skip("no mosaicml-streaming (see test_mds_streaming_dataset)")
    src = f"{s3_url}/ds"
    if fmt == "datacomp-uids":  # a single .npy file
        _uid_dataset(src)
        a = export(src, fmt, str(tmp_path / "u.npy"))
        b = export(src, fmt, f"{s3_url}/u.npy")
        assert a.samples == b.samples == 16
        assert _files(s3_url)["u.npy"] == (tmp_path / "u.npy").read_bytes()
        return
    make_dataset(src, n_shards=2, n=9)
    local = str(tmp_path / "local")
    a = export(src, fmt, local, mds_python=py)
    b = export(src, fmt, f"{s3_url}/out", mds_python=py)
    assert a.samples == b.samples == 12
    got, want = _files(f"{s3_url}/out"), _files(local)
    assert sorted(got) == sorted(want) and got == want
    again = export(src, fmt, f"{s3_url}/out", mds_python=py)  # a rerun: parts already there are kept
    assert again.samples == 12
    if fmt in ("hf", "mds"):
        assert again.skipped_shards == 2
    assert os.listdir(tmp_path / "local")
