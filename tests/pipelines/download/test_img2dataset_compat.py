"""img2dataset drop-in (issue 19): ``clipcrawl.img2dataset.download`` behaves as img2dataset 1.47's ``download``.

What img2dataset's public tests exercise through ``download()`` -- every input format x output format,
resize modes with/without resize_only_if_bigger/skip_reencode, captions on/off, several input files,
repeated rows, compute_hash, save_additional_columns, incremental_mode -- against a loopback server.
The expectations are img2dataset 1.47's (read from its source; ``test_same_as_real_img2dataset``
runs the real one when its venv exists: CLIPCRAWL_IMG2DATASET_BIN or /work/.venv-img2dataset).
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipcrawl import img2dataset
from clipcrawl.cli import main as cli_main
from clipcrawl.schemas.config import ConfigError

from .server import make_image

BASE_COLUMNS = ["key", "status", "error_message", "width", "height", "original_width", "original_height"]
INPUT_FORMATS = ["txt", "csv", "tsv", "json", "jsonl", "parquet"]
OUTPUT_FORMATS = ["files", "webdataset", "parquet", "dummy"]
IMAGES = {"wide.jpg": (120, 60, "JPEG"), "tall.png": (30, 50, "PNG"), "small.jpg": (40, 40, "JPEG")}


@pytest.fixture(scope="module")
def urls(server):
    for name, (w, h, fmt) in IMAGES.items():
        server.files[name] = make_image(w, h, fmt, seed=w)
    names = list(IMAGES) + ["missing.jpg"]
    return [server.url(f"/f/{n}") for n in names]


def write_input(folder: Path, fmt: str, rows: list[dict], name: str = "input", gz: bool = False) -> Path:
    """``rows`` as img2dataset's ``fmt`` (txt keeps the url only); ``gz``: gzip-compressed ``fmt.gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}{'.gz' if gz else ''}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    if fmt == "txt":
        text = "\n".join(r["url"] for r in rows) + "\n"
    elif fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        cols = list(rows[0])
        text = sep.join(cols) + "\n" + "".join(sep.join(str(r[c]) for c in cols) + "\n" for r in rows)
    elif fmt == "json":
        text = json.dumps(rows)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def rows_of(urls: list[str]) -> list[dict]:
    return [{"url": u, "text": f"caption {i}", "extra": i} for i, u in enumerate(urls)]


def run(url_list, out, **kw):
    args = dict(image_size=32, output_folder=str(out), thread_count=8, processes_count=1, timeout=10,
                number_sample_per_shard=10)
    args.update(kw)
    return img2dataset.download(str(url_list), **args)


def _members(path: Path) -> list[str]:
    with tarfile.open(path) as t:
        return sorted(t.getnames())


def read_out(out: Path) -> dict:
    """Everything img2dataset users look at: files, Parquet rows by key, stats, tar members."""
    parquet = sorted(out.glob("*.parquet"))
    rows = [r for p in parquet for r in pq.read_table(p).to_pylist()]
    columns = pq.read_table(parquet[0]).schema.names if parquet else []
    tars = {p.name: _members(p) for p in sorted(out.glob("*.tar"))}
    return {
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()),
        "columns": columns, "rows": {r["key"]: r for r in rows},
        "stats": {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))}, "tars": tars,
    }


# ------------------------------------------------------------------ the signature
def test_signature_is_img2dataset_147():
    """Every keyword of img2dataset 1.47's download, same order and defaults (from its main.py)."""
    expected = {
        "url_list": inspect.Parameter.empty, "image_size": 256, "output_folder": "images", "processes_count": 1,
        "resize_mode": "border", "resize_only_if_bigger": False, "upscale_interpolation": "lanczos",
        "downscale_interpolation": "area", "encode_quality": 95, "encode_format": "jpg", "skip_reencode": False,
        "output_format": "files", "input_format": "txt", "url_col": "url", "caption_col": None, "bbox_col": None,
        "thread_count": 256, "number_sample_per_shard": 10000, "extract_exif": True,
        "save_additional_columns": None, "timeout": 10, "enable_wandb": False, "wandb_project": "img2dataset",
        "oom_shard_count": 5, "compute_hash": "sha256", "verify_hash": None, "distributor": "multiprocessing",
        "subjob_size": 1000, "retries": 0, "disable_all_reencoding": False, "min_image_size": 0,
        "max_image_area": float("inf"), "max_aspect_ratio": float("inf"), "incremental_mode": "incremental",
        "max_shard_retry": 1, "user_agent_token": None, "disallowed_header_directives": None,
    }
    params = inspect.signature(img2dataset.download).parameters
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == list(expected)
    assert {n: params[n].default for n in positional} == expected


