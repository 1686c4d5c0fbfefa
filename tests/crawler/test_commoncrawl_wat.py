"""WAT records -> pairs, and agreement between WAT-derived and HTML-derived pairs of one page."""

from __future__ import annotations

import contextlib
import json

import pytest

from clipcrawl.crawler.commoncrawl.page import Skip, noai_directives, unescape_entities
from clipcrawl.crawler.commoncrawl.records import iter_records
from clipcrawl.crawler.commoncrawl.warc import page_from_response
from clipcrawl.crawler.commoncrawl.wat import page_from_wat
from tests.crawler.test_commoncrawl_records import wat_record

EUGENE = "warc/eugeneware-warc/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc"
PHOTO_PAGE = "http://0pointer.de/photos/?gallery=Australia&photo=496"


def _page(rec: dict):
    return page_from_wat(rec["body"], rec["uri"])


def test_img_links_with_alt_become_pairs_resolved_and_normalised():
    links = [
        {"path": "IMG@/src", "url": "./img/a b.jpg", "alt": "  First   image "},
        {"path": "IMG@/src", "url": "/img/b.jpg?x=1&amp;y=2", "alt": "Tom &amp; Jerry"},
        {"path": "IMG@/src", "url": "//cdn.example.net/c.webp", "title": "Title only"},
        {"path": "IMG@/src", "url": "http://other.org/d.png", "alt": ""},  # no caption
        {"path": "IMG@/src", "url": "data:image/gif;base64,R0lGOD", "alt": "inline"},
        {"path": "IMG@/src", "url": "icons/logo.SVG", "alt": "Logo"},
        {"path": "IMG@/src", "url": "javascript:void(0)", "alt": "js"},
        {"path": "A@/href", "url": "/next.html", "text": "Next"},
        {"path": "IMG@/longdesc", "url": "/desc.html", "alt": "not an image"},
        {"path": "IMG@/src", "url": "./img/a b.jpg", "alt": "First image"},  # duplicate in page
    ]
    page = _page(wat_record("https://example.com/dir/page.html?q=1", links,
                            head={"Title": " Cats &amp; dogs ", "Metas": [{"name": "description", "content": "x"}]},
                            headers={"Content-Type": "text/html", "Content-Language": "de-de, en"}))
    assert page.url == "https://example.com/dir/page.html?q=1"
    assert page.title == "Cats & dogs" and page.language == "de-DE"
    assert page.date is not None and page.date.year == 2024
    got = [(c.url, c.caption, c.caption_source) for c in page.pairs]
    assert got == [
        ("https://example.com/dir/img/a%20b.jpg", "First image", "wat"),
        ("https://example.com/img/b.jpg?x=1&y=2", "Tom & Jerry", "wat"),
        ("https://cdn.example.net/c.webp", "Title only", "wat-title"),
    ]
    assert page.dropped == {"no_caption": 1, "data_uri": 1, "svg": 1, "bad_url": 1, "duplicate_in_page": 1}


def test_head_base_is_used_for_resolution():
    page = _page(wat_record("https://example.com/a/b.html", [{"path": "IMG@/src", "url": "x.jpg", "alt": "X"}],
                            head={"Base": "/static/"}))
    assert [c.url for c in page.pairs] == ["https://example.com/static/x.jpg"]


@pytest.mark.parametrize("head,headers", [
    ({"Metas": [{"name": "robots", "content": "index, noimageai"}]}, None),
    ({"Metas": [{"name": "ROBOTS", "content": "NOINDEX,follow"}]}, None),
    ({}, {"X-Robots-Tag": "noai"}),
    ({}, {"x-robots-tag": "none"}),
])
def test_noai_pages_give_no_pairs(head, headers):
    page = _page(wat_record("https://example.com/", [{"path": "IMG@/src", "url": "a.jpg", "alt": "A"}],
                            head=head, headers=headers))
    assert page.noai and page.pairs == []


