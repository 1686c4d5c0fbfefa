"""``clipcrawl export``: every format read back by its own library's reader (image decodes, caption and
columns equal to the source rows, count equal to the kept samples), on a dataset where ``dedup`` dropped
rows after the run, an empty dataset and a dataset with nulls in every optional column; DataComp uids as
DataComp's resharder looks them up; resume after a kill; exit 2 on unusable input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from clipcrawl.base.shardfiles import ShardRef, list_shards, read_images
from clipcrawl.cli import main
from clipcrawl.pipelines.export import STATE, export
from clipcrawl.pipelines.manifest import kept_samples, publish, refresh
from clipcrawl.pipelines.writer import rewrite_shard, write_shard
from clipcrawl.schemas import SAMPLES
from clipcrawl.schemas.export import DEFAULT_COLUMNS
from tests.interop.fixtures import make_dataset, row_exts, shard_table

REPO = Path(__file__).resolve().parents[3]
COLUMNS = [c for c in DEFAULT_COLUMNS if c != "uid"]


# ------------------------------------------------------------------ source datasets
def mark_duplicates(root: str, shard: int, n: int) -> list[str]:
    """What ``dedup`` does to a published shard: ``n`` success rows become ``duplicate`` through the writer
    score/dedup use (tar rewritten to the success rows, samples/ and manifest refreshed). Returns their keys."""
    ref = ShardRef.of(f"{root}/shards", shard)
    t = pa.parquet.read_table(ref.parquet)
    status, msgs = t.column("status").to_pylist(), t.column("error_message").to_pylist()
    rows = [i for i, s in enumerate(status) if s == "success"][:n]
    for i in rows:
        status[i], msgs[i] = "duplicate", "dedup: exact duplicate of another sample"
    t = t.set_column(t.schema.get_field_index("status"), "status", pa.array(status, pa.string()))
    t = t.set_column(t.schema.get_field_index("error_message"), "error_message", pa.array(msgs, pa.string()))
    rewrite_shard(ref, t)
    refresh(root)
    return [t.column("key")[i].as_py() for i in rows]


def dropped_after_run(root: str) -> list[str]:
    """Two shards (2/3 kept by the run), then two more rows of shard 0 dropped by dedup after it."""
    make_dataset(root, n_shards=2, n=12, png_every=4)
    return mark_duplicates(root, 0, 2)


def nulls_dataset(root: str) -> None:
    """Every optional (nullable) column is null in every other kept row, caption included."""
    t = shard_table(0, 12, png_every=4)
    required = {f.name for f in SAMPLES if not f.nullable} | {"image", "error_message"}
    ok = t.column("status").to_pylist()
    mask = pa.array([i % 2 == 1 and ok[i] == "success" for i in range(t.num_rows)])
    for name in t.column_names:
        if name in required:
            continue
        col = t.column(name)
        t = t.set_column(t.schema.get_field_index(name), name, pc.if_else(mask, pa.nulls(len(col), col.type), col))
    ref = ShardRef.of(f"{root}/shards", 0)
    write_shard(ref, t, image_exts=row_exts(t), start_time=0.0)
    publish(root, 1, [ref])


def empty_dataset(root: str) -> None:
    """A published shard where no row was kept."""
    t = shard_table(0, 6)
    t = t.set_column(t.schema.get_field_index("status"), "status", pa.array(["failed_to_download"] * 6))
    t = t.set_column(t.schema.get_field_index("error_message"), "error_message", pa.array(["download: 404"] * 6))
    t = t.set_column(t.schema.get_field_index("image"), "image", pa.nulls(6, pa.binary()))
    ref = ShardRef.of(f"{root}/shards", 0)
    write_shard(ref, t, image_exts=["jpg"] * 6, start_time=0.0)
    publish(root, 1, [ref])


def expected(root: str) -> dict[str, dict]:
    """key -> the source row (published kept samples) with ``image_sha``."""
    rows = kept_samples(root).to_pylist()
    images = {k: v for ref in list_shards(root) for k, v in read_images(ref).items()}
    out = {}
    for r in rows:
        r["image_sha"] = hashlib.sha256(images[r["key"]]).hexdigest()
        out[r["key"]] = r
    return out


def _same(got: dict, want: dict, columns=COLUMNS) -> None:
    for c in columns:
        g, w = got[c], want[c]
        if isinstance(w, float) and g is not None:
            assert abs(float(g) - w) < 1e-6, (c, g, w)
        else:
            assert g == w, (c, g, w)


SOURCES = {"dropped": dropped_after_run, "nulls": nulls_dataset, "empty": empty_dataset}


@pytest.fixture(params=list(SOURCES))
def source(request, tmp_path):
    root = str(tmp_path / "ds")
    SOURCES[request.param](root)
    return request.param, root


# ------------------------------------------------------------------ Hugging Face
def test_hf_load_dataset(source, tmp_path):
    datasets = pytest.importorskip("datasets")
    kind, root = source
    want = expected(root)
    out = str(tmp_path / "hf")
    assert main(["export", root, "--format", "hf", "--out", out]) == 0
    if not want:  # datasets builds no split of 0 rows ("corresponds to no data"); streaming reads it typed
        ds = datasets.load_dataset(out, split="train", streaming=True)
        assert list(ds) == [] and isinstance(ds.features["image"], datasets.Image)
        assert ds.features["width"] == datasets.Value("int32")
        return
    ds = datasets.load_dataset(out, split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == len(want)
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["width"] == datasets.Value("int32") and ds.features["clip_similarity"] == datasets.Value("float32")
    raw = ds.cast_column("image", datasets.Image(decode=False))
    for row, enc in zip(ds, raw):
        w = want[row["key"]]
        _same(row, w)
        assert row["image"].size == (64, 64)  # decoded PIL image
        assert hashlib.sha256(enc["image"]["bytes"]).hexdigest() == w["image_sha"]  # the tar's bytes, not re-encoded
    card = Path(out, "README.md").read_text()
    assert "configs:" in card and "data/train-*.parquet" in card


def test_dropped_rows_never_exported(tmp_path):
    root = str(tmp_path / "ds")
    dropped = dropped_after_run(root)
    res = export(root, "hf", str(tmp_path / "hf"))
    assert res.samples == 14  # 2 x 8 kept by the run, 2 dropped by dedup after it
    keys = set(pa.parquet.read_table(str(tmp_path / "hf" / "data")).column("key").to_pylist())
    assert keys == set(expected(root)) and not keys & set(dropped)


# ------------------------------------------------------------------ LitData
def test_litdata_streaming_dataset(source, tmp_path):
    litdata = pytest.importorskip("litdata")
    from PIL import Image

    kind, root = source
    want = expected(root)
    out = str(tmp_path / "lit")
    assert main(["export", root, "--format", "litdata", "--out", out]) == 0
    if not want:  # litdata cannot open a dataset of no chunks: the index says so
        assert json.loads(Path(out, "index.json").read_text())["chunks"] == []
        return
    ds = litdata.StreamingDataset(out)
    assert len(ds) == len(want)
    seen = set()
    for i in range(len(ds)):
        row = ds[i]
        w = want[row["key"]]
        _same(row, w)
        assert hashlib.sha256(row["image"]).hexdigest() == w["image_sha"]
        assert Image.open(io.BytesIO(row["image"])).size == (64, 64)
        seen.add(row["key"])
    assert seen == set(want)


# ------------------------------------------------------------------ MosaicML MDS
def _streaming_python() -> str | None:
    try:
        import streaming  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    cand = os.environ.get("CLIPCRAWL_MDS_PYTHON") or "/work/.venv-streaming/bin/python"
    return cand if os.path.exists(cand) else None


MDS_READER = r"""
import hashlib, io, json, sys
import numpy as np
from PIL import Image
from streaming import StreamingDataset
ds = StreamingDataset(local=sys.argv[1], shuffle=False, batch_size=1)
rows = []
for i in range(len(ds)):
    s = ds[i]
    img = s.pop("image")
    rows.append({**{k: (v.item() if isinstance(v, np.generic) else v) for k, v in s.items()},
                 "image_sha": hashlib.sha256(img).hexdigest(), "size": list(Image.open(io.BytesIO(img)).size)})
