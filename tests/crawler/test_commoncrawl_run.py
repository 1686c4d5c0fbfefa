"""read_commoncrawl end to end: output, resume, broken inputs, workers, the CLI, and every shared WARC file."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clipcrawl.crawler.commoncrawl import read_commoncrawl
from clipcrawl.crawler.commoncrawl.process import state_name
from clipcrawl.schemas.config import CommonCrawlConfig
from clipcrawl.schemas.keys import sample_key
from clipcrawl.schemas.tables import PAIRS, check
from tests.crawler.test_commoncrawl_records import PAGE, http_response, raw_record, wat_record, write_warc

NOAI_PAGE = b'<html><head><meta name="robots" content="noimageai"></head><body><img src="x.jpg" alt="X"></body></html>'


def _html(i: int) -> bytes:
    return (f'<html lang="fr"><head><title>Page {i}</title></head><body>'
            f'<img src="/a{i}.jpg" alt="Photo {i}" width="300" height="200"><img src="/b{i}.png" alt="Plan {i}">'
            f'<img src="/c{i}.gif"></body></html>').encode()


def make_warc(path: Path, n_pages: int = 3) -> Path:
    recs = []
    for i in range(n_pages):
        recs.append({"uri": f"<https://site{i}.example.org/p/{i}.html>", "body": _html(i), "http": http_response(b"")})
        recs.append({"uri": f"https://site{i}.example.org/p/{i}.html", "type": "request", "http": None})
    recs += [
        {"uri": "https://e.org/noai", "body": NOAI_PAGE, "http": http_response(b"")},
        {"uri": "https://e.org/img.jpg", "body": b"\xff\xd8\xff", "http": http_response(b"", "image/jpeg")},
        {"uri": "https://e.org/404", "body": PAGE, "http": http_response(b"", status="404 Not Found")},
        {"uri": "https://e.org/trunc", "body": PAGE, "http": http_response(b""), "headers": {"WARC-Truncated": "length"}},
        {"uri": "https://e.org/xrobots", "body": PAGE, "http": http_response(b"", extra=[("X-Robots-Tag", "noai")])},
    ]
    return write_warc(path, recs)


def make_wat(path: Path) -> Path:
    return write_warc(path, [
        wat_record("https://wat.example.org/a", [{"path": "IMG@/src", "url": "i/1.jpg", "alt": "One"},
                                                 {"path": "IMG@/src", "url": "i/2.jpg", "title": "Two"}],
                   head={"Title": "WAT page"}),
        wat_record("https://wat.example.org/a", [], warc_type="request"),
    ])


def _pairs(out: Path):
    files = sorted((out / "pairs").glob("*.parquet"))
    tables = [pq.read_table(f) for f in files]
    for t in tables:
        check(t, PAIRS)
    return [r for t in tables for r in t.to_pylist()]


def _cfg(paths, **kw) -> CommonCrawlConfig:
    return CommonCrawlConfig(paths=[str(p) for p in paths], **kw)


def test_warc_and_wat_to_pairs(tmp_path):
    warc, wat = make_warc(tmp_path / "a.warc.gz"), make_wat(tmp_path / "b.wat.gz")
    out = tmp_path / "out"
    s = read_commoncrawl(_cfg([warc, wat]), out, workers=1, progress=False)
    assert (s.inputs, s.done, s.failed, s.ok) == (2, 2, 0, True)
    assert s.pages == 3 + 1 + 1 + 1 + 1  # 3 pages, noai page, truncated page, X-Robots-Tag page, WAT page
    assert s.noai_pages == 2 and s.truncated_records == 1
    assert s.skipped["not_html"] == 1 and s.skipped["http_status"] == 1 and s.skipped["request"] == 3
    assert s.skipped["not_response"] == 1 and s.dropped["no_caption"] >= 3
    rows = _pairs(out)
    assert len(rows) == s.pairs == 3 * 2 + 2 + 2  # 2 per generated page, 2 from PAGE (truncated), 2 WAT
    r0 = next(r for r in rows if r["caption"] == "Photo 0")
    assert r0["url"] == "https://site0.example.org/a0.jpg" and r0["page_url"] == "https://site0.example.org/p/0.html"
    assert (r0["page_title"], r0["page_language"], r0["caption_source"]) == ("Page 0", "fr", "alt")
    assert (r0["img_width_attr"], r0["img_height_attr"]) == (300, 200) and r0["found_at"] is not None
    assert all(r["source"] == "commoncrawl" and r["key"] == sample_key(r["url"], r["caption"]) for r in rows)
    wat_rows = sorted((r["url"], r["caption"], r["caption_source"], r["page_title"]) for r in rows
                      if r["page_url"] == "https://wat.example.org/a")
    assert wat_rows == [("https://wat.example.org/i/1.jpg", "One", "wat", "WAT page"),
                        ("https://wat.example.org/i/2.jpg", "Two", "wat-title", "WAT page")]
    state = json.loads((out / "state" / f"{state_name(str(warc))}.json").read_text())
    assert state["status"] == "done" and state["records"] == 1 + 3 * 2 + 5 and state["chunks"]


def test_format_restricts_record_kinds(tmp_path):
    warc, wat = make_warc(tmp_path / "a.warc.gz"), make_wat(tmp_path / "b.wat.gz")
    s = read_commoncrawl(_cfg([warc, wat], format="wat"), tmp_path / "o1", workers=1, progress=False)
    assert s.pairs == 2 and s.skipped["response_in_wat_mode"] == 8
    s = read_commoncrawl(_cfg([warc, wat], format="warc"), tmp_path / "o2", workers=1, progress=False)
    assert s.pairs == 8 and s.skipped["wat_in_warc_mode"] == 2


def test_resume_skips_finished_inputs_and_redoes_unfinished_ones(tmp_path):
    a, b = make_warc(tmp_path / "a.warc.gz"), make_warc(tmp_path / "b.warc.gz", n_pages=5)
    out = tmp_path / "out"
    first = read_commoncrawl(_cfg([a, b], pairs_per_file=3), out, workers=1, progress=False)
    rows = _pairs(out)
    assert first.done == 2 and len(rows) == first.pairs == 8 + 12
    again = read_commoncrawl(_cfg([a, b], pairs_per_file=3), out, workers=1, progress=False)
    assert (again.already_done, again.done, again.records) == (2, 0, 0)
    # b was interrupted: its state says running, and its chunks are on disk
    sb = out / "state" / f"{state_name(str(b))}.json"
    st = json.loads(sb.read_text())
    st["status"] = "running"
    sb.write_text(json.dumps(st))
    third = read_commoncrawl(_cfg([a, b], pairs_per_file=3), out, workers=1, progress=False)
    assert (third.already_done, third.done, third.pairs) == (1, 1, 12)
    keys = [r["key"] for r in _pairs(out)]
    assert len(keys) == 20 and sorted(keys) == sorted(r["key"] for r in rows)  # old chunks of b were removed


def test_max_records_sample_is_extended_by_a_larger_limit(tmp_path):
    a = make_warc(tmp_path / "a.warc.gz")
    out = tmp_path / "out"
    s = read_commoncrawl(_cfg([a], max_records=3), out, workers=1, progress=False)
    assert s.records == 3 and s.pairs == 2
    assert read_commoncrawl(_cfg([a], max_records=2), out, workers=1, progress=False).already_done == 1
    s = read_commoncrawl(_cfg([a]), out, workers=1, progress=False)
    assert s.already_done == 0 and s.pairs == 8 and len(_pairs(out)) == 8


def test_broken_inputs_are_recorded_and_the_run_goes_on(tmp_path):
    good = make_warc(tmp_path / "good.warc.gz")
    full = make_warc(tmp_path / "full.warc.gz", n_pages=1).read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(full[: len(full) - 40])
    junk = tmp_path / "junk.warc.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00garbage" * 50)
    trailing = tmp_path / "trailing.warc.gz"
    trailing.write_bytes(raw_record("response", "http://t.org/", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
                                    + PAGE) + b"not a record" * 20)
    out = tmp_path / "out"
    s = read_commoncrawl(_cfg([good, cut, junk, trailing]), out, workers=1, progress=False)
    assert (s.done, s.failed, s.unusable, s.ok) == (1, 3, 1, True)
    states = {p.name.split(".")[0]: json.loads(p.read_text()) for p in (out / "state").glob("*.json")}
    assert states["cut"]["status"] == "failed" and "file ends inside record" in states["cut"]["error"]
    assert states["cut"]["records"] >= 1
    assert states["junk"]["status"] == "failed" and states["junk"]["records"] == 0
    assert "first record" in states["junk"]["error"]
    assert states["trailing"]["status"] == "failed" and states["trailing"]["pairs"] == 2
    assert "after record 1" in states["trailing"]["error"]
    assert len(s.errors) == 3 and all(": " in e for e in s.errors)
    only_junk = read_commoncrawl(_cfg([junk]), tmp_path / "o2", workers=1, progress=False)
    assert not only_junk.ok


def test_two_workers_give_the_same_pairs_as_one(tmp_path):
    inputs = [make_warc(tmp_path / f"w{i}.warc.gz", n_pages=2 + i) for i in range(3)] + [make_wat(tmp_path / "t.wat.gz")]
    one = read_commoncrawl(_cfg(inputs, pairs_per_file=4), tmp_path / "one", workers=1, progress=False)
    two = read_commoncrawl(_cfg(inputs, pairs_per_file=4), tmp_path / "two", workers=2, progress=False)
    assert (two.done, two.pairs, two.records) == (one.done, one.pairs, one.records)
    k1, k2 = sorted(r["key"] for r in _pairs(tmp_path / "one")), sorted(r["key"] for r in _pairs(tmp_path / "two"))
    assert k1 == k2
    names = [p.name for p in (tmp_path / "two" / "pairs").glob("*.parquet")]
    assert len(names) == len(set(names)) == sum(len(json.loads(p.read_text())["chunks"])
                                                 for p in (tmp_path / "two" / "state").glob("*.json"))


def test_globs_and_output_readable_by_the_downloader(tmp_path):
    from clipcrawl.pipelines.inputs import find_inputs, read_url_list
    from clipcrawl.schemas.config import UrlListConfig

    make_warc(tmp_path / "x-1.warc.gz")
    make_wat(tmp_path / "x-2.wat.gz")
    out = tmp_path / "out"
    s = read_commoncrawl(_cfg([tmp_path / "x-*.w*.gz"]), out, workers=1, progress=False)
    assert s.inputs == 2 and s.pairs == 10
    assert read_commoncrawl(_cfg([tmp_path]), out, workers=1, progress=False).already_done == 2  # a folder
    cfg = UrlListConfig(path=str(out))
    assert {f.format for f in find_inputs(cfg)} == {"pairs"}
    assert read_url_list(cfg).num_rows == 10


def test_cli(tmp_path):
    from clipcrawl.cli import main

    warc = make_warc(tmp_path / "a.warc.gz")
    junk = tmp_path / "junk.warc"
    junk.write_bytes(b"nothing here\n" * 10)
    assert main(["-q", "commoncrawl", str(warc), str(junk), "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    assert main(["-q", "commoncrawl", str(junk), "--out", str(tmp_path / "o2")]) == 1
    assert main(["-q", "commoncrawl", str(tmp_path / "missing.warc.gz"), "--out", str(tmp_path / "o3")]) == 2
    assert main(["-q", "commoncrawl", str(warc), "--out", str(tmp_path / "o4"), "--format", "zip"]) == 2


# ------------------------------------------------------------------ the shared real files
EXPECTED = {  # file -> (status, pairs)
    "dolma/sample-0000.warc.gz": ("done", 57),
    "dolma/sample-0001.warc.gz": ("done", 77),
    "eugeneware-warc/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc": ("done", 858),
    "eugeneware-warc/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat": ("done", 4),
    "eugeneware-warc/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wet": ("done", 0),
    "resiliparse/clipped.warc.gz": ("failed", 7),
    "resiliparse/warcfile.warc.gz": ("done", 30),
    "warcio/example.arc.gz": ("done", 0),
    "warcio/example-trunc.warc": ("done", 0),
    "whirlwind-python/whirlwind.warc.gz": ("done", 5),
}


@pytest.mark.timeout(120)
def test_every_shared_warc_file_reads_or_fails_cleanly(testdata, tmp_path):
    files = sorted(p for p in (testdata / "warc").rglob("*") if p.is_file() and p.suffix != ".jsonl")
    reports = {}
    s = read_commoncrawl(_cfg(files), tmp_path / "out", workers=2, progress=False,
                         on_file=lambda r: reports.__setitem__(str(Path(r.input).relative_to(testdata / "warc")), r))
    assert s.inputs == len(files) == len(reports)
    for name, (status, pairs) in EXPECTED.items():
        rep = reports[name]
        assert (rep.status, rep.pairs) == (status, pairs), (name, rep)
    for rep in reports.values():
        assert rep.status in ("done", "failed")
        assert rep.status == "done" or rep.error  # a failure always says why
    clipped = reports["resiliparse/clipped.warc.gz"]
    assert "75207 of 88275 bytes" in clipped.error
    assert reports["warcio/example.arc.gz"].reader == "warcio"
    assert reports["warcio/example-trunc.warc"].reader == "fastwarc+warcio"
    # ClueWeb09: LF-only HTTP headers, Content-Encoding: gzip on plain bodies, EUC-JP; all 29 pages parse
    assert reports["resiliparse/clueweb-quirk.warc.gz"].pages == 29
    # Real crawls mark special pages noindex (MediaWiki's Special:WhatLinksHere here): counted, no pairs
    assert reports[next(k for k in EXPECTED if k.endswith(".internal.warc"))].noai_pages == 1
    rows = _pairs(tmp_path / "out")
    assert len(rows) == s.pairs
    dolma = [r for r in rows if "semanticscholar" in (r["page_url"] or "")]
    assert dolma and all(r["page_url"].startswith("https://") for r in dolma)  # <angle brackets> stripped


def test_resiliparse_cc_warc_pairs_against_its_documented_counts(testdata, tmp_path):
    """155 ``<img`` (regex count; Lexbor parses 153 elements, two are inside scripts/comments), 32
    with a non-empty alt. 30 pairs kept: one page repeats the same (url, alt) three times, which
    counts once per page. The one noai page (meta robots noindex) has no captioned image."""
    s = read_commoncrawl(_cfg([testdata / "warc/resiliparse/warcfile.warc.gz"]), tmp_path / "o", workers=1,
                         progress=False)
    assert (s.pages, s.noai_pages, s.pairs) == (16, 1, 30)
    rows = _pairs(tmp_path / "o")
    assert {r["caption_source"] for r in rows} == {"alt"}
    per_page = {}
    for r in rows:
        per_page[r["page_url"]] = per_page.get(r["page_url"], 0) + 1
    assert per_page["http://044545.com/topic/20200207/015849.html"] == 2  # 4 alts, 3 of them identical


@pytest.mark.network
def test_inputs_over_http(tmp_path):
    """fsspec URLs (here http on 127.0.0.1; s3:// and https://data.commoncrawl.org the same way),
    including the warcio fallback, which reopens the URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    serve = tmp_path / "serve"
    serve.mkdir()
    make_warc(serve / "a.warc.gz")
    make_wat(serve / "b.wat.gz")
    trailing = serve / "t.warc.gz"
    trailing.write_bytes(raw_record("response", "http://t.org/", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
                                    + PAGE) + b"not a record" * 20)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):  # noqa: ANN002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(serve)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        s = read_commoncrawl(_cfg([f"{base}/a.warc.gz", f"{base}/b.wat.gz", f"{base}/t.warc.gz",
                                   f"{base}/missing.warc.gz"]), tmp_path / "out", workers=1, progress=False)
    finally:
        server.shutdown()
    assert (s.done, s.failed, s.unusable) == (2, 2, 1)
    assert s.pairs == 8 + 2 + 2
    assert any("missing.warc.gz: not found" in e for e in s.errors) and any("t.warc.gz" in e and "after record 1" in e
                                                                 for e in s.errors)


def test_lf_only_http_and_precise_or_invalid_dates(tmp_path):
    """ClueWeb09-style LF-only HTTP headers; WARC/1.1 microsecond dates (found_at is ms); invalid dates."""
    block = b"HTTP/1.1 200 OK\nContent-Type: text/html\nContent-Encoding: gzip\n\n" + _html(7)
    p = tmp_path / "d.warc.gz"
    p.write_bytes(raw_record("response", "http://d.org/a", block, date="2021-03-04T05:06:07.123456Z")
                  + raw_record("response", "http://d.org/b", block, date="2008-10-294T05:21:46-0700"))
    s = read_commoncrawl(_cfg([p]), tmp_path / "out", workers=1, progress=False)
    assert (s.done, s.pairs) == (1, 4)
    dates = {r["page_url"]: r["found_at"] for r in _pairs(tmp_path / "out")}
    assert dates["http://d.org/b"] is None
    assert dates["http://d.org/a"].isoformat() == "2021-03-04T05:06:07.123000+00:00"