def test_robots_for_other_agents_do_not_count():
    assert not noai_directives("googlebot: noindex")
    assert noai_directives("clipcrawl: noai")
    assert not noai_directives("nofollow, noarchive")


@pytest.mark.parametrize("rec,reason", [
    (wat_record("https://e.org/", [], status="404"), "http_status"),
    (wat_record("https://e.org/", [], warc_type="request"), "not_response"),
    ({"uri": "https://e.org/", "body": b'{"Envelope": {"HTTP-Response-Metadata": {'}, "bad_json"),  # cut record
    ({"uri": "https://e.org/", "body": b"not json at all"}, "bad_json"),
    ({"uri": "https://e.org/", "body": json.dumps({"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "response"},
      "Payload-Metadata": {"HTTP-Response-Metadata": {"Headers": {}}}}}).encode()}, "not_html"),
])
def test_records_without_a_page_are_skipped_with_a_reason(rec, reason):
    with pytest.raises(Skip) as e:
        _page(rec)
    assert e.value.reason == reason


def test_entities_only_terminated_references():
    assert unescape_entities("/a?x=1&amp;y=2&copy=3") == "/a?x=1&y=2&copy=3"
    assert unescape_entities("caf&#233; &lt;b&gt;") == "café <b>"


def test_lone_surrogates_in_wat_json_do_not_break_the_page():
    body = (b'{"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Target-URI": "https://s.org/"},'
            b' "Payload-Metadata": {"HTTP-Response-Metadata": {"Response-Message": {"Status": "200"},'
            b' "HTML-Metadata": {"Head": {"Title": "T\\ud800"}, "Links": [{"path": "IMG@/src",'
            b' "url": "/a\\udc00.jpg", "alt": "x\\ud83d y"}]}}}}}')
    page = page_from_wat(body)
    assert page.title == "T\ufffd"
    assert [(c.url, c.caption) for c in page.pairs] == [("https://s.org/a%EF%BF%BD.jpg", "x\ufffd y")]


# ------------------------------------------------------------------ real Common Crawl files
def _wat_pages(path):
    pages = []
    for rec in iter_records(str(path)):
        if rec.type == "metadata":
            with contextlib.suppress(Skip):
                pages.append(page_from_wat(rec.block, rec.target_uri))
    return pages


def test_eugeneware_wat_gives_the_four_img_alt_pairs(testdata):
    pages = _wat_pages(testdata / f"{EUGENE}.wat")
    assert [p.url for p in pages] == [PHOTO_PAGE]
    assert pages[0].title == "Photos"
    assert [(c.url, c.caption) for c in pages[0].pairs] == [
        ("http://0pointer.de/photos/galleries/Australia/lq/img-496.jpg", "496"),
        ("http://0pointer.de/photos/galleries/Australia/thumbs/img-495.jpg", "Previous"),
        ("http://0pointer.de/photos/galleries/Australia/thumbs/img-497.jpg", "Next"),
        ("http://creativecommons.org/images/public/somerights20.png", "Creative Commons License"),
    ]


def test_wat_and_html_pairs_of_the_same_page_agree(testdata):
    wat = _wat_pages(testdata / f"{EUGENE}.wat")[0]
    html = next(page_from_response(r, 5_000_000) for r in iter_records(str(testdata / EUGENE))
                if r.type == "response" and r.target_uri == PHOTO_PAGE)
    assert html.url == wat.url and html.title == wat.title
    # Same URLs and captions in the same order. The HTML path knows more: the declared sizes
    # (WAT links carry none) and which attribute the caption came from.
    assert [(c.url, c.caption) for c in html.pairs] == [(c.url, c.caption) for c in wat.pairs]
    assert [(c.width, c.height) for c in html.pairs][:3] == [(640, 427), (80, 53), (80, 53)]
    assert {c.caption_source for c in html.pairs} == {"alt"} and {c.caption_source for c in wat.pairs} == {"wat"}