print(json.dumps(rows))
"""


@pytest.mark.slow
def test_mds_streaming_dataset(source, tmp_path):
    py = _streaming_python()
    if py is None:
        pytest.skip("mosaicml-streaming not importable and no /work/.venv-streaming (python -m venv "
                    "/work/.venv-streaming && /work/.venv-streaming/bin/pip install mosaicml-streaming)")
    kind, root = source
    want = expected(root)
    out = str(tmp_path / "mds")
    assert main(["export", root, "--format", "mds", "--out", out, "--mds-python", py]) == 0
    index = json.loads(Path(out, "index.json").read_text())
    assert sum(s["samples"] for s in index["shards"]) == len(want)
    if not want:
        return
    r = subprocess.run([py, "-c", MDS_READER, out], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(x["key"] for x in rows) == sorted(want)
    for row in rows:
        w = want[row["key"]]
        _same(row, w)
        assert row["image_sha"] == w["image_sha"] and row["size"] == [64, 64]
    enc = dict(zip(index["shards"][0]["column_names"], index["shards"][0]["column_encodings"]))
    assert enc["image"] == "bytes" and enc["key"] == "str"
    if kind == "dropped":  # no nulls: typed columns
        assert enc["width"] == "int32" and enc["clip_similarity"] == "float32"
    else:  # a column with nulls keeps them as json
        assert enc["width"] == "json"


# ------------------------------------------------------------------ DataComp uids
def _uid_dataset(root: str, with_uid: bool = True) -> list[str]:
    """Shards carrying DataComp's uid (32 hex chars) as a user column; returns the kept uids."""
    refs, kept = [], []
    for s in range(2):
        t = shard_table(s, 12)
        uids = [hashlib.md5(f"{s}-{i}".encode()).hexdigest() for i in range(t.num_rows)]
        uids[0] = "0" * 31 + str(s + 1)  # a uid with leading zeros
        if with_uid:
            t = t.append_column("uid", pa.array(uids, pa.string()))
        ref = ShardRef.of(f"{root}/shards", s)
        write_shard(ref, t, image_exts=row_exts(t), start_time=0.0)
        refs.append(ref)
        kept += [u for u, st in zip(uids, t.column("status").to_pylist()) if st == "success"]
    publish(root, 1, refs)
    return kept


