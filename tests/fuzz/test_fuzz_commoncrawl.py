"""WARC/WAT readers on arbitrary bytes: records, a Skip status, or an ArchiveError, never a crash."""

from __future__ import annotations

import contextlib
import gzip
import json
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from clipcrawl.crawler.commoncrawl.http import decode_body, parse_http
from clipcrawl.crawler.commoncrawl.page import Skip
from clipcrawl.crawler.commoncrawl.records import ArchiveError, RawRecord, iter_records
from clipcrawl.crawler.commoncrawl.warc import page_from_response
from clipcrawl.crawler.commoncrawl.wat import page_from_wat

from .conftest import FUZZ


def _warc(block: bytes, declared: int | None, wtype: str, uri: str) -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: {wtype}\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
            f"Content-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(block) if declared is None else declared}\r\n\r\n").encode()
    return head + block + b"\r\n\r\n"


HTTP = st.builds(lambda status, headers, body: f"HTTP/1.1 {status}\r\n{headers}\r\n\r\n".encode() + body,
                 st.sampled_from(["200 OK", "404", "", "abc", "200"]),
                 st.sampled_from(["Content-Type: text/html", "Content-Encoding: gzip", "Transfer-Encoding: chunked",
                                  "Content-Encoding: br", "Content-Type: text/html; charset=x", ""]),
                 st.binary(max_size=200) | st.just(b"<html><img src=a.jpg alt='a cat'></html>"))


@FUZZ
@given(records=st.lists(st.tuples(HTTP | st.binary(max_size=200), st.none() | st.integers(0, 500),
                                  st.sampled_from(["response", "metadata", "request", "warcinfo"]),
                                  st.sampled_from(["http://example.com/", "", "<http://a.b/>", "x"])), max_size=4),
       junk=st.binary(max_size=60), gz=st.booleans(), cut=st.integers(0, 50))
def test_iter_records_on_damaged_warcs(records, junk, gz, cut):
    data = b"".join(_warc(*r) for r in records) + junk
    if gz:
        data = gzip.compress(data)
    data = data[: max(0, len(data) - cut)]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.warc.gz"
        p.write_bytes(data)
        try:
            for rec in iter_records(str(p)):
                assert isinstance(rec, RawRecord)
                with contextlib.suppress(Skip):
                    page_from_response(rec, 100_000)
        except ArchiveError:
            pass


@FUZZ
@given(block=HTTP | st.binary(max_size=300))
def test_http_parsing(block):
    msg = parse_http(block)
    if msg is not None:
        decode_body(msg, limit=100_000)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(
                           st.sampled_from(["Envelope", "Payload-Metadata", "HTTP-Response-Metadata",
                                            "HTML-Metadata", "Head", "Links", "Metas", "url", "path", "alt",
                                            "Title", "WARC-Header-Metadata", "WARC-Target-URI", "Headers",
                                            "content", "name", "x"]), c, max_size=4), max_leaves=20)


@FUZZ
@given(doc=JSONISH, raw=st.binary(max_size=200), use_raw=st.booleans())
@example(doc={"Envelope": {"WARC-Header-Metadata": True}, "HTTP-Response-Metadata": None}, raw=b"", use_raw=False)
@example(doc={"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": 3, "WARC-Date": []}, "Payload-Metadata": {
    "HTTP-Response-Metadata": {"HTML-Metadata": {"Head": {"Title": 5}, "Links": 7}}}}}, raw=b"", use_raw=False)
def test_page_from_wat(doc, raw, use_raw):
    payload = raw if use_raw else json.dumps(doc).encode()
    if not use_raw:
        payload = payload.replace(b'"x"', b'"HTTP-Response-Metadata"', 1)
    with contextlib.suppress(Skip):
        page_from_wat(payload, "http://example.com/")