# ------------------------------------------------------------------ formats
def _check_output(got: dict, out_fmt: str, caption: bool, n_ok: int, n: int, extra: bool) -> None:
    want_cols = (["extra"] if extra else []) + (["caption"] if caption else []) + ["url"] + BASE_COLUMNS
    want_cols += ["exif", "sha256"] + (["jpg"] if out_fmt == "parquet" else [])
    if out_fmt == "dummy":
        assert got["files"] == ["00000_stats.json"]
    else:
        assert got["columns"] == want_cols
        assert sorted(got["rows"]) == [f"{i:06d}" for i in range(n)]  # shard 0, rows 0..n-1
    stats = got["stats"]["00000_stats.json"]
    assert set(stats) == {"count", "successes", "failed_to_download", "failed_to_resize", "duration", "start_time",
                          "end_time", "status_dict"}
    assert (stats["count"], stats["successes"], stats["failed_to_download"]) == (n, n_ok, n - n_ok)
    assert stats["status_dict"] == {"success": n_ok, "HTTP Error 404: Not Found": n - n_ok}
    exts = ["jpg", "json"] + (["txt"] if caption else [])
    members = sorted(f"{i:06d}.{e}" for i in range(n_ok) for e in exts)
    if out_fmt == "webdataset":
        assert got["tars"] == {"00000.tar": members}
    if out_fmt == "files":
        assert sorted(f for f in got["files"] if f.startswith("00000/")) == [f"00000/{m}" for m in members]


def _format_case(tmp_path, urls, in_fmt, out_fmt, gz):
    src = write_input(tmp_path / "in", in_fmt, rows_of(urls), gz=gz)
    txt = in_fmt == "txt"
    kw = {} if txt else {"caption_col": "text", "save_additional_columns": ["extra"]}
    run(src, tmp_path / "out", input_format=in_fmt + (".gz" if gz else ""), output_format=out_fmt, **kw)
    _check_output(read_out(tmp_path / "out"), out_fmt, caption=not txt, n_ok=3, n=4, extra=not txt)


@pytest.mark.parametrize("in_fmt", INPUT_FORMATS)
def test_every_input_format(tmp_path, urls, in_fmt):
    _format_case(tmp_path, urls, in_fmt, "webdataset", gz=in_fmt in ("csv", "jsonl", "txt"))


@pytest.mark.parametrize("out_fmt", OUTPUT_FORMATS)
def test_every_output_format(tmp_path, urls, out_fmt):
    _format_case(tmp_path, urls, "parquet", out_fmt, gz=False)


@pytest.mark.slow
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("out_fmt", OUTPUT_FORMATS)
@pytest.mark.parametrize("in_fmt", INPUT_FORMATS)
def test_input_output_cross_product(tmp_path, urls, in_fmt, out_fmt, gz):
    if gz and in_fmt == "parquet":
        pytest.skip("img2dataset has no parquet.gz")
    _format_case(tmp_path, urls, in_fmt, out_fmt, gz)


# ------------------------------------------------------------------ rows, keys, captions
def test_repeated_rows_several_files_and_captions_off(tmp_path, urls):
    """Every row is fetched (no `duplicate`); shards number on across sorted files; no .txt without captions."""
    folder = tmp_path / "in"
    same = [urls[0]] * 3 + [urls[1]]
    write_input(folder, "csv", rows_of(same), name="a")
    write_input(folder, "csv", rows_of(urls[:2]), name="b")
    write_input(folder, "json", rows_of(urls), name="c")  # another extension: not read (glob *.csv)
    run(folder, tmp_path / "out", input_format="csv", output_format="webdataset", number_sample_per_shard=3)
    got = read_out(tmp_path / "out")
    assert sorted(got["rows"]) == ["000000", "000001", "000002", "000010", "000020", "000021"]
    assert [got["rows"][k]["url"] for k in sorted(got["rows"])] == same + urls[:2]
    assert all(r["status"] == "success" for r in got["rows"].values())
    assert got["columns"] == ["url", *BASE_COLUMNS, "exif", "sha256"]
    assert all(not m.endswith(".txt") for ms in got["tars"].values() for m in ms)
    assert sorted(got["stats"]) == ["00000_stats.json", "00001_stats.json", "00002_stats.json"]


def test_oom_shard_count_and_key_width(tmp_path, urls):
    src = write_input(tmp_path / "in", "txt", [{"url": u} for u in urls[:3]])
    run(src, tmp_path / "out", output_format="parquet", number_sample_per_shard=2, oom_shard_count=2)
    got = read_out(tmp_path / "out")
    assert sorted(got["rows"]) == ["000", "001", "010"]  # ceil(log10(2)) = 1 digit of row + 2 of shard
    assert sorted(got["stats"]) == ["00_stats.json", "01_stats.json"]