def test_datacomp_uids_as_resharder_reads_them(tmp_path):
    root = str(tmp_path / "ds")
    kept = _uid_dataset(root)
    out = tmp_path / "subset.npy"
    assert main(["export", root, "--format", "datacomp-uids", "--out", str(out)]) == 0
    arr = np.load(out)
    u16 = np.dtype("u8,u8")  # DataComp resharder.py: load_subset asserts subset.dtype == u16
    assert arr.dtype == u16 and arr.shape == (len(kept),)
    ints = [(hi << 64) | lo for hi, lo in arr.tolist()]
    assert ints == sorted(int(u, 16) for u in kept)  # every kept uid, sorted for np.searchsorted
    for uid in kept:  # the resharder's own lookup of a sample's uid
        key = np.array([divmod(int(uid, 16), 2**64)], u16)[0]
        assert np.searchsorted(arr, key, "right") - np.searchsorted(arr, key, "left") == 1
    dropped = hashlib.md5(b"0-2").hexdigest()  # row 2 of shard 0 was not kept
    key = np.array([divmod(int(dropped, 16), 2**64)], u16)[0]
    assert np.searchsorted(arr, key, "right") == np.searchsorted(arr, key, "left")


def test_datacomp_without_uids_is_exit_2(tmp_path, capsys):
    root = str(tmp_path / "ds")
    _uid_dataset(root, with_uid=False)
    assert main(["export", root, "--format", "datacomp-uids", "--out", str(tmp_path / "u.npy")]) == 2
    assert "no 'uid' column" in capsys.readouterr().err
    assert not (tmp_path / "u.npy").exists()


