"""Record iteration and HTTP parsing of the Common Crawl reader, on WARC/WAT files made here.

The generators below (warcio's WARCWriter, and a raw writer for records warcio would not write)
are also used by the other ``test_commoncrawl_*`` modules.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from clipcrawl.crawler.commoncrawl.http import dechunk, decode_body, is_html, parse_http
from clipcrawl.crawler.commoncrawl.records import ArchiveError, ReadInfo, clean_target_uri, iter_records

PAGE = b"""<!doctype html><html lang="en"><head><title>Cats &amp; dogs</title></head><body>
<img src="/img/cat.jpg" alt="A grey cat" width="640" height="480">
<img src="dog.png" alt="  A   dog  ">
<img src="data:image/png;base64,AAAA" alt="inline">
<img src="logo.svg" alt="Logo">
<img src="nocaption.jpg">
</body></html>"""


# ------------------------------------------------------------------ generators
def http_response(body: bytes, content_type: str = "text/html; charset=utf-8", status: str = "200 OK",
                  extra: list[tuple[str, str]] | None = None):
    from warcio.statusandheaders import StatusAndHeaders

    headers = [("Content-Type", content_type), *(extra or [])]
    return StatusAndHeaders(status, headers, protocol="HTTP/1.1")


def write_warc(path: Path, records: list[dict], gz: bool = True) -> Path:
    """records: {"uri", "type" (response|request|metadata|revisit|resource), "body", "http": StatusAndHeaders,
    "content_type" (WARC), "headers" (extra WARC headers)}; written with warcio's WARCWriter."""
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=gz)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "clipcrawl tests"}))
        for r in records:
            kind = r.get("type", "response")
            http = r.get("http")
            if http is None and kind in ("response", "request", "revisit"):
                http = http_response(b"")
            rec = w.create_warc_record(
                r["uri"], kind, payload=io.BytesIO(r.get("body", b"")), http_headers=http,
                warc_content_type=r.get("content_type"),
                warc_headers_dict=r.get("headers") or {},
            )
            w.write_record(rec)
    return path


def raw_record(kind: str, uri: str, block: bytes, headers: dict[str, str] | None = None,
               content_type: str = "application/http; msgtype=response", gz: bool = True,
               date: str = "2024-05-18T01:58:10Z") -> bytes:
    """One WARC record written by hand (for HTTP messages warcio would rewrite)."""
    head = [
        "WARC/1.0", f"WARC-Type: {kind}", f"WARC-Target-URI: {uri}", f"WARC-Date: {date}",
        f"WARC-Record-ID: <urn:uuid:{abs(hash((kind, uri, block))):032x}>",
        f"Content-Type: {content_type}", f"Content-Length: {len(block)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + block + b"\r\n\r\n"
    return gzip.compress(data) if gz else data


def wat_record(page_url: str, links: list[dict], head: dict | None = None, status: str = "200",
               headers: dict | None = None, warc_type: str = "response") -> dict:
    """A WAT metadata record (dict for write_warc) as Common Crawl writes it."""
    doc = {
        "Container": {"Filename": "CC-MAIN-test.warc.gz", "Compressed": True},
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Metadata": {"WARC-Type": warc_type, "WARC-Target-URI": page_url,
                                     "WARC-Date": "2024-05-18T01:58:10Z"},
            "Payload-Metadata": {
                "Actual-Content-Type": "application/http; msgtype=response",
                "HTTP-Response-Metadata": {
                    "Response-Message": {"Status": status, "Version": "HTTP/1.1", "Reason": "OK"},
                    "Headers": headers or {"Content-Type": "text/html"},
                    "HTML-Metadata": {"Head": head or {}, "Links": links},
                },
            },
        },
    }
    return {"uri": page_url, "type": "metadata", "body": json.dumps(doc).encode(), "content_type": "application/json"}


# ------------------------------------------------------------------ tests
def test_clean_target_uri_strips_angle_brackets():
    assert clean_target_uri("<https://example.org/a b>") == "https://example.org/a b"
    assert clean_target_uri("  http://x.org/ ") == "http://x.org/"
    assert clean_target_uri("<>") is None
    assert clean_target_uri(None) is None


@pytest.mark.parametrize("gz", [True, False])
def test_iterates_generated_warc(tmp_path, gz):
    p = write_warc(tmp_path / ("a.warc.gz" if gz else "a.warc"), [
        {"uri": "<https://example.org/page>", "body": PAGE, "http": http_response(PAGE)},
        {"uri": "https://example.org/page", "type": "request", "http": None},
        {"uri": "https://example.org/x.json", "type": "metadata", "body": b"{}", "content_type": "application/json"},
    ], gz=gz)
    recs = list(iter_records(str(p)))
    assert [r.type for r in recs] == ["warcinfo", "response", "request", "metadata"]
    resp = recs[1]
    assert resp.target_uri == "https://example.org/page"
    assert not resp.cut and resp.declared_length == len(resp.block)
    msg = parse_http(resp.block)
    assert msg.status == 200 and msg.mime_type == "text/html" and msg.body == PAGE


def test_missing_file_is_an_archive_error(tmp_path):
    with pytest.raises(ArchiveError, match="no such file"):
        list(iter_records(str(tmp_path / "nope.warc.gz")))


def test_cut_gzip_yields_the_readable_part_and_flags_it(tmp_path):
    full = write_warc(tmp_path / "full.warc.gz", [{"uri": "https://e.org/", "body": PAGE * 50,
                                                   "http": http_response(PAGE)}]).read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(full[: len(full) - 50])
    recs = []
    try:
        for r in iter_records(str(cut)):
            recs.append(r)
    except ArchiveError:
        pass
    assert recs and recs[-1].type == "response" and recs[-1].cut
    assert 0 < len(recs[-1].block) < recs[-1].declared_length


