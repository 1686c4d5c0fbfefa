"""Input readers: img2dataset's formats, crawl output, deterministic shards, duplicates, errors."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.pipelines.inputs import find_inputs, plan_input_shards, read_url_list
from clipcrawl.schemas.config import ConfigError, UrlListConfig
from clipcrawl.schemas.keys import sample_key
from clipcrawl.schemas.tables import PAIRS, conform

ROWS = [
    {"URL": "http://a.example/1.jpg", "TEXT": "a cat, on a mat", "lic": "cc-by"},
    {"URL": "http://a.example/2.jpg", "TEXT": "ünïcode \"quoted\"", "lic": "cc0"},
    {"URL": "http://b.example/3.jpg", "TEXT": "", "lic": None},
]


def write(path, fmt: str, rows=ROWS) -> None:
    if fmt.startswith("parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    if fmt.startswith("txt"):
        text = "".join(r["URL"] + "\n" for r in rows) + "\n"
    elif fmt.startswith(("csv", "tsv")):
        import csv
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t" if fmt.startswith("tsv") else ",")
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    elif fmt.startswith("jsonl"):
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        text = json.dumps(rows)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "json", "jsonl", "txt",
                                 "csv.gz", "tsv.gz", "json.gz", "jsonl.gz", "txt.gz"])
def test_every_format_reads_the_same_pairs(tmp_path, fmt):
    path = tmp_path / f"list.{fmt}"
    write(path, fmt)
    t = read_url_list(UrlListConfig(path=str(path), url_col="URL", caption_col="TEXT",
                                    save_additional_columns=[] if fmt.startswith("txt") else ["lic"]))
    assert t.column("url").to_pylist() == [r["URL"] for r in ROWS]
    if fmt.startswith("txt"):
        assert t.column("caption").to_pylist() == [None] * 3
    else:
        captions = t.column("caption").to_pylist()
        assert captions[:2] == [r["TEXT"] for r in ROWS[:2]] and captions[2] in ("", None)
        assert t.column("lic").to_pylist()[:2] == ["cc-by", "cc0"]
    assert t.column("key").to_pylist() == [sample_key(u, c) for u, c in
                                           zip(t.column("url").to_pylist(), t.column("caption").to_pylist())]
    conform(t, PAIRS)  # a valid pairs table


def test_explicit_format_overrides_the_extension(tmp_path):
    path = tmp_path / "urls.list"
    write(path, "txt")
    with pytest.raises(ConfigError, match="--input-format"):
        find_inputs(UrlListConfig(path=str(path)))
    t = read_url_list(UrlListConfig(path=str(path), input_format="txt"))
    assert t.num_rows == 3


def test_folder_of_files_and_crawl_output(tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    write(folder / "b.csv", "csv", ROWS[1:])
    write(folder / "a.csv", "csv", ROWS[:1])
    (folder / "_ignored.csv").write_text("junk")
    cfg = UrlListConfig(path=str(folder), url_col="URL", caption_col="TEXT")
    assert [f.path.rsplit("/", 1)[-1] for f in find_inputs(cfg)] == ["a.csv", "b.csv"]
    assert read_url_list(cfg).column("url").to_pylist() == [r["URL"] for r in ROWS]

    crawl = tmp_path / "crawl"
    (crawl / "pairs").mkdir(parents=True)
    pairs = pa.Table.from_pylist([{"key": sample_key(r["URL"], r["TEXT"]), "url": r["URL"], "caption": r["TEXT"],
                                   "page_url": "http://a.example/", "source": "crawl", "caption_source": "alt"}
                                  for r in ROWS])
    pq.write_table(conform(pairs, PAIRS), crawl / "pairs" / "00000.parquet")
    for root in (crawl, tmp_path):  # the crawl dir, or a dataset holding crawl/
        t = read_url_list(UrlListConfig(path=str(root)))
        assert t.column("key").to_pylist() == pairs.column("key").to_pylist()
        assert t.column("source").to_pylist() == ["crawl"] * 3
        assert t.column("caption_source").to_pylist() == ["alt"] * 3


def test_shards_are_deterministic_and_duplicates_marked(tmp_path):
    rows = [{"url": f"http://x.example/{i % 7}.jpg", "caption": f"c{i % 7}"} for i in range(20)]
    write(tmp_path / "a.parquet", "parquet", rows[:12])
    write(tmp_path / "b.parquet", "parquet", rows[12:])
    cfg = UrlListConfig(path=str(tmp_path))
    plan = list(plan_input_shards(cfg, 5))
    assert [(s.id, s.table.num_rows, s.source) for s in plan] == [  # samples_per_shard across files
        (0, 5, "a.parquet"), (1, 5, "a.parquet"), (2, 5, "a.parquet,b.parquet"), (3, 5, "b.parquet")]
    legacy = list(plan_input_shards(cfg, 5, per_file=True))  # what downloads made before resume with
    assert [(s.id, s.table.num_rows, s.source) for s in legacy] == [
        (0, 5, "a.parquet"), (1, 5, "a.parquet"), (2, 2, "a.parquet"), (3, 5, "b.parquet"), (4, 3, "b.parquet")]
    again = list(plan_input_shards(cfg, 5))
    assert all(a.table.equals(b.table) for a, b in zip(plan, again))
    t = pa.concat_tables(s.table for s in plan)
    status = t.column("status").to_pylist()
    assert status.count("success") == 7 and status.count("duplicate") == 13
    first = {}
    for r in t.to_pylist():
        if r["status"] == "success":
            first[r["key"]] = r
        else:
            assert r["dedup_method"] == "url" and r["duplicate_of"] == r["key"] and r["key"] in first
            assert r["error_message"].startswith("input: duplicate")


@pytest.mark.parametrize("setup, cfg, match", [
    (lambda p: None, {"path": "missing.csv"}, "does not exist"),
    (lambda p: write(p / "l.csv", "csv"), {"path": "l.csv"}, "no URL column 'url'.*--url-col"),
    (lambda p: write(p / "l.csv", "csv"), {"path": "l.csv", "url_col": "URL", "caption_col": "CAP"},
     "no caption column 'CAP'"),
    (lambda p: write(p / "l.csv", "csv"), {"path": "l.csv", "url_col": "URL", "save_additional_columns": ["nope"]},
     "nope not found"),
    (lambda p: write(p / "l.csv", "csv"), {"path": "l.csv", "url_col": "URL", "save_additional_columns": ["status"]},
     "reserved"),
    (lambda p: (p / "l.parquet").write_bytes(b"not parquet"), {"path": "l.parquet"}, "cannot read it as parquet"),
    (lambda p: (p / "l.json").write_text("{broken"), {"path": "l.json"}, "cannot read it as json"),
    (lambda p: (p / "empty").mkdir(), {"path": "empty"}, "no input files"),
])
def test_unusable_input_is_a_config_error(tmp_path, monkeypatch, setup, cfg, match):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    from clipcrawl.schemas.config import parse_config

    with pytest.raises(ConfigError, match=match):
        read_url_list(parse_config(cfg, UrlListConfig, "test"))


# ------------------------------------------------------------------ issue 14, bug 6
def test_json_holding_one_object_is_one_record(tmp_path):
    """Was read as one row per character of the URL (32 rows of 'h', 't', ...)."""
    (tmp_path / "one.json").write_text(json.dumps({"url": "http://a.example/1.jpg", "caption": "a cat"}))
    t = read_url_list(UrlListConfig(path=str(tmp_path / "one.json")))
    assert t.select(["url", "caption"]).to_pylist() == [{"url": "http://a.example/1.jpg", "caption": "a cat"}]


@pytest.mark.parametrize("doc, match", [
    ({"url": ["http://a.example/1.jpg"], "caption": ["a", "b"]}, "different lengths"),
    ({"url": 3, "tags": ["x"]}, "neither a record"),
    ("http://a.example/1.jpg", "holds a JSON str"),
    ([{"url": "http://a.example/1.jpg"}, "http://a.example/2.jpg"], "item 2 of the JSON array is a str"),
])
def test_json_that_is_not_records_is_refused(tmp_path, doc, match):
    (tmp_path / "l.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=f"l.json: .*{match}.*fix: "):
        read_url_list(UrlListConfig(path=str(tmp_path / "l.json")))


@pytest.mark.parametrize("fmt", ["csv", "tsv", "txt", "jsonl"])
def test_latin1_text_inputs_are_decoded(tmp_path, fmt):
    """A latin-1 CSV exited 1 with ArrowInvalid: Invalid UTF8 payload."""
    caption = "café crème brûlée à la française, garçon"
    url = "http://a.example/crème.jpg"
    text = {"csv": f"url,caption\n{url},\"{caption}\"\n", "tsv": f"url\tcaption\n{url}\t{caption}\n",
            "txt": f"{url}\n", "jsonl": json.dumps({"url": url, "caption": caption}, ensure_ascii=False) + "\n"}[fmt]
    (tmp_path / f"l.{fmt}").write_bytes(text.encode("latin-1"))
    t = read_url_list(UrlListConfig(path=str(tmp_path / f"l.{fmt}")))
    assert t.column("url").to_pylist() == [url]
    if fmt != "txt":
        assert t.column("caption").to_pylist() == [caption]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_list_typed_url_column_is_refused(tmp_path, fmt):
    """Exited 1 with an Arrow cast error."""
    rows = [{"url": ["http://a.example/1.jpg", "http://a.example/2.jpg"], "caption": "x"}]
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "l.parquet")
    else:
        (tmp_path / "l.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=rf"l\.{fmt}: row 1: URL column 'url' holds list.*fix: "):
        read_url_list(UrlListConfig(path=str(tmp_path / f"l.{fmt}")))


def test_jsonl_line_separator_inside_a_string_is_not_a_new_line(tmp_path):
    (tmp_path / "l.jsonl").write_text(json.dumps({"url": "http://a.example/1.jpg", "caption": "a\u2028b"},
                                                 ensure_ascii=False) + "\n")
    t = read_url_list(UrlListConfig(path=str(tmp_path / "l.jsonl")))
    assert t.column("caption").to_pylist() == ["a\u2028b"]


def test_cli_download_of_list_typed_urls_exits_2_naming_file_and_fix(tmp_path):
    import subprocess
    import sys

    (tmp_path / "l.jsonl").write_text(json.dumps({"url": ["http://127.0.0.1:9/a.jpg"]}) + "\n")
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "download", str(tmp_path / "l.jsonl"),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "l.jsonl: row 1: URL column 'url'" in r.stderr and "fix:" in r.stderr and "Traceback" not in r.stderr


def test_parquet_input_is_read_a_shard_at_a_time(tmp_path, monkeypatch):
    """A Parquet list is streamed in batches; the shards are the same as reading it whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clipcrawl.pipelines import inputs

    n = 1000
    urls = [f"http://example.com/{i % 900}.jpg" for i in range(n)]  # 100 repeats: duplicates across batches
    pq.write_table(pa.table({"url": urls, "caption": ["c"] * n, "x": list(range(n))}), tmp_path / "l.parquet",
                   row_group_size=128)
    cfg = UrlListConfig(path=str(tmp_path / "l.parquet"), save_additional_columns=["x"])
    whole = inputs.mark_input_duplicates(inputs.read_input_file(inputs.find_inputs(cfg)[0], cfg), set())
    sizes = []
    real = inputs._pairs
    monkeypatch.setattr(inputs, "_pairs", lambda raw, f, c: sizes.append(raw.num_rows) or real(raw, f, c))
    shards = list(plan_input_shards(cfg, 300))
    assert [s.table.num_rows for s in shards] == [300, 300, 300, 100]
    assert pa.concat_tables([s.table for s in shards]).equals(whole)
    assert max(sizes) <= 300  # never the whole file at once