# ------------------------------------------------------------------ resizing
RESIZE_CASES = [  # mode, only_if_bigger, skip_reencode -> (w, h) of wide.jpg (120x60) / small.jpg (40x40) at 64
    ("border", False, False, (64, 64), (64, 64)),
    ("keep_ratio", False, False, (128, 64), (64, 64)),
    ("keep_ratio_largest", False, False, (64, 32), (64, 64)),
    ("center_crop", False, False, (64, 64), (64, 64)),
    ("no", False, False, (120, 60), (40, 40)),
    ("border", True, False, (64, 64), (40, 40)),
    ("keep_ratio", True, True, (120, 60), (40, 40)),
    ("no", False, True, (120, 60), (40, 40)),
]


@pytest.mark.parametrize("mode,only_bigger,skip,wide,small", RESIZE_CASES)
def test_resize_modes(tmp_path, urls, server, mode, only_bigger, skip, wide, small):
    src = write_input(tmp_path / "in", "txt", [{"url": urls[0]}, {"url": urls[2]}])
    run(src, tmp_path / "out", image_size=64, resize_mode=mode, resize_only_if_bigger=only_bigger,
        skip_reencode=skip, output_format="parquet")
    rows = read_out(tmp_path / "out")["rows"]
    for key, want, name in (("000000", wide, "wide.jpg"), ("000001", small, "small.jpg")):
        r = rows[key]
        assert (r["width"], r["height"]) == want
        assert Image.open(io.BytesIO(r["jpg"])).size == want
        assert (r["original_width"], r["original_height"]) == IMAGES[name][:2]
        dims = IMAGES[name][:2]
        side = min(dims) if mode in ("keep_ratio", "center_crop") else max(dims)
        untouched = skip and (mode == "no" or (only_bigger and side <= 64))  # img2dataset: no resize branch ran
        assert (r["jpg"] == server.files[name]) == untouched


def test_min_image_size_and_max_aspect_ratio(tmp_path, urls):
    src = write_input(tmp_path / "in", "txt", [{"url": u} for u in urls[:3]])
    run(src, tmp_path / "out", min_image_size=35, max_aspect_ratio=1.9, output_format="dummy")
    stats = read_out(tmp_path / "out")["stats"]["00000_stats.json"]
    # wide 120x60: ratio 2.0 > 1.9; tall 30x50: 30 < 35; small 40x40 passes
    assert stats["status_dict"] == {"aspect ratio too large": 1, "image too small": 1, "success": 1}
    assert stats["failed_to_resize"] == 2


# ------------------------------------------------------------------ hashes and columns
@pytest.mark.parametrize("algo", ["md5", "sha512", None])
def test_compute_hash(tmp_path, urls, server, algo):
    src = write_input(tmp_path / "in", "txt", [{"url": urls[0]}])
    run(src, tmp_path / "out", compute_hash=algo, output_format="parquet", extract_exif=False)
    got = read_out(tmp_path / "out")
    assert got["columns"] == ["url", *BASE_COLUMNS] + ([algo] if algo else []) + ["jpg"]
    if algo:
        assert got["rows"]["000000"][algo] == hashlib.new(algo, server.files["wide.jpg"]).hexdigest()


def test_verify_hash(tmp_path, urls, server):
    good = hashlib.md5(server.files["wide.jpg"]).hexdigest()
    rows = [{"url": urls[0], "h": good}, {"url": urls[0], "h": "0" * 32}]
    src = write_input(tmp_path / "in", "parquet", rows)
    run(src, tmp_path / "out", input_format="parquet", compute_hash="md5", verify_hash=["h", "md5"],
        output_format="parquet")
    got = read_out(tmp_path / "out")
    assert got["columns"][:2] == ["md5", "url"]  # the verified column, renamed to the hash type
    assert [got["rows"][k]["status"] for k in ("000000", "000001")] == ["success", "failed_to_download"]
    assert got["rows"]["000001"]["error_message"] == "hash mismatch"
    with pytest.raises(ConfigError, match="must be the same"):
        run(src, tmp_path / "out2", input_format="parquet", verify_hash=["h", "md5"])