# ------------------------------------------------------------------ resume, redo, refusals
def _parts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "data").glob("*.parquet"))}


def test_resume_after_kill_and_redo_after_dedup(tmp_path):
    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=3, n=12)
    clean = tmp_path / "clean"
    export(root, "hf", str(clean))
    out = tmp_path / "hf"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CLIPCRAWL_FAILPOINT": "export.sample:12"}  # in shard 1
    cmd = [sys.executable, "-m", "clipcrawl", "export", root, "--format", "hf", "--out", str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    assert list(_parts(out)) == ["train-00000.parquet"]  # shard 1's part was never published
    assert not (out / "README.md").exists()
    res = export(root, "hf", str(out))
    assert res.skipped_shards == 1 and res.samples == 24
    assert _parts(out) == _parts(clean) and not [p for p in out.rglob(".*tmp-*")]
    # dedup drops a row after the export: the rerun sees other inputs and redoes the export
    mark_duplicates(root, 2, 1)
    res = export(root, "hf", str(out))
    assert res.skipped_shards == 0 and res.samples == 23


def test_refusals_are_exit_2(tmp_path, capsys):
    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=1, n=6)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("x")
    assert main(["export", root, "--format", "hf", "--out", str(busy)]) == 2
    assert main(["export", root, "--format", "hf", "--out", str(tmp_path / "o"), "--columns", "nope"]) == 2
    assert main(["export", root, "--format", "nope", "--out", str(tmp_path / "o")]) == 2
    assert main(["export", str(tmp_path / "missing"), "--format", "hf", "--out", str(tmp_path / "o")]) == 2
    assert main(["export", root, "--format", "litdata", "--out", str(tmp_path / "o"), "--push-to-hub", "a/b"]) == 2
    assert not (tmp_path / "o").exists() and (busy / "mine.txt").read_text() == "x"
    err = capsys.readouterr().err
    assert "not empty" in err and "nope" in err


def test_columns_option(tmp_path):
    datasets = pytest.importorskip("datasets")
    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=1, n=6)
    out = str(tmp_path / "hf")
    assert main(["export", root, "--format", "hf", "--out", out, "--columns", "url,page_title,phash"]) == 0
    ds = datasets.load_dataset(out, split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert ds.column_names == ["image", "key", "caption", "url", "page_title", "phash"]
    assert ds.features["phash"] == datasets.Value("uint64")
    assert (Path(out) / STATE).exists()


# ------------------------------------------------------------------ --push-to-hub, up to the HTTP call
def test_push_to_hub_up_to_the_call(tmp_path, monkeypatch):
    """huggingface_hub's own upload runs; only its HTTP client is swapped (``set_client_factory``, its
    documented hook) for an httpx transport that answers like the Hub and records what was sent."""
    pytest.importorskip("datasets")
    hub = pytest.importorskip("huggingface_hub")
    import base64

    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils._http import default_client_factory

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    ep, sent = constants.ENDPOINT, {}

    def answer(req: httpx2.Request) -> httpx2.Response:
        p = req.url.path
        assert req.headers.get("authorization") in (None, "Bearer hf_test_token")
        if p == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if p == "/api/repos/create":
            sent["create"] = json.loads(req.content)
            return httpx2.Response(200, json={"url": f"{ep}/datasets/me/shapes", "name": "me/shapes"})
        if p.endswith("/preupload/main"):
            files = json.loads(req.content)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                         "shouldIgnore": False} for f in files]})
        if p.endswith("/commit/main"):
            lines = [json.loads(x) for x in req.content.decode().splitlines()]
            sent["files"] = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines
                             if x["key"] == "file"}
            return httpx2.Response(200, json={"commitUrl": f"{ep}/datasets/me/shapes/commit/{'a' * 40}",
                                              "commitOid": "a" * 40, "pullRequestUrl": None})
        return httpx2.Response(404, json={"error": f"not served here: {p}"})

    hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(answer)))
    try:
        root, out = str(tmp_path / "ds"), tmp_path / "hf"
        make_dataset(root, n_shards=2, n=6)
        res = export(root, "hf", str(out), push_to_hub="me/shapes", private=True)
    finally:
        hub.set_client_factory(default_client_factory)
    create = sent["create"]
    assert create["name"] == "shapes" and create["type"] == "dataset"
    assert create.get("private") is True or create.get("visibility") == "private"
    assert res.hub_commit.endswith("a" * 40)
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != STATE}
    assert sent["files"] == local and set(local) == {"README.md", "data/train-00000.parquet", "data/train-00001.parquet"}


