"""Pairs from WARC ``response`` records: the HTML goes through the crawler's own extractor.

The page bytes are handed to :func:`clipcrawl.crawler.extract.extract_page` exactly as the live
crawler hands them, so a page gives the same pairs whether it was crawled or read from Common
Crawl. This module only decides which records are HTML pages worth extracting.
"""

from __future__ import annotations

from clipcrawl.crawler.commoncrawl.http import decode_body, is_html, parse_http
from clipcrawl.crawler.commoncrawl.page import (
    Candidate,
    PageInfo,
    Skip,
    first_language,
    noai_directives,
    parse_warc_date,
    tdm_reserved,
)
from clipcrawl.crawler.commoncrawl.records import RawRecord
from clipcrawl.crawler.urls import normalize_url


def page_from_response(rec: RawRecord, max_html_bytes: int) -> PageInfo:
    """The page and pair candidates of one ``response`` record; raises :class:`Skip` otherwise."""
    from clipcrawl.crawler.extract import PageTooComplex, extract_page

    msg = parse_http(rec.block)
    if msg is None:
        raise Skip("not_http")
    if msg.status is None or not 200 <= msg.status < 300:
        raise Skip("http_status")
    page_url = normalize_url(rec.target_uri or "")
    if page_url is None:
        raise Skip("bad_page_url")
    body = decode_body(msg, limit=max_html_bytes)
    if not body.strip():
        raise Skip("empty_payload")
    if not is_html(msg, body, rec.identified_type):
        raise Skip("not_html")
    if len(body) > max_html_bytes:
        body = body[:max_html_bytes]
    page = PageInfo(url=page_url, date=parse_warc_date(rec.date))
    if noai_directives(msg.header("x-robots-tag")) or tdm_reserved(msg.header("tdm-reservation")):
        page.noai = True
        return page
    try:
        parsed = extract_page(body, page_url, msg.header("content-type"))
    except PageTooComplex:  # nested deeper / builds more than the parse budget allows (crawler.parsebudget)
        raise Skip("over_parse_budget") from None
    page.title = parsed.title
    page.license = parsed.license
    page.language = parsed.language or first_language(msg.header("content-language"))
    if parsed.noai:
        page.noai = True
        return page
    if parsed.n_uncaptioned:
        page.dropped["no_caption"] = parsed.n_uncaptioned
    page.pairs = [Candidate(p.url, p.caption, p.caption_source, p.width, p.height, p.alt, p.figcaption, p.title) for p in parsed.pairs]
    return page