def test_additional_columns_keep_their_values(tmp_path, urls):
    """Input columns named like clipcrawl's own fetch columns travel untouched."""
    rows = [{"url": u, "bytes": "in", "image": 7, "http_status": None} for u in urls[:2]]
    src = write_input(tmp_path / "in", "parquet", rows)
    run(src, tmp_path / "out", input_format="parquet", save_additional_columns=["bytes", "image", "http_status"],
        output_format="files")
    got = read_out(tmp_path / "out")
    assert got["columns"][:4] == ["bytes", "image", "http_status", "url"]
    assert [(r["bytes"], r["image"]) for r in got["rows"].values()] == [("in", 7), ("in", 7)]
    meta = json.loads((tmp_path / "out" / "00000" / "000000.json").read_text())
    assert list(meta)[:5] == ["bytes", "image", "http_status", "url", "key"] and meta["bytes"] == "in"


def test_argument_errors(tmp_path, urls):
    src = write_input(tmp_path / "in", "parquet", rows_of(urls[:1]))
    for kw, match in (({"save_additional_columns": ["status"]}, "reserve"),
                      ({"output_format": "tfrecord"}, "tensorflow"), ({"distributor": "dask"}, "not supported"),
                      ({"compute_hash": "crc"}, "Unsupported hash"), ({"caption_col": "nope"}, "not found")):
        with pytest.raises(ConfigError, match=match):
            run(src, tmp_path / "out", input_format="parquet", **kw)


def test_bbox_blur(tmp_path, urls):
    rows = [{"url": urls[0], "box": [[0.0, 0.0, 0.5, 1.0]]}, {"url": urls[0], "box": []}]
    src = write_input(tmp_path / "in", "parquet", rows)
    run(src, tmp_path / "out", input_format="parquet", bbox_col="box", resize_mode="no", output_format="parquet",
        compute_hash=None)
    got = read_out(tmp_path / "out")
    assert got["columns"][:2] == ["box", "url"]
    blurred, plain = (got["rows"][k]["jpg"] for k in ("000000", "000001"))
    assert blurred != plain and got["rows"]["000000"]["box"] == [[0.0, 0.0, 0.5, 1.0]]


# ------------------------------------------------------------------ incremental modes
def test_incremental_modes(tmp_path, urls, server):
    src = write_input(tmp_path / "in", "txt", [{"url": u} for u in urls[:2]])
    out = tmp_path / "out"
    run(src, out, output_format="webdataset", number_sample_per_shard=1)
    hits = server.hits("/f/wide.jpg")
    (out / "00001_stats.json").unlink()  # shard 1 unfinished
    run(src, out, output_format="webdataset", number_sample_per_shard=1)  # incremental: shard 0 not redone
    assert server.hits("/f/wide.jpg") == hits and (out / "00001_stats.json").exists()
    (out / "stray.txt").write_text("x")
    run(src, out, output_format="webdataset", number_sample_per_shard=1, incremental_mode="overwrite")
    assert server.hits("/f/wide.jpg") == hits + 1 and not (out / "stray.txt").exists()
    run(src, out, output_format="webdataset", number_sample_per_shard=1, incremental_mode="extend")
    assert sorted(read_out(out)["stats"]) == [f"0000{i}_stats.json" for i in range(4)]


def _spark_ready() -> str | None:
    """Why pyspark cannot run here, or None."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark not installed (pip install 'clipcrawl[spark]')"
    from clipcrawl.pipelines.sparkengine import check_java

    try:
        check_java()
    except ConfigError as e:
        return f"no Java for Spark: {e}"
    return None


@pytest.mark.parametrize("distributor", ["multiprocessing", pytest.param("pyspark", marks=pytest.mark.slow)])
def test_distributors(tmp_path, urls, distributor):
    """img2dataset's tests/test_main.py::test_distributors: a txt list, webdataset, one 00000.tar holding two
    members per sample; pyspark (a local Spark the engine starts and stops) writes what multiprocessing writes.
    A standalone ``spark://`` cluster, retries and the running-context case: test_spark.py."""
    if distributor == "pyspark" and _spark_ready():
        pytest.skip(_spark_ready())
    src = write_input(tmp_path / "in", "txt", [{"url": u} for u in urls])
    run(src, tmp_path / "out", output_format="webdataset", number_sample_per_shard=10000, distributor=distributor)
    got = read_out(tmp_path / "out")
    assert list(got["tars"]) == ["00000.tar"]
    assert len(got["tars"]["00000.tar"]) == 2 * got["stats"]["00000_stats.json"]["successes"] == 2 * 3
    if distributor == "multiprocessing":
        return
    run(src, tmp_path / "mp", output_format="webdataset", number_sample_per_shard=10000)
    want = read_out(tmp_path / "mp")
    assert got["files"] == want["files"] and got["tars"] == want["tars"]
    assert {k: (r["status"], r["error_message"]) for k, r in got["rows"].items()} == \
        {k: (r["status"], r["error_message"]) for k, r in want["rows"].items()}
    from pyspark import SparkContext

    assert SparkContext._active_spark_context is None  # the engine stopped the context it started