def test_garbage_after_records_raises_after_yielding_them(tmp_path):
    p = tmp_path / "g.warc.gz"
    p.write_bytes(raw_record("response", "http://e.org/", b"HTTP/1.1 200 OK\r\n\r\nhi") + b"\x00garbage" * 100)
    got, err = [], None
    try:
        for r in iter_records(str(p)):
            got.append(r)
    except ArchiveError as e:
        err = str(e)
    assert [r.type for r in got] == ["response"]
    assert err and "after record 1" in err


def test_pure_garbage_fails_at_first_record(tmp_path):
    p = tmp_path / "junk.warc"
    p.write_bytes(b"this is not a WARC file\n" * 100)
    info = ReadInfo()
    with pytest.raises(ArchiveError, match="first record"):
        list(iter_records(str(p), info=info))


def test_max_block_bytes_caps_without_flagging_cut(tmp_path):
    p = write_warc(tmp_path / "big.warc.gz", [{"uri": "https://e.org/", "body": b"x" * 100_000,
                                               "http": http_response(b"")}])
    resp = [r for r in iter_records(str(p), max_block_bytes=1000) if r.type == "response"][0]
    assert len(resp.block) == 1000 and resp.capped and not resp.cut


def test_parse_http_lf_only_and_folding():
    msg = parse_http(b"HTTP/1.0 200 OK\nContent-Type: text/html;\n charset=EUC-JP\nX-A: 1\nX-A: 2\n\n<html>")
    assert msg.status == 200 and msg.header("content-type") == "text/html; charset=EUC-JP"
    assert msg.header("x-a") == "1, 2" and msg.body == b"<html>"
    assert parse_http(b"GET / HTTP/1.1\r\n\r\n") is None
    assert parse_http(b"HTTP/1.1 301 Moved\r\nLocation: /x").status == 301


def test_dechunk_and_tolerant_decoding():
    assert dechunk(b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n") == b"Wikipedia"
    assert dechunk(b"<html>not chunked</html>") == b"<html>not chunked</html>"
    gz = gzip.compress(PAGE)
    msg = parse_http(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + gz)
    assert decode_body(msg) == PAGE
    cut = parse_http(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + gz[: len(gz) // 2])
    assert PAGE.startswith(decode_body(cut)[:50])  # the decodable start is kept
    stored_plain = parse_http(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + PAGE)  # ClueWeb09
    assert decode_body(stored_plain) == PAGE


def test_is_html_declared_or_sniffed():
    html = parse_http(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n")
    assert is_html(html, b"anything")
    vague = parse_http(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
    assert is_html(vague, b"\xef\xbb\xbf  <!DOCTYPE html><html>")
    assert not is_html(vague, b"%PDF-1.4")
    image = parse_http(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n")
    assert not is_html(image, b"<html>")


def test_testdata_arc_is_read_through_warcio(testdata):
    info = ReadInfo()
    recs = list(iter_records(str(testdata / "warc/warcio/example.arc.gz"), info=info))
    assert info.reader == "warcio" and "FastWARC" in (info.note or "")
    assert [r.type for r in recs] == ["warcinfo", "response"]
    assert recs[1].target_uri == "http://example.com/" and not recs[1].cut


def test_cut_inside_a_record_left_unread_is_still_noticed(tmp_path):
    import os

    full = write_warc(tmp_path / "f.warc.gz", [
        {"uri": "https://e.org/", "body": PAGE, "http": http_response(PAGE)},
        {"uri": "https://e.org/", "type": "resource", "body": os.urandom(50_000), "content_type": "image/jpeg"},
    ]).read_bytes()
    cut = tmp_path / "c.warc.gz"
    cut.write_bytes(full[: len(full) - 5000])
    recs = list(iter_records(str(cut), read_types=frozenset({"response"})))
    assert [r.type for r in recs] == ["warcinfo", "response", "resource"]
    assert recs[0].block == b"" and recs[0].capped and not recs[0].cut  # skipped, complete
    assert not recs[1].cut and recs[1].block
    assert recs[2].block == b"" and recs[2].cut


def test_content_decoding_is_capped():
    brotli = pytest.importorskip("brotli")
    bomb = b"<html>" + b"a" * 5_000_000
    for coding, data in (("br", brotli.compress(bomb)), ("gzip", gzip.compress(bomb))):
        msg = parse_http(f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\n\r\n".encode() + data)
        out = decode_body(msg, limit=10_000)
        assert out.startswith(b"<html>aaa") and len(out) <= 10_000, coding


def test_wrong_content_length_is_one_clipcrawl_warning_not_warcio_stderr(tmp_path, capfd, caplog):
    """Issue 25 item 9c: warcio's raw 'WARNING: Record not followed by newline' goes through our logging."""
    ok = b"HTTP/1.1 200 OK\r\n\r\nhello world"
    first = raw_record("response", "http://e.org/", ok, gz=False).replace(
        f"Content-Length: {len(ok)}".encode(), f"Content-Length: {len(ok) - 5}".encode())
    p = tmp_path / "bad.warc"
    p.write_bytes(first + raw_record("response", "http://e.org/2", b"HTTP/1.1 200 OK\r\n\r\nhi", gz=False))
    with caplog.at_level("WARNING", logger="clipcrawl"):
        recs = list(iter_records(str(p)))
    assert [r.target_uri for r in recs] == ["http://e.org/", "http://e.org/2"]
    assert "Record not followed" not in capfd.readouterr().err
    warned = [r.getMessage() for r in caplog.records if "not followed by a blank line" in r.getMessage()]
    assert len(warned) == 1 and str(p) in warned[0] and "offset" in warned[0]
