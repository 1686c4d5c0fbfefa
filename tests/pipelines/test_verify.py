"""``clipcrawl verify``: clean datasets verify clean; every corruption is found and names its file."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.cli import main
from clipcrawl.pipelines.verify import verify
from clipcrawl.pipelines.writer import write_shard
from tests.interop.fixtures import make_dataset, shard_table
from tests.verify_helpers import assert_verified


# ------------------------------------------------------------------ datasets
@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """``clipcrawl demo --out DIR`` once per session (~20 s); tests copy it before changing it."""
    out = tmp_path_factory.mktemp("verify-demo") / "ds"
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "demo", "--out", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture()
def ds(tmp_path) -> Path:
    """A published dataset: 3 shards of 12 rows (8 success, jpg and png members, every drop status)."""
    root = tmp_path / "ds"
    make_dataset(str(root), n_shards=3, n=12, png_every=4)
    assert_verified(root)
    return root


def _tar_rewrite(tar: Path, keep=lambda name: True, add: dict[str, bytes] | None = None, edit=None) -> None:
    """Rewrite ``tar`` keeping members ``keep(name)``, ``edit(name, data) -> data``, appending ``add``."""
    with tarfile.open(tar) as t:
        members = [(m.name, t.extractfile(m).read()) for m in t.getmembers() if keep(m.name)]
    members += list((add or {}).items())
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            data = edit(name, data) if edit else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def _parquet_edit(path: Path, fn) -> None:
    t = pq.read_table(path).to_pylist()
    fn(t)
    pq.write_table(pa.Table.from_pylist(t, schema=pq.read_schema(path)), path)


def _first_key(tar: Path) -> str:
    with tarfile.open(tar) as t:
        return t.getnames()[0].split(".")[0]


def _dropped_row(rows: list[dict]) -> dict:
    return next(r for r in rows if r["status"] != "success")


def _codes(root: Path) -> dict[str, list[str]]:
    """error code -> paths it names."""
    out: dict[str, list[str]] = {}
    for f in verify(str(root)).errors:
        out.setdefault(f.code, []).append(f.path)
    return out


# ------------------------------------------------------------------ clean
@pytest.mark.slow
@pytest.mark.network
def test_demo_dataset_is_clean(demo_dataset, capsys):
    rep = verify(str(demo_dataset))
    assert rep.clean, rep.findings
    assert rep.kind == "dataset" and rep.shards >= 2 and rep.samples >= 25 and rep.rows > rep.samples
    assert not rep.findings  # not even a note
    assert main(["verify", str(demo_dataset)]) == 0
    assert "clean" in capsys.readouterr().out


@pytest.mark.unverified("corrupts the dataset to test verify")
@pytest.mark.slow
@pytest.mark.network
def test_demo_corruptions_found(demo_dataset, tmp_path):
    """Embeddings and the tar of a real crawl: an embedding row removed, a caption changed in a tar."""
    d = tmp_path / "d"
    shutil.copytree(demo_dataset, d)
    meta = d / "embeddings" / "metadata" / "metadata_00000.parquet"
    pq.write_table(pq.read_table(meta).slice(1), meta)
    tar = d / "shards" / "00001.tar"
    key = _first_key(tar)
    _tar_rewrite(tar, edit=lambda n, b: b"another caption" if n == f"{key}.txt" else b)
    rep = verify(str(d))
    emb = [f for f in rep.errors if f.code == "embeddings-mismatch"]
    assert [f.path for f in emb] == [str(d / "embeddings")] and "_00000" in emb[0].message
    codes = _codes(d)
    codes.pop("embeddings-mismatch")
    assert codes.pop("sample-metadata") == [str(tar)]
    assert codes.pop("tar-unreadable", None) is None and not codes


@pytest.mark.unverified("corrupts the dataset to test verify")
def test_plain_download_folder_is_clean(tmp_path):
    """A real ``clipcrawl download`` output (NNNNN.* at the top, img2dataset's layout), every format."""
    from tests.pipelines.download.server import HostileServer, make_image

    with_server = HostileServer()
    with_server.start()
    try:
        for i in range(5):
            with_server.files[f"p{i}.jpg"] = make_image(48 + i, 40, "JPEG", seed=i)
        rows = [{"url": with_server.url(f"/f/p{i}.jpg"), "caption": f"picture {i}"} for i in range(5)]
        rows += [{"url": with_server.url("/status/404"), "caption": "gone"}, dict(rows[0])]
        inp = tmp_path / "list.csv"
        with open(inp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["url", "caption"])
            w.writeheader()
            w.writerows(rows)
        for fmt in ("webdataset", "files", "parquet"):
            out = tmp_path / fmt
            assert main(["--log-format", "text", "download", str(inp), "--out", str(out), "--allow-private-networks",
                         "--image-size", "32", "--workers", "1", "--samples-per-shard", "4",
                         "--output-format", fmt]) == 0
            rep = verify(str(out))
            assert rep.kind == "plain" and rep.shards == 2 and rep.rows == 7 and rep.samples == 5
            assert rep.clean, rep.findings
    finally:
        with_server.stop()
    # a files-format sample losing its image is found there too
    key = pq.read_table(tmp_path / "files" / "00000.parquet").column("key")[0].as_py()
    (tmp_path / "files" / "00000" / f"{key}.jpg").unlink()
    assert _codes(tmp_path / "files") == {"incomplete-sample": [str(tmp_path / "files" / "00000")]}


# ------------------------------------------------------------------ corruptions of a published dataset
def _member_removed(root: Path) -> tuple[str, str]:
    tar = root / "shards" / "00001.tar"
    key = _first_key(tar)
    _tar_rewrite(tar, keep=lambda n: not n.startswith(key))
    return "missing-sample", str(tar)


def _image_member_removed(root: Path) -> tuple[str, str]:
    tar = root / "shards" / "00001.tar"
    key = _first_key(tar)
    _tar_rewrite(tar, keep=lambda n: n not in (f"{key}.jpg", f"{key}.png"))
    return "incomplete-sample", str(tar)


def _extra_sample(root: Path) -> tuple[str, str]:
    tar = root / "shards" / "00000.tar"
    _tar_rewrite(tar, add={"feedfacefeedfacefeed.jpg": b"\xff\xd8", "feedfacefeedfacefeed.txt": b"x",
                           "feedfacefeedfacefeed.json": b"{}"})
    return "extra-sample", str(tar)


def _dropped_sample_left_in_tar(root: Path) -> tuple[str, str]:
    """A row turned non-success (with its error) while its image stays in the tar."""
    ref = ShardRef.of(str(root / "shards"), 2)
    key = _first_key(Path(ref.tar))
    _parquet_edit(Path(ref.parquet), lambda rows: next(r for r in rows if r["key"] == key).update(
        status="filtered_clip", error_message="clip_threshold: 0.1 < 0.3"))
    return "extra-sample", ref.tar


def _stats_edited(root: Path) -> tuple[str, str]:
    p = root / "shards" / "00002_stats.json"
    stats = json.loads(p.read_text())
    stats["successes"] += 1
    p.write_text(json.dumps(stats))
    return "stats-mismatch", str(p)


def _samples_stale(root: Path) -> tuple[str, str]:
    p = root / "samples" / "00001.parquet"
    pq.write_table(pq.read_table(p).slice(1), p)
    return "samples-stale", str(p)


def _samples_missing(root: Path) -> tuple[str, str]:
    p = root / "samples" / "00000.parquet"
    p.unlink()
    return "samples-missing", str(p)


def _manifest_count(root: Path) -> tuple[str, str]:
    p = root / "manifest.json"
    m = json.loads(p.read_text())
    m["shards"]["00001"]["samples_kept"] += 1
    p.write_text(json.dumps(m))
    return "manifest-mismatch", str(p)


def _manifest_lists_missing_shard(root: Path) -> tuple[str, str]:
    p = root / "manifest.json"
    m = json.loads(p.read_text())
    m["shards"]["00007"] = dict(m["shards"]["00000"])
    p.write_text(json.dumps(m))
    return "manifest-shard-missing", str(p)


def _sizes_wrong(root: Path) -> tuple[str, str]:
    p = root / "shards" / "sizes.json"
    sizes = json.loads(p.read_text())
    sizes["00000.tar"] += 3
    p.write_text(json.dumps(sizes))
    return "sizes-mismatch", str(p)


def _duplicate_key(root: Path) -> tuple[str, str]:
    """A dropped row of shard 0 copied into shard 1 (its tar and stats need not change)."""
    other = _dropped_row(pq.read_table(root / "shards" / "00000.parquet").to_pylist())
    _parquet_edit(root / "shards" / "00001.parquet", lambda rows: rows.append(dict(other)))
    return "duplicate-key", str(root / "shards")


def _duplicate_key_in_shard(root: Path) -> tuple[str, str]:
    p = root / "shards" / "00002.parquet"
    _parquet_edit(p, lambda rows: rows.append(dict(_dropped_row(rows))))
    return "duplicate-key", str(p)


def _temp_file(root: Path) -> tuple[str, str]:
    p = root / "shards" / ".00001.tar.tmp-0123abcd"
    p.write_bytes(b"partial")
    return "temp-file", str(p)


def _tar_truncated(root: Path) -> tuple[str, str]:
    p = root / "shards" / "00002.tar"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return "tar-unreadable", str(p)


def _tar_cut_at_member_boundary(root: Path) -> tuple[str, str]:
    """Cut right after a member (no end-of-archive marker): tarfile reads it as a shorter, valid tar."""
    p = root / "shards" / "00000.tar"
    with tarfile.open(p) as t:
        m = t.getmembers()[5]
    p.write_bytes(p.read_bytes()[: m.offset_data + -(-m.size // 512) * 512])
    return "tar-unreadable", str(p)


def _bad_status(root: Path) -> tuple[str, str]:
    p = root / "shards" / "00001.parquet"
    _parquet_edit(p, lambda rows: _dropped_row(rows).update(status="rejected"))
    return "bad-status", str(p)


def _no_error_message(root: Path) -> tuple[str, str]:
    p = root / "shards" / "00002.parquet"
    _parquet_edit(p, lambda rows: _dropped_row(rows).update(error_message=None))
    return "no-error-message", str(p)


def _parquet_garbage(root: Path) -> tuple[str, str]:
    p = root / "shards" / "00001.parquet"
    p.write_bytes(b"not a parquet file" * 10)
    return "parquet-unreadable", str(p)


def _json_disagrees(root: Path) -> tuple[str, str]:
    tar = root / "shards" / "00002.tar"
    key = _first_key(tar)

    def edit(name: str, data: bytes) -> bytes:
        if name != f"{key}.json":
            return data
        return json.dumps({**json.loads(data), "status": "duplicate"}).encode()

    _tar_rewrite(tar, edit=edit)
    return "sample-metadata", str(tar)


CORRUPTIONS = [_member_removed, _image_member_removed, _extra_sample, _dropped_sample_left_in_tar, _stats_edited,
               _samples_stale, _samples_missing, _manifest_count, _manifest_lists_missing_shard, _sizes_wrong,
               _duplicate_key, _duplicate_key_in_shard, _temp_file, _tar_truncated, _tar_cut_at_member_boundary,
               _bad_status, _no_error_message, _parquet_garbage, _json_disagrees]


@pytest.mark.unverified("corrupts the dataset to test verify")
@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_corruption_is_found_and_named(ds, corrupt):
    code, path = corrupt(ds)
    rep = verify(str(ds))
    assert not rep.clean
    named = [f.path for f in rep.errors if f.code == code]
    assert path in named, (code, path, rep.findings)


@pytest.mark.unverified("corrupts the dataset to test verify")
def test_cli_exit_codes_and_json(ds, tmp_path, capsys):
    assert main(["verify", str(ds), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clean"] is True
    _stats_edited(ds)
    _temp_file(ds)
    assert main(["verify", str(ds), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["clean"] is False and {f["code"] for f in out["findings"]} == {"stats-mismatch", "temp-file"}
    assert all(f["path"] and f["message"] for f in out["findings"])
    assert main(["verify", str(ds)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any("stats-mismatch" in ln and "00002_stats.json" in ln for ln in lines)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    for not_a_dataset in ("missing", "empty", "file"):
        assert main(["verify", str(tmp_path / not_a_dataset)]) == 2
        assert "not a" in capsys.readouterr().err


def test_interrupted_states_are_notes_not_errors(ds):
    """What a killed run leaves readers (unfinished and unpublished shards, samples written before the
    manifest) is not corruption: the manifest is the snapshot, and a rerun completes it."""
    ref = ShardRef.of(str(ds / "shards"), 3)
    write_shard(ref, shard_table(3), start_time=0.0)  # finished, not published
    pq.write_table(pq.read_table(ref.parquet).filter(pc.equal(pc.field("status"), "success")),
                   ds / "samples" / "00003.parquet")
    write_shard(ShardRef.of(str(ds / "shards"), 4), shard_table(4), start_time=0.0)
    os.remove(ds / "shards" / "00004_stats.json")  # not finished
    rep = verify(str(ds))
    assert rep.clean, rep.errors
    assert {f.code for f in rep.findings} == {"shard-unpublished", "samples-unlisted", "shard-unfinished"}
