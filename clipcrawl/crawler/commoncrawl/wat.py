"""Pairs from WAT metadata records: ``<img src alt>`` links Common Crawl already extracted.

A WAT record is JSON; the response record of an HTML page carries
``Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata`` with ``Links`` (``path ==
"IMG@/src"`` entries have ``url`` and, when the tag had them, ``alt`` and ``title``) and ``Head``
(``Title``, ``Base``, ``Metas``). Link URLs are the raw attribute values: relative, and in files
written before ia-web-commons decoded them, still entity-escaped (``&amp;``). They are resolved
against ``Head.Base`` (itself resolved against the page URL), then the page URL, and normalised
with the crawler's :func:`clipcrawl.crawler.urls.normalize_url` so keys match HTML-derived pairs.
"""

from __future__ import annotations

import json
from typing import Any

from clipcrawl.crawler.commoncrawl.page import (
    Candidate,
    PageInfo,
    Skip,
    clean_text,
    first_language,
    is_svg,
    noai_directives,
    parse_warc_date,
    tdm_reserved,
    unescape_entities,
)
from clipcrawl.crawler.urls import normalize_url

IMG_SRC = "IMG@/src"


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _str(v: Any) -> str | None:
    """A JSON value where a string is expected: the string, else None (WAT JSON is untrusted)."""
    return v if isinstance(v, str) else None


def _meta_value(metas: Any, *names: str) -> str | None:
    """Content of the first ``<meta name=... content=...>`` (or http-equiv) among ``names``."""
    if not isinstance(metas, list):
        return None
    for m in metas:
        if not isinstance(m, dict):
            continue
        key = (m.get("name") or m.get("http-equiv") or "").strip().lower()
        if key in names and isinstance(m.get("content"), str):
            return m["content"]
    return None


def _robots_noai(metas: Any) -> bool:
    if not isinstance(metas, list):
        return False
    for m in metas:
        name = (m.get("name") or "").strip().lower() if isinstance(m, dict) else ""
        if name in ("robots", "clipcrawl") and noai_directives(m.get("content")):
            return True
    return False


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    name = name.lower()
    for k, v in headers.items():
        if k.lower() == name:
            return v if isinstance(v, str) else None
    return None


def page_from_wat(payload: bytes, record_uri: str | None = None) -> PageInfo:
    """The page and pair candidates of one WAT record; raises :class:`Skip` when there is none."""
    if b'"HTTP-Response-Metadata"' not in payload:  # request/metadata/warcinfo records: no JSON parse
        raise Skip("not_response" if payload.lstrip()[:1] == b"{" else "bad_json")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise Skip("bad_json") from None
    env = _get(doc, "Envelope")
    warc = _get(env, "WARC-Header-Metadata")
    warc = warc if isinstance(warc, dict) else {}
    if (warc.get("WARC-Type") or "response") != "response":
        raise Skip("not_response")
    http = _get(env, "Payload-Metadata", "HTTP-Response-Metadata")
    if not isinstance(http, dict):
        raise Skip("not_response")
    status = str(_get(http, "Response-Message", "Status") or "200").strip()
    if not status.startswith("2"):
        raise Skip("http_status")
    html = http.get("HTML-Metadata")
    if not isinstance(html, dict):
        raise Skip("not_html")
    page_url = normalize_url(unescape_entities(_str(warc.get("WARC-Target-URI")) or record_uri or "").strip("<> "))
    if page_url is None:
        raise Skip("bad_page_url")
    head = html.get("Head") if isinstance(html.get("Head"), dict) else {}
    metas = head.get("Metas")
    headers = http.get("Headers")
    page = PageInfo(
        url=page_url,
        title=clean_text(_str(head.get("Title"))) or None,
        language=first_language(_header(headers, "Content-Language")
                                or _meta_value(metas, "content-language", "language")),
        date=parse_warc_date(_str(warc.get("WARC-Date"))),
        noai=_robots_noai(metas) or noai_directives(_header(headers, "X-Robots-Tag"))
        or tdm_reserved(_header(headers, "tdm-reservation")) or tdm_reserved(_meta_value(metas, "tdm-reservation")),
    )
    if page.noai:
        return page
    base = page_url
    if isinstance(head.get("Base"), str) and head["Base"].strip():
        base = normalize_url(unescape_entities(head["Base"]), page_url) or page_url
    seen: set[tuple[str, str]] = set()
    dropped = page.dropped
    links = html.get("Links")
    for link in links if isinstance(links, list) else ():
        if not isinstance(link, dict) or link.get("path") != IMG_SRC:
            continue
        src = link.get("url") or link.get("href")
        if not isinstance(src, str) or not src.strip():
            dropped["bad_url"] = dropped.get("bad_url", 0) + 1
            continue
        if src.lstrip()[:5].lower() in ("data:", "blob:"):
            dropped["data_uri"] = dropped.get("data_uri", 0) + 1
            continue
        caption, source = clean_text(link.get("alt") if isinstance(link.get("alt"), str) else ""), "wat"
        if not caption and isinstance(link.get("title"), str):
            caption, source = clean_text(link["title"]), "wat-title"
        if not caption:
            dropped["no_caption"] = dropped.get("no_caption", 0) + 1
            continue
        url = normalize_url(unescape_entities(src), base)
        if url is None:
            dropped["bad_url"] = dropped.get("bad_url", 0) + 1
            continue
        if is_svg(url):
            dropped["svg"] = dropped.get("svg", 0) + 1
            continue
        if (url, caption) in seen:
            dropped["duplicate_in_page"] = dropped.get("duplicate_in_page", 0) + 1
            continue
        seen.add((url, caption))
        alt = clean_text(link.get("alt")) if isinstance(link.get("alt"), str) else ""
        title = clean_text(link.get("title")) if isinstance(link.get("title"), str) else ""
        page.pairs.append(Candidate(url, caption, source, alt=alt or None, title=title or None))
    return page
