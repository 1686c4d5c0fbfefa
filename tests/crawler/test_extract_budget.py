"""Hostile pages (issue 24): parsing has a budget (clipcrawl.crawler.parsebudget), extraction after the
parse is linear, texts are capped; a page over the budget is a page failure with a reason in the crawl
and in the Common Crawl reader, never a stalled worker. Real pages pass unchanged."""

from __future__ import annotations

import json
import time

import pytest
from aiohttp import web
from selectolax.lexbor import LexborHTMLParser

from clipcrawl.base.captions import MAX_TEXT_CHARS
from clipcrawl.crawler.extract import PageTooComplex, extract_page
from clipcrawl.crawler.parsebudget import MAX_DEPTH, _TreeCost, check_parse_budget

URL = "http://example.com/page.html"


def deep_divs(n: int) -> bytes:
    """The issue's page: ``n`` nested divs around one captioned image."""
    body = "<div>" * n + '<img src="a.jpg" alt="deep">' + "</div>" * n
    return f"<html><head><title>t</title></head><body>{body}</body></html>".encode()


def lexbor_tree(html: str) -> tuple[int, int]:
    """(depth, elements) of Lexbor's own tree."""
    tree = LexborHTMLParser(html)
    depth = n = 0
    todo = [(tree.root, 1)]
    while todo:
        node, d = todo.pop()
        depth, n = max(depth, d), n + 1
        child = node.child
        while child is not None:
            if child.tag not in ("-text", "_text", "-comment", "_comment", "!doctype", "-doctype"):
                todo.append((child, d + 1))
            child = child.next
    return depth, n


def sketch(html: str) -> _TreeCost:
    t = _TreeCost(10**9, 10**9)
    t.feed(html)
    return t


def test_200k_nested_divs_fail_fast_with_a_reason():
    """2.2 MB, under max_page_bytes: Lexbor took 162 CPU-seconds on it (the Python extraction
    around it was 2 ms of that)."""
    html = deep_divs(200_000)
    t = time.process_time()
    with pytest.raises(PageTooComplex, match=f"page over the parse budget: elements nested deeper than {MAX_DEPTH}"):
        extract_page(html, URL)
    assert time.process_time() - t < 2


#: what Lexbor does with each when nothing stops it, measured (selectolax 1.0.2)
BLOWUPS = {
    "nested divs, never closed": "<div>" * 100_000,  # 0.5 s at 20,000, quadratic
    "spans kept open by ignored end tags": "<span><div></span></div>" * 50_000,  # </span> ignored: depth +1 each
    "nested lists": "<ul><li>x" * 50_000,  # 2.7 s at 20,000
    "unclosed fonts with distinct attributes": "".join(f"<font size={i}>x" for i in range(50_000)),  # 3.3 s at 20k
    "formatting re-created in every paragraph": "".join(f"<p><font size={i}>x</p>" for i in range(3_000)),
    # ^ 2,000 repeats: 2 million elements, 1.5 s, 700 MB
    "formatting re-created without nesting": "<p>" + "".join(f"<b id={i}>" for i in range(1_500)) + "</p>"
                                             + "<div>x</div>" * 1_500,  # 2.25 million elements
    "adoption agency": "<b><div></b>" * 50_000,
    "misnested formatting": "<i><b>x</i>" * 100_000,
    "nested tables": "<table><tr><td>" * 50_000,
    "svg": "<svg>" + "<g>" * 100_000,
    "svg links": "<svg><a>xx" * 50_000,  # not HTML <a>: they nest
    "mathml buttons": "<button><math><g>x" * 50_000,
    "self-closed divs": "<div/>" * 100_000,  # '/>' means nothing on an HTML element
}


@pytest.mark.parametrize("name", BLOWUPS)
def test_known_blowups_are_refused_fast(name):
    html = ("<!doctype html><html><body>" + BLOWUPS[name]).encode()
    t = time.process_time()
    with pytest.raises(PageTooComplex, match="page over the parse budget"):
        extract_page(html, URL)
    assert time.process_time() - t < 2, name


def test_raw_text_is_not_read_as_tags():
    """Tags inside script/style/textarea/title/comments are text; inside svg a <style> is an element."""
    nested = "<div>" * 2 * MAX_DEPTH
    for wrap in ("<script>{}</script>", "<STYLE>{}</style >", "<textarea>{}</textarea>", "<!--{}-->",
                 "<title>{}</title>", "<script>{}", "<plaintext>{}"):
        assert sketch("<html><body>" + wrap.format(nested) + "<p>x").depth <= 4, wrap
    assert sketch("<html><body><svg><style>" + nested).depth > 2 * MAX_DEPTH  # the divs break out and nest
    for comment in ("<!-->", "<!--->", "<!-- x --!>"):  # complete comments, the tags after them count
        assert sketch("<html><body>" + comment + nested).depth > 2 * MAX_DEPTH, comment


