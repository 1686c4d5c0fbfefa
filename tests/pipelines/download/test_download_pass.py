"""``clipcrawl download``: img2dataset-compatible output, resume, --retry-failed, errors."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipcrawl.cli import main
from clipcrawl.schemas.tables import IMG2DATASET_COLUMNS

from .server import make_image

STATS_KEYS = {"count", "successes", "failed_to_download", "failed_to_resize", "duration", "start_time", "end_time",
              "status_dict"}


def _csv(path, rows) -> str:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def _run(inp: str, out, *extra: str) -> int:
    return main(["--log-format", "text", "download", inp, "--out", str(out), "--allow-private-networks",
                 "--image-size", "32", "--workers", "1", "--timeout", "3", *extra])


@pytest.fixture()
def listing(server, tmp_path):
    for i in range(4):
        server.files[f"p{i}.png"] = make_image(60 + i, 40, "PNG", seed=i)
    rows = [{"url": server.url(f"/f/p{i}.png"), "caption": f"picture {i}", "lic": f"l{i}"} for i in range(4)]
    rows += [{"url": server.url("/status/404"), "caption": "gone", "lic": "x"},
             dict(rows[0]),  # duplicate (url, caption)
             {"url": server.url("/bomb.png"), "caption": "bomb", "lic": "y"}]
    return _csv(tmp_path / "list.csv", rows), rows


def _tar_members(path) -> dict[str, bytes]:
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


def test_img2dataset_compatible_output_and_resume(server, listing, tmp_path):
    inp, rows = listing
    out = tmp_path / "out"
    assert _run(inp, out, "--samples-per-shard", "4", "--save-additional-columns", "lic") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar", "00001_stats.json"]
    table = pq.read_table(out / "00000.parquet").to_pylist() + pq.read_table(out / "00001.parquet").to_pylist()
    assert pq.read_table(out / "00000.parquet").column_names[: len(IMG2DATASET_COLUMNS)] == list(IMG2DATASET_COLUMNS)
    assert [r["url"] for r in table] == [r["url"] for r in rows]  # every input row, in order
    assert [r["lic"] for r in table] == [r["lic"] for r in rows]
    assert [r["status"] for r in table] == ["success"] * 4 + ["failed_to_download", "duplicate", "failed_to_resize"]
    assert table[4]["error_message"] == "download: HTTP 404 Not Found"
    assert table[5]["duplicate_of"] == table[0]["key"] and table[5]["dedup_method"] == "url"
    assert table[6]["error_message"].startswith("resize: image too large to decode")
    assert [r["shard"] for r in table] == ["00000"] * 4 + ["00001"] * 3

    members = _tar_members(out / "00000.tar")
    k = table[1]["key"]
    assert {f"{k}.jpg", f"{k}.txt", f"{k}.json"} <= set(members) and len(members) == 12
    assert members[f"{k}.txt"] == b"picture 1"
    meta = json.loads(members[f"{k}.json"])
    assert meta["key"] == k and meta["status"] == "success" and meta["lic"] == "l1"
    assert (meta["width"], meta["height"], meta["original_width"], meta["original_height"]) == (32, 32, 61, 40)
    assert Image.open(io.BytesIO(members[f"{k}.jpg"])).size == (32, 32)
    assert _tar_members(out / "00001.tar") == {}  # nothing succeeded there

    stats = json.loads((out / "00001_stats.json").read_text())
    assert set(stats) >= STATS_KEYS
    assert (stats["count"], stats["successes"], stats["failed_to_download"], stats["failed_to_resize"]) == (3, 0, 1, 1)
    assert stats["status_dict"]["download: HTTP 404 Not Found"] == 1

    fetched = sum(1 for r in server.requests if r.path.startswith("/f/p"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _run(inp, out, "--samples-per-shard", "4", "--save-additional-columns", "lic") == 0  # resume
    assert sum(1 for r in server.requests if r.path.startswith("/f/p")) == fetched
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # another sharding of the same folder is refused instead of mixing two inputs
    assert _run(inp, out, "--samples-per-shard", "3") == 2


@pytest.mark.parametrize("fmt", ["webdataset", "parquet", "files"])
def test_retry_failed_refetches_only_failed_downloads(server, tmp_path, fmt):
    server.files["r.png"] = make_image(50, 50, "PNG", seed=9)
    server.flaky_left[f"r-{fmt}"] = 1
    rows = [{"url": server.url("/f/r.png"), "caption": "stays"},
            {"url": server.url(f"/flaky/r-{fmt}"), "caption": "comes back"},
            {"url": server.url("/page.jpg"), "caption": "not an image"}]
    inp, out = _csv(tmp_path / "l.csv", rows), tmp_path / "out"
    assert _run(inp, out, "--output-format", fmt) == 0
    first = pq.read_table(out / "00000.parquet").to_pylist()
    assert [r["status"] for r in first] == ["success", "failed_to_download", "failed_to_resize"]
    hits = (server.hits("/f/r.png"), server.hits("/page.jpg"))

    assert _run(inp, out, "--output-format", fmt, "--retry-failed") == 0
    again = pq.read_table(out / "00000.parquet").to_pylist()
    assert [r["status"] for r in again] == ["success", "success", "failed_to_resize"]
    assert (server.hits("/f/r.png"), server.hits("/page.jpg")) == hits  # only the failed download refetched
    assert server.hits(f"/flaky/r-{fmt}") == 2
    stats = json.loads((out / "00000_stats.json").read_text())
    assert (stats["successes"], stats["failed_to_download"]) == (2, 0)
    keys = [r["key"] for r in again[:2]]
    if fmt == "webdataset":
        names = set(_tar_members(out / "00000.tar"))
    elif fmt == "files":
        names = {p.name for p in (out / "00000").iterdir()}
    else:
        t = pq.read_table(out / "00000.parquet")
        names = {f"{k}.jpg" for k, img in zip(t.column("key").to_pylist(), t.column("jpg").to_pylist()) if img}
    assert {f"{k}.jpg" for k in keys} <= names  # the old success kept its image, the retried one has one


def test_unusable_input_exits_2(tmp_path, capsys):
    assert _run(str(tmp_path / "missing.csv"), tmp_path / "o") == 2
    p = tmp_path / "l.csv"
    p.write_text("URL,TEXT\nhttp://x/1.jpg,a\n")
    assert _run(str(p), tmp_path / "o") == 2
    assert "--url-col" in capsys.readouterr().err
    assert _run(str(p), tmp_path / "o", "--url-col", "URL", "--encode-format", "png", "--encode-quality", "50") == 2


def test_real_images_decode_or_fail_cleanly(server, testdata, tmp_path):
    files = [p for p in sorted((testdata / "images").rglob("*")) if p.is_file()
             and p.suffix.lower() not in (".npy", ".parquet", ".jsonl", ".md")]
    for p in files:
        server.files[f"real-{p.parent.name}-{p.name}"] = p.read_bytes()
    inp = tmp_path / "urls.txt"
    inp.write_text("".join(server.url(f"/f/real-{p.parent.name}-{p.name}") + "\n" for p in files))
    out = tmp_path / "out"
    assert _run(str(inp), out, "--workers", "2") == 0
    rows = pq.read_table(out / "00000.parquet").to_pylist()
    assert len(rows) == len(files)
    for r in rows:
        assert r["status"] in ("success", "failed_to_resize"), r
        assert (r["status"] == "success") == (r["error_message"] is None), r
    assert sum(r["status"] == "success" for r in rows) >= 80


def test_preset_rules_and_language_column(server, tmp_path):
    sizes = {"ok": (300, 250), "narrow": (150, 300), "wide": (700, 200), "de": (300, 300), "short": (300, 300)}
    for name, (w, h) in sizes.items():
        server.files[f"{name}.png"] = make_image(w, h, "PNG", seed=w + h)
    caps = {"ok": "a small red boat on a lake", "narrow": "a tall narrow tower at dusk",
            "wide": "a wide panorama of the city skyline", "de": "ein kleines rotes Boot auf dem See",
            "short": "red boat"}
    inp = _csv(tmp_path / "l.csv", [{"url": server.url(f"/f/{n}.png"), "caption": c} for n, c in caps.items()])
    out = tmp_path / "out"
    assert _run(inp, out, "--preset", "datacomp-basic") == 0
    rows = {r["caption"]: r for r in pq.read_table(out / "00000.parquet").to_pylist()}
    got = {n: rows[c]["status"] for n, c in caps.items()}
    assert got == {"ok": "success", "narrow": "filtered_image", "wide": "filtered_image", "de": "filtered_text",
                   "short": "filtered_text"}
    assert rows[caps["narrow"]]["error_message"] == "image: smaller side 150 < 200"
    assert rows[caps["wide"]]["error_message"] == "image: aspect ratio 3.50 > 3"
    assert rows[caps["de"]]["error_message"] == "text: caption language de not in en"
    assert {n: rows[c]["language"] for n, c in caps.items() if n != "short"} == {
        "ok": "en", "narrow": "en", "wide": "en", "de": "de"}
    assert rows[caps["ok"]]["caption_words"] == 7
    stats = json.loads((out / "00000_stats.json").read_text())
    assert (stats["successes"], stats["filtered_image"], stats["filtered_text"]) == (1, 2, 2)
    assert json.loads((out / "curation.json").read_text())["preset"][0].startswith("preset datacomp-basic")