@pytest.mark.parametrize("fmt", ["litdata", pytest.param("mds", marks=pytest.mark.slow)])
def test_killed_writer_export_reruns_clean(tmp_path, fmt):
    """A kill in the middle of a part leaves nothing published; the rerun's output equals an uninterrupted one."""
    args = []
    if fmt == "litdata":
        pytest.importorskip("litdata")
    else:
        py = _streaming_python()
        if py is None:
            pytest.skip("no mosaicml-streaming (see test_mds_streaming_dataset)")
        args = ["--mds-python", py]
    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=3, n=12)
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert main(["export", root, "--format", fmt, "--out", str(clean), *args]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "CLIPCRAWL_FAILPOINT": "export.sample:12"}
    cmd = [sys.executable, "-m", "clipcrawl", "export", root, "--format", fmt, "--out", str(out), *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    assert not (out / "index.json").exists()  # nothing readable as finished
    assert main(["export", root, "--format", fmt, "--out", str(out), *args]) == 0

    def files(d: Path) -> dict[str, bytes]:
        return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name not in (STATE, ".lock")}

    assert files(out) == files(clean)


def test_source_held_shared_and_out_exclusive(tmp_path, capsys):
    """While an export runs (held at its first sample): a writer of the source exits 3, a reader runs beside
    it, a second export into the same OUT exits 3; the held export then finishes."""
    import time

    root = str(tmp_path / "ds")
    make_dataset(root, n_shards=2, n=6)
    out, gate = tmp_path / "hf", tmp_path / "gate"
    gate.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "CLIPCRAWL_PAUSE": f"export.sample@{gate}"}
    p = subprocess.Popen([sys.executable, "-m", "clipcrawl", "export", root, "--format", "hf", "--out", str(out)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (gate / "paused").exists():
            assert p.poll() is None, p.communicate()[1][-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert main(["dedup", root, "--no-semantic"]) == 3
        assert main(["verify", root]) == 0
        assert main(["export", root, "--format", "hf", "--out", str(out)]) == 3
        assert "locked:" in capsys.readouterr().err
    finally:
        (gate / "resume").touch()
        _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    assert len(_parts(out)) == 2 and (out / "README.md").exists()


def test_plain_download_folder(tmp_path):
    """A ``clipcrawl download``/img2dataset output folder (shards at the top, no manifest) exports its finished shards."""
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "dl"
    for s in range(2):
        t = shard_table(s, 9)
        write_shard(ShardRef.of(str(folder), s), t, image_exts=row_exts(t), start_time=0.0)
    res = export(str(folder), "hf", str(tmp_path / "hf"))
    ds = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert res.samples == ds.num_rows == 12 and ds[0]["image"].size == (64, 64)