def test_cheap_bounds_clear_flat_pages_and_catch_re_created_formatting():
    """Pages are only sketched when a cheap bound cannot clear them; on bytes and on text alike."""
    flat = "<html><body>" + '<p><img src="a.jpg" alt="a"> <b>bold</b></p>' * 2000
    t = time.process_time()
    check_parse_budget(flat, flat.encode())
    assert time.process_time() - t < 0.05
    bomb = "<html><body>" + "".join(f"<p><font size={i}>x</p>" for i in range(2000))  # 6,000 tags, 2 M elements
    for raw in (bomb.encode(), None):
        with pytest.raises(PageTooComplex):
            check_parse_budget(bomb, raw)


def test_page_under_the_budget_still_extracts():
    pairs = extract_page(deep_divs(MAX_DEPTH - 10), URL).pairs
    assert [(p.url, p.caption) for p in pairs] == [("http://example.com/a.jpg", "deep")]


def test_real_pages_pass_and_the_sketch_follows_lexbor(testdata):
    """No testdata page is refused; where the sketch runs it is within 2 of Lexbor's depth and 10% of its
    element count (the 220 pages nest at most 40 deep)."""
    root = testdata / "html"
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:
        body = (root / r["file"]).read_bytes()
        extract_page(body, r.get("original_url") or URL)  # raises if refused
        text = body.decode("utf-8", "replace")
        if text.count("<") < 4000:
            continue
        (depth, n), s = lexbor_tree(text), sketch(text)
        assert abs(s.depth - depth) <= 2 and abs(s.elements - n) <= 0.1 * n, (r["file"], s.depth, depth, s.elements, n)


# ---------------------------------------------------------------- linear extraction after the parse
def test_picture_with_many_sources_and_images_is_linear():
    """Each image re-read every source of its picture: 4,000 of each took 87 CPU-seconds."""
    n = 4000
    html = ("<html><body><picture>" + '<source srcset="a.jpg 100w">' * n
            + "".join(f'<img src="i{i}.jpg" alt="x{i}">' for i in range(n)) + "</picture>").encode()
    t = time.process_time()
    pairs = extract_page(html, URL).pairs
    assert time.process_time() - t < 2
    assert len(pairs) == n and {p.url for p in pairs} == {"http://example.com/a.jpg"}


def test_picture_source_choice_is_unchanged():
    """The best source is found once per picture; it must rank against the image's own candidates as
    all the sources did: sources win ties, unusable ones never win, raster types first."""
    html = ("<picture><source type=image/svg+xml srcset='v.svg 9000w'><source srcset='data:x 5000w, s1.jpg 800w'>"
            "<source type=image/avif srcset='av.avif 3000w'><source srcset='s2.jpg 800w'>"
            "<img src=a.jpg srcset='i.jpg 800w' alt=tie><img src=b.jpg srcset='j.jpg 900w' alt=wider></picture>"
            "<picture><source srcset='x.svg 2000w'><img src=c.jpg srcset='k.jpg 10w' alt=svg-only></picture>"
            "<picture><source type=image/avif srcset='only.avif 100w'><img src=d.jpg alt=avif></picture>"
            "<picture><noscript><img srcset='n.jpg 1x, n2.jpg 2x' alt=ns></noscript>"
            "<source srcset='p.jpg 1x, p3.jpg 3x'></picture>")
    got = {p.caption: p.url.rsplit("/", 1)[1] for p in extract_page(html.encode(), URL).pairs}
    assert got == {"tie": "s1.jpg", "wider": "j.jpg", "svg-only": "k.jpg", "avif": "only.avif", "ns": "p3.jpg"}


