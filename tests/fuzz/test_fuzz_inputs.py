"""URL-list readers on arbitrary files: a pairs table or a ConfigError naming the file."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from clipcrawl.pipelines.inputs import FORMATS, read_url_list
from clipcrawl.schemas.config import ConfigError, UrlListConfig

from .conftest import FUZZ, FUZZ_HEAVY

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                       lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4), max_leaves=12)
ROWS = st.lists(st.dictionaries(st.sampled_from(["url", "caption", "URL", "x", ""]), JSONISH, max_size=4),
                max_size=6)


def _read(data: bytes, fmt: str, gz: bool = False, **kw) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"list.{fmt}{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(data) if gz else data)
        try:
            t = read_url_list(UrlListConfig(path=str(path), **kw))
        except ConfigError as e:
            assert str(path) in str(e) or "--save-additional-columns" in str(e), e
            return
        assert isinstance(t, pa.Table) and {"key", "url", "caption"} <= set(t.column_names)


@FUZZ
@given(data=st.binary(max_size=400), fmt=st.sampled_from(FORMATS), gz=st.booleans())
def test_random_bytes_in_every_format(data, fmt, gz):
    _read(data, fmt, gz)


@FUZZ_HEAVY
@given(rows=ROWS, fmt=st.sampled_from(["json", "jsonl"]), encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_json_documents(rows, fmt, encoding):
    text = json.dumps(rows, ensure_ascii=False) if fmt == "json" else "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    _read(text.encode(encoding, "replace"), fmt)


@FUZZ
@given(doc=JSONISH)
def test_any_json_document(doc):
    _read(json.dumps(doc).encode(), "json")


@FUZZ
@given(cells=st.lists(st.lists(TEXT, min_size=1, max_size=4), max_size=6), sep=st.sampled_from([",", "\t"]),
       encoding=st.sampled_from(["utf-8", "latin-1", "cp1252", "utf-16"]))
def test_delimited_text(cells, sep, encoding):
    lines = [sep.join(["url", "caption"])] + [sep.join(c) for c in cells]
    _read("\n".join(lines).encode(encoding, "replace"), "csv" if sep == "," else "tsv")


BAD_LINE = st.sampled_from(['{"url": "http://x/a.jpg", "caption": "\\ud800"}', '{"url": "http://x/\\udfff.jpg"}',
                            "{", "[1, 2]", "null", '{"url": ["http://x/a.jpg"]}', '{"url": "http://x/a.jpg", "caption": 3}',
                            '{"url": "http://x/a.jpg", "caption": {"\\ud800": 1}}'])
GOOD_ROW = st.builds(lambda u, c: json.dumps({"url": f"http://x/{u}.jpg", "caption": c}, ensure_ascii=False),
                     st.integers(0, 10**6), TEXT)


@FUZZ_HEAVY
@given(lines=st.lists(st.one_of(BAD_LINE.map(lambda b: (False, b)), GOOD_ROW.map(lambda g: (True, g))), max_size=8))
def test_jsonl_bad_lines_are_rows_the_rest_is_read(lines):
    """Issue 24: one bad line (lone surrogate, not JSON, wrong type) no longer refuses the whole file."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "l.jsonl"
        path.write_text("".join(line + "\n" for _, line in lines), encoding="utf-8")
        good = [json.loads(line) for ok, line in lines if ok]
        try:
            t = read_url_list(UrlListConfig(path=str(path)))
        except ConfigError as e:
            assert not good and str(path) in str(e), e
            return
    if not good:  # no usable line: the strict reader decides, as before (a lone numeric caption is read)
        return
    rows = t.to_pylist()
    assert len(rows) == len(lines)
    for n, ((ok, _), row) in enumerate(zip(lines, rows), 1):
        assert (row.get("error_message") is None) == ok
        if not ok:
            assert row["error_message"].startswith(f"input: l.jsonl line {n}: ") and row["url"] == ""
    assert [(r["url"], r["caption"]) for r, (ok, _) in zip(rows, lines) if ok] == [(g["url"], g["caption"]) for g in good]
