"""A bad JSONL line is a failed row, not a refused file (issue 24); a file with no usable line is still refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from clipcrawl.pipelines.inputs import plan_input_shards, read_url_list
from clipcrawl.schemas.config import ConfigError, UrlListConfig

GOOD = [json.dumps({"url": f"http://a.example/{i}.jpg", "caption": f"cap {i}"}) for i in range(3)]
SURROGATE = '{"url": "http://x/a.jpg", "caption": "\\ud800"}'  # the raw JSON escape, as in the issue


def _shard_rows(path) -> list[dict]:
    cfg = UrlListConfig(path=str(path))
    return [r for s in plan_input_shards(cfg, 100) for r in s.table.to_pylist()]


def test_a_lone_surrogate_fails_its_row_only(tmp_path):
    """The whole file was refused: `cannot read it as jsonl: UnicodeEncodeError ... surrogates not allowed`."""
    path = tmp_path / "l.jsonl"
    path.write_text("\n".join([GOOD[0], SURROGATE, GOOD[1]]) + "\n")
    rows = _shard_rows(path)
    assert [(r["url"], r["caption"], r["status"]) for r in rows] == [
        ("http://a.example/0.jpg", "cap 0", "success"), ("", None, "failed_to_download"),
        ("http://a.example/1.jpg", "cap 1", "success")]
    assert rows[1]["error_message"] == ("input: l.jsonl line 2: field 'caption' holds a lone surrogate (e.g. \\ud800), "
                                        "which no UTF-8 text can hold")
    assert len({r["key"] for r in rows}) == 3 and rows == _shard_rows(path)  # keys unique and stable


@pytest.mark.parametrize("bad, why", [
    ('{"url": broken}', "not valid JSON: Expecting value (column 9)"),
    ('{"url": "http://a.example/x.jpg"', "not valid JSON: Expecting ',' delimiter (column 33)"),
    ("[1, 2]", "a JSON list, not an object"),
    ('"just a string"', "a JSON str, not an object"),
    ('{"url": ["http://a.example/1.jpg", "http://a.example/2.jpg"]}', "field 'url' is a list, not a string"),
    ('{"url": "http://a.example/x.jpg", "caption": 2024}', "field 'caption' is a int, not a string"),
    ('{"url": "http://a.example/x.jpg", "caption": {"en": "x"}}', "field 'caption' is a dict, not a string"),
])
def test_bad_line_becomes_a_failed_row_naming_it(tmp_path, bad, why):
    path = tmp_path / "l.jsonl"
    path.write_text("\n".join([GOOD[0], "", bad, GOOD[1], GOOD[2]]) + "\n")  # the bad one is line 3
    rows = _shard_rows(path)
    assert [r["status"] for r in rows] == ["success", "failed_to_download", "success", "success"]
    assert rows[1]["error_message"] == f"input: l.jsonl line 3: {why}" and rows[1]["url"] == ""
    assert [r["caption"] for r in rows] == ["cap 0", None, "cap 1", "cap 2"]


def test_an_extra_column_of_another_type_fails_that_row(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text("\n".join(json.dumps({"url": f"http://a.example/{i}.jpg", "n": v})
                              for i, v in enumerate([1, 2.5, "three", True, None, 2**70])) + "\n")
    t = read_url_list(UrlListConfig(path=str(path), save_additional_columns=["n"]))
    assert t.column("n").to_pylist() == [1.0, 2.5, None, None, None, None]
    assert t.column("error_message").to_pylist() == [
        None, None, "input: l.jsonl line 3: field 'n' is a str, unlike earlier lines",
        "input: l.jsonl line 4: field 'n' is a bool, unlike earlier lines", None,
        "input: l.jsonl line 6: field 'n' is an integer beyond 64 bits"]


def test_fields_of_later_lines_are_kept(tmp_path):
    """Arrow's from_pylist took its columns from the first line: a caption first seen on line 2 was lost."""
    path = tmp_path / "l.jsonl"
    path.write_text('{"url": "http://a.example/0.jpg"}\n{"url": "http://a.example/1.jpg", "caption": "one"}\n')
    assert read_url_list(UrlListConfig(path=str(path))).column("caption").to_pylist() == [None, "one"]


@pytest.mark.parametrize("lines, match", [
    ([SURROGATE], r"l\.jsonl: line 1: field 'caption' holds a lone surrogate .*fix: "),
    (['{"url": broken}', "[1]"], r"l\.jsonl: line 1: not valid JSON: .*fix: .*line 1"),
    (['{"url": ["http://a.example/1.jpg"]}'], r"l\.jsonl: row 1: URL column 'url' holds list.*fix: "),
    (['{"URL": "http://a.example/1.jpg"}'], r"l\.jsonl: no URL column 'url' \(columns: URL\)"),
])
def test_a_file_without_a_usable_line_is_refused(tmp_path, lines, match):
    path = tmp_path / "l.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=match):
        read_url_list(UrlListConfig(path=str(path)))


def test_cli_download_records_the_bad_line_and_exits_2_on_an_unusable_file(tmp_path):
    def download(lines: list[str], out: str) -> subprocess.CompletedProcess:
        path = tmp_path / "l.jsonl"
        path.write_text("\n".join(lines) + "\n")
        return subprocess.run([sys.executable, "-m", "clipcrawl", "download", str(path), "--out", str(tmp_path / out),
                               "--timeout", "2", "--retries", "0"], capture_output=True, text=True, timeout=120)

    r = download([GOOD[0], SURROGATE], "out")
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr  # 1: the good URL is not reachable
    rows = pq.read_table(tmp_path / "out" / "00000.parquet").to_pylist()
    assert [row["url"] for row in rows] == ["http://a.example/0.jpg", ""] and rows[1]["status"] == "failed_to_download"
    assert rows[1]["error_message"].startswith("input: l.jsonl line 2: field 'caption' holds a lone surrogate")
    r = download([SURROGATE], "out2")
    assert r.returncode == 2 and "l.jsonl: line 1: field 'caption' holds a lone surrogate" in r.stderr, r.stderr


def test_a_run_plans_the_good_lines_and_records_the_bad_ones(tmp_path):
    """In `clipcrawl run` a bad line has no URL to plan: it is left out and named in run.json."""
    from clipcrawl.base.layout import DatasetLayout
    from clipcrawl.pipelines.plan import collect
    from clipcrawl.pipelines.runstate import RunState
    from clipcrawl.schemas.config import RunConfig, parse_config

    path = tmp_path / "l.jsonl"
    path.write_text("\n".join([GOOD[0], SURROGATE, GOOD[1], "{broken"]) + "\n")
    cfg = parse_config({"dataset": str(tmp_path / "d"), "sources": {"urls": {"path": str(path)}}}, RunConfig, "t")
    st = RunState(run=1)
    folders = collect(cfg, DatasetLayout(cfg.dataset), st)
    pairs = pq.read_table(f"{folders[0]}/00000.parquet").to_pylist()
    assert [p["url"] for p in pairs] == ["http://a.example/0.jpg", "http://a.example/1.jpg"]
    urls = st.sources["urls"]
    assert urls["unusable_lines"] == 2
    assert "line 2" in urls["unusable_examples"][0] and "surrogate" in urls["unusable_examples"][0]
    assert "line 4" in urls["unusable_examples"][1]