def test_nested_figures_are_linear_and_the_nearest_caption_wins():
    """Each figure collected every image inside it: 4,000 nested figures took 5.9 CPU-seconds."""
    html = ("<html><body>" + "<figure><figcaption>c</figcaption>" * 500
            + "".join(f'<img src="i{i}.jpg">' for i in range(20_000))).encode()
    t = time.process_time()
    pairs = extract_page(html, URL).pairs
    assert time.process_time() - t < 4
    assert len(pairs) == 20_000 and {(p.caption, p.caption_source) for p in pairs} == {("c", "figcaption")}
    html = ("<figure><figcaption>outer</figcaption><img src=1.jpg>"
            "<figure><img src=2.jpg><figure><figcaption>inner</figcaption><div><img src=3.jpg></div></figure>"
            "<img src=4.jpg></figure></figure>"
            "<figure><img src=5.jpg><figure><figcaption>first</figcaption></figure><figcaption>second</figcaption>"
            "</figure><figure><figcaption>  </figcaption><img src=6.jpg alt=alt></figure>")
    got = {p.url.rsplit("/", 1)[1]: (p.caption, p.figcaption) for p in extract_page(html.encode(), URL).pairs}
    # a figure's caption is its first <figcaption> anywhere inside, a nested figure's included (as before)
    assert got == {"1.jpg": ("outer", "outer"), "2.jpg": ("inner", "inner"), "3.jpg": ("inner", "inner"),
                   "4.jpg": ("inner", "inner"), "5.jpg": ("first", "first"), "6.jpg": ("alt", None)}


# ---------------------------------------------------------------- texts are capped
def test_a_2mb_alt_is_cut_to_the_text_maximum():
    alt = "word " * 400_000  # 2 MB
    html = (f'<html><head><title>{"t " * 100_000}</title></head><body>'
            f'<img src="a.jpg" alt="{alt}" title="{alt}"><figure><img src=b.jpg><figcaption>{alt}</figcaption>'
            "</figure></body></html>").encode()
    t = time.process_time()
    page = extract_page(html, URL)
    assert time.process_time() - t < 1
    a, b = page.pairs
    assert a.caption == a.alt == a.title == b.caption == ("word " * 1000)[:MAX_TEXT_CHARS]  # "word ... word w"
    assert len(a.caption) == MAX_TEXT_CHARS and b.caption_source == "figcaption"
    assert len(page.title) <= MAX_TEXT_CHARS


# ---------------------------------------------------------------- recorded as a page failure
def test_crawl_records_the_page_as_too_large_and_goes_on(tmp_path):
    from clipcrawl.crawler.crawl import crawl
    from clipcrawl.schemas.config import CrawlConfig
    from tests.crawler.site import LoopbackServer, html, page
    from tests.crawler.test_crawl import read_dir

    def make(log, srv):
        async def index(request):
            return page(html('<a href="/deep">d</a><a href="/fine">f</a><img src="/i.jpg" alt="Index image">'))

        async def deep(request):
            return web.Response(body=deep_divs(200_000), content_type="text/html")

        async def fine(request):
            return page(html('<img src="/f.jpg" alt="A fine image">'))

        app = web.Application()
        app.router.add_get("/", index)
        app.router.add_get("/deep", deep)
        app.router.add_get("/fine", fine)
        return app

    with LoopbackServer(make) as srv:
        t = time.monotonic()
        summary = crawl(CrawlConfig(seeds=[srv.base + "/"], allowed_networks=["127.0.0.0/8"], max_pages=10,
                                    retries=0, timeout=10), tmp_path / "out", progress=False)
        assert time.monotonic() - t < 30
    pages = {r["url"].rsplit("/", 1)[1]: r for r in read_dir(tmp_path / "out", "pages").to_pylist()}
    assert pages["deep"]["status"] == "too_large"
    assert pages["deep"]["error_message"] == f"crawl: page over the parse budget: elements nested deeper than {MAX_DEPTH}"
    assert pages["fine"]["status"] == pages[""]["status"] == "ok" and summary.errors == 1
    captions = set(read_dir(tmp_path / "out", "pairs").column("caption").to_pylist())
    assert captions == {"Index image", "A fine image"}


def test_commoncrawl_counts_the_page_and_reads_on(tmp_path):
    from clipcrawl.crawler.commoncrawl import read_commoncrawl
    from clipcrawl.schemas.config import CommonCrawlConfig
    from tests.crawler.test_commoncrawl_records import http_response, write_warc

    warc = write_warc(tmp_path / "a.warc.gz", [
        {"uri": "https://e.org/deep", "body": deep_divs(200_000), "http": http_response(b"")},
        {"uri": "https://e.org/fine", "body": b'<html><body><img src="f.jpg" alt="Fine"></body></html>',
         "http": http_response(b"")},
    ])
    t = time.process_time()
    s = read_commoncrawl(CommonCrawlConfig(paths=[str(warc)]), tmp_path / "out", workers=1, progress=False)
    assert time.process_time() - t < 10
    assert s.ok and s.skipped["over_parse_budget"] == 1 and s.pairs == 1