@pytest.mark.slow
def test_distributor_ray_writes_the_same(tmp_path, urls):
    pytest.importorskip("ray")
    src = write_input(tmp_path / "in", "txt", [{"url": u} for u in urls])
    run(src, tmp_path / "local", output_format="webdataset", number_sample_per_shard=2)
    # in a process of its own: a Ray instance started inside pytest would outlive the test, and the Ray
    # engine tests that follow (tests/pipelines/test_ray_*.py) then get actors cancelled before they run
    args = dict(image_size=32, output_folder=str(tmp_path / "ray"), thread_count=8, processes_count=1, timeout=10,
                output_format="webdataset", number_sample_per_shard=2, distributor="ray")
    code = ("import json, sys\nfrom clipcrawl import img2dataset\n"
            "img2dataset.download(sys.argv[1], **json.loads(sys.argv[2]))")
    r = subprocess.run([sys.executable, "-c", code, str(src), json.dumps(args)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_out(tmp_path / "local"), read_out(tmp_path / "ray")
    assert a["files"] == b["files"] and a["tars"] == b["tars"]
    assert {k: r["status"] for k, r in a["rows"].items()} == {k: r["status"] for k, r in b["rows"].items()}


# ------------------------------------------------------------------ on purpose different
def test_robots_txt_is_obeyed_unless_turned_off(tmp_path, server):
    server.files["x.jpg"] = make_image(20, 20)
    src = write_input(tmp_path / "in", "txt", [{"url": server.url("/private/x.jpg")}])
    run(src, tmp_path / "a", output_format="dummy")
    assert read_out(tmp_path / "a")["stats"]["00000_stats.json"]["failed_to_download"] == 1
    run(src, tmp_path / "b", output_format="dummy", respect_robots=False)
    assert read_out(tmp_path / "b")["stats"]["00000_stats.json"]["successes"] == 1


def test_x_robots_tag_and_user_agent_token(tmp_path, server):
    """img2dataset's default directives, its message, and ``token: noai`` applying to that token only."""
    urls = [server.url("/xrobots.jpg?v=noai"), server.url("/xrobots.jpg?v=mybot:%20noimageai"),
            server.url("/xrobots.jpg?v=otherbot:%20noai")]
    src = write_input(tmp_path / "in", "txt", [{"url": u} for u in urls])
    run(src, tmp_path / "out", output_format="parquet", user_agent_token="MyBot")
    rows = read_out(tmp_path / "out")["rows"]
    assert [rows[k]["status"] for k in sorted(rows)] == ["failed_to_download", "failed_to_download", "success"]
    assert rows["000000"]["error_message"] == "Use of image disallowed by X-Robots-Tag directive"
    assert any((r.user_agent or "").startswith("mybot (compatible; clipcrawl") for r in server.requests)


# ------------------------------------------------------------------ the command line
def test_cli_both_spellings_and_fire_values(tmp_path, urls):
    src = write_input(tmp_path / "in", "csv", rows_of(urls[:2]), gz=True)
    out = tmp_path / "out"
    code = cli_main(["img2dataset", f"--url-list={src}", "--input_format", "csv.gz", "--output_folder", str(out),
                     "--caption-col=text", "--save_additional_columns=['extra']", "--image_size=32",
                     "--thread_count", "8", "--resize_only_if_bigger", "--compute_hash=None",
                     "--output-format=parquet", "--timeout=2", "--extract_exif=False"])
    assert code == 0
    got = read_out(out)
    assert got["columns"] == ["extra", "caption", "url", *BASE_COLUMNS, "jpg"]
    assert got["rows"]["000000000"]["width"] == 32  # 120x60 is bigger than 32: resized and padded (border)
    assert cli_main(["img2dataset", f"--url_list={src}", "--output_format=tfrecord"]) == 2
    assert cli_main(["img2dataset", f"--url_list={src}", "--no_such_flag=1"]) == 2


def test_download_command_takes_gz_format_names(tmp_path, urls):
    src = write_input(tmp_path / "in", "txt", [{"url": urls[0]}], gz=True)
    code = cli_main(["download", str(src), "--out", str(tmp_path / "out"), "--input-format", "txt.gz",
                     "--allow-private-networks", "--image-size", "32", "--timeout", "2"])
    assert code == 0
    assert json.loads((tmp_path / "out" / "00000_stats.json").read_text())["successes"] == 1
