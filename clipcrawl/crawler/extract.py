"""HTML -> (image URL, caption) pairs and links, with selectolax's Lexbor parser.

``extract_page(html, url, content_type)`` is a contract: the crawler and the Common Crawl reader
call it on raw page bytes. The rules, in order:

Decoding
    :func:`clipcrawl.crawler.charset.decode_html`: BOM, HTTP charset, ``<meta>`` charset, UTF-8,
    charset-normalizer. Entities are decoded by the parser; all text is whitespace-collapsed.

Parse budget
    The HTML parser's cost grows with nesting depth and with formatting elements it re-creates, not
    with page size alone (200,000 nested ``<div>``, 2.2 MB, took it 162 CPU-seconds). Before parsing,
    :func:`check_parse_budget` raises :class:`PageTooComplex` for a page that would nest elements
    deeper than :data:`MAX_DEPTH` (512, Chromium's own limit) or make the parser build more than
    :data:`MAX_ELEMENTS`; callers record it as a page failure. Everything after the parse is linear.

Base URL
    The first ``<base href>`` (resolved against the page URL, http(s) only), else the page URL.

Meta robots
    ``<meta name="robots">`` and ``<meta name="<our UA token>">`` directives (lowercased) are
    collected in ``meta_robots``. Any of ``noai, noimageai, noml, noindex, noimageindex`` (or ``none``)
    sets ``noai``: the page gives **no pairs** (``n_withheld`` counts them). ``nofollow`` (or
    ``none``) sets ``nofollow``: the page gives **no links**. Contents are parsed like
    X-Robots-Tag (:func:`clipcrawl.crawler.robots.robots_directives`): ``none``, a past
    ``unavailable_after`` (-> ``noindex``), ``otherbot: ...`` groups addressed to another agent.

TDMRep
    ``<meta name="tdm-reservation" content="1">`` withholds the pairs like ``noai``
    (``noai_reason`` ``"tdm-reservation"``, ``tdm_policy`` from ``<meta name="tdm-policy">``).

Licence
    ``license``: the first ``rel="license"`` link (``<a>``/``<link>``), Creative Commons RDFa
    (``rel``/``property`` ``cc:license``, ``dcterms:license``, ``schema:license``) or microdata
    (``itemprop="license"``): an absolute URL, or a ``content`` text such as ``CC BY 4.0``. The pairs carry it
    as ``page_license``; the download's ``license`` column falls back to it.

Image URL, per ``<img>`` (``<noscript>`` images included: Lexbor parses them as elements;
``<template>`` contents are inert, as in a browser, and ignored)
    1. the largest candidate of each ``<source>``'s srcset whose ``type`` is not SVG, when the
       image sits in a ``<picture>`` (directly or in a ``<noscript>`` there), and of the image's. An element's srcset is the first of
       ``data-lazy-srcset``, ``data-srcset``, ``srcset`` that has candidates (lazy-loading scripts
       put the real one in the ``data-`` attribute and a placeholder in ``srcset``); candidates
       with a ``w`` of 2 or less are placeholders. Largest = biggest ``w`` descriptor; ``x``
       descriptors (no descriptor = ``1x``) count only when no candidate has a ``w``; ties keep
       document order; a source whose ``type`` is a raster format Pillow decodes everywhere
       (jpeg, png, webp, gif) or absent beats avif/jxl/other types;
    2. else the first usable of the lazy attributes :data:`LAZY_SRC_ATTRS`;
    3. else ``src``.
    A candidate is usable when it resolves (against the base URL) to an http(s) URL whose path is
    not ``.svg``/``.svgz``; ``data:`` and ``blob:`` URIs never are. URLs go through
    :func:`clipcrawl.crawler.urls.normalize_url`.

Skipped images
    no usable URL; declared ``width`` or ``height`` of 2 pixels or less (tracking pixels and
    spacers); no caption (below).

Caption, first non-empty of
    ``alt``, ``figcaption`` (text of the first ``<figcaption>`` of the nearest enclosing
    ``<figure>``, the texts of its nested elements joined with a space), ``title``,
    ``aria-label``; ``caption_source`` says which. The alt text comes first, as in LAION,
    DataComp and COYO: it describes the image, where a figcaption often carries a credit
    ("Credit Charlie Rubin ...") or a story sentence. The other candidates stay on the pair
    (``alt``, ``figcaption``, ``title``). Each text is repaired with ftfy and whitespace-collapsed
    (:func:`clipcrawl.base.captions.fix_text`) and cut to its first
    :data:`~clipcrawl.base.captions.MAX_TEXT_CHARS` (4,096) characters, so that one attribute cannot
    fill memory (the caption rule ``filters.text.max_chars`` drops long captions with a reason).
    There is **no junk fallback here**: an alt that is a file name, "image" or a credit line stays
    the caption, and the caption rules (:mod:`clipcrawl.filters.text`) give the row a status and
    reason later; a researcher who prefers the figcaption has it in its column. Images without any candidate are skipped and
    counted (``n_uncaptioned``): a pair without text teaches CLIP nothing.

One pair per image; pairs are unique per page by (URL, caption), in document order.

Links
    ``<a href>`` and ``<area href>`` resolved against the base URL, normalised, http(s) only,
    unique, in document order; links with ``rel`` containing ``nofollow`` are dropped, and all of
    them when the page is ``nofollow``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser

from clipcrawl.base.captions import cut_text, fix_text
from clipcrawl.crawler.charset import decode_html
from clipcrawl.crawler.parsebudget import MAX_DEPTH, MAX_ELEMENTS, PageTooComplex, check_parse_budget
from clipcrawl.crawler.robots import robots_directives
from clipcrawl.crawler.srcset import Candidate, best_candidate, parse_srcset
from clipcrawl.crawler.urls import normalize_url
from clipcrawl.schemas.config import NOAI_DIRECTIVES

__all__ = ["PairCandidate", "Page", "extract_page", "check_parse_budget", "PageTooComplex", "LAZY_SRC_ATTRS",
           "SRCSET_ATTRS", "DEFAULT_UA_TOKEN", "MAX_DEPTH", "MAX_ELEMENTS"]

DEFAULT_UA_TOKEN = "clipcrawl"
SRCSET_ATTRS = ("srcset", "data-srcset", "data-lazy-srcset")
#: single-URL lazy-loading attributes (lazysizes, WordPress/jQuery lazyload, pagespeed, echo.js, layzr ...)
LAZY_SRC_ATTRS = (
    "data-src", "data-lazy-src", "data-original", "data-lazy", "data-url", "data-hi-res-src",
    "data-full-url", "data-pagespeed-lazy-src", "data-actualsrc", "data-echo", "data-normal",
)
CAPTION_ORDER = ("alt", "figcaption", "title", "aria-label")  # caption = first non-empty
MAX_PIXEL_SIDE = 2  # declared width/height at or below this: a tracking pixel or spacer
_NOAI = frozenset(NOAI_DIRECTIVES) | {"none"}
_NOFOLLOW = frozenset({"nofollow", "none"})
_INT = re.compile(r"^\s*(\d+)(?:\.\d*)?\s*(?:px)?\s*$", re.I)
_LANG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
_SVG_PATH = re.compile(r"\.svgz?$", re.I)


@dataclass
class PairCandidate:
    url: str  # absolute, normalised image URL
    caption: str
    caption_source: str  # alt | figcaption | title | aria-label
    width: int | None = None  # declared width/height attributes
    height: int | None = None
    alt: str | None = None  # every caption candidate, cleaned (None when absent or empty)
    figcaption: str | None = None
    title: str | None = None


@dataclass
class Page:
    url: str
    base_url: str
    charset: str
    pairs: list[PairCandidate] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    title: str | None = None
    language: str | None = None
    meta_robots: list[str] = field(default_factory=list)  # directives that apply to us
    nofollow: bool = False
    noai: bool = False
    noai_reason: str | None = None  # the directive, e.g. "noimageai", or "tdm-reservation" (TDMRep)
    tdm_policy: str | None = None  # <meta name="tdm-policy"> of a TDM-reserved page
    license: str | None = None  # the page's licence: rel="license" link, or Creative Commons RDFa (absolute URL)
    n_images: int = 0  # <img> elements seen
    n_uncaptioned: int = 0  # usable images skipped for lack of a caption
    n_withheld: int = 0  # pairs withheld because of noai


def clean_text(s: str | None) -> str:
    """Collapse whitespace (entities are already decoded by the parser), at most MAX_TEXT_CHARS characters."""
    return cut_text(s) if s else ""


def _dim(v: str | None) -> int | None:
    if not v:
        return None
    m = _INT.match(v)
    return min(int(m.group(1)), 2**31 - 1) if m else None


def normalize_language(v: str | None) -> str | None:
    """``"en_us"`` -> ``"en-US"``, ``"de, en"`` -> ``"de"``; None for anything not shaped like BCP 47."""
    if not v:
        return None
    v = v.split(",")[0].strip().replace("_", "-")
    if not _LANG.match(v):
        return None
    parts = v.split("-")
    out = [parts[0].lower()]
    for p in parts[1:]:
        out.append(p.upper() if len(p) == 2 else p.title() if len(p) == 4 else p.lower())
    return "-".join(out)


def _usable(raw: str | None, base: str) -> str | None:
    if not raw:
        return None
    raw = raw.strip()
    if not raw or raw[:5].lower() in ("data:", "blob:"):
        return None
    u = normalize_url(raw, base)
    if u is None or _SVG_PATH.search(u.split("?", 1)[0]):
        return None
    return u


def _srcset(attrs: dict) -> list:
    """Candidates of the first srcset-like attribute, lazy ones first (a lazy-loading script
    replaces ``srcset`` with them), minus placeholders (a ``w`` of 2 pixels or less)."""
    for a in reversed(SRCSET_ATTRS):
        v = attrs.get(a)
        if v:
            cands = [c for c in parse_srcset(v) if c.w is None or c.w > MAX_PIXEL_SIDE]
            if cands:
                return cands
    return []


def _picture_source(sources: list[dict], base: str) -> list[tuple[bool, Candidate]]:
    """The best usable candidate of a ``<picture>``'s sources (``[]`` when none is), found once per
    picture: against an image's own candidates it ranks as all the sources would (sources come
    first, so they win ties either way), and a picture of many images costs each image only its own."""
    usable: list[tuple[bool, Candidate]] = []
    for s in sources:  # in document order
        typ = (s.get("type") or "").lower()
        if "svg" in typ:
            continue
        raster = not typ or any(t in typ for t in ("jpeg", "jpg", "png", "webp", "gif"))
        usable.extend((raster, c) for c in _srcset(s) if _usable(c.url, base))
    if not usable:
        return []
    # best_candidate ranks by descriptors, then document order; number the candidates to find the winner
    first = best_candidate((raster, Candidate(str(k), c.w, c.x)) for k, (raster, c) in enumerate(usable))[0]
    return [usable[int(first)]]


def _image_url(attrs: dict, picture_source: list[tuple[bool, Candidate]], base: str) -> str | None:
    """Rule 'Image URL' of the module doc (``picture_source``: :func:`_picture_source`)."""
    cands = [*picture_source, *((True, c) for c in _srcset(attrs))]  # the sources, then the image
    if cands:
        for c in best_candidate(cands):
            u = _usable(c, base)
            if u:
                return u
    for a in LAZY_SRC_ATTRS:
        v = attrs.get(a)
        if v:
            u = _usable(v, base)
            if u:
                return u
    return _usable(attrs.get("src"), base)


def _meta(tree: LexborHTMLParser, ua_token: str) -> tuple[list[str], str | None, dict[str, str]]:
    """(robots directives that apply to us, content-language, TDMRep metas)."""
    contents: list[str] = []
    tdm: dict[str, str] = {}
    lang = None
    for m in tree.css("meta"):
        a = m.attributes
        name = (a.get("name") or "").strip().lower()
        if name in ("robots", ua_token):
            contents.append(a.get("content") or "")
        elif name in ("tdm-reservation", "tdm-policy"):
            tdm.setdefault(name, (a.get("content") or "").strip())
        elif lang is None and (a.get("http-equiv") or "").strip().lower() == "content-language":
            lang = a.get("content")
    directives = [d for d, _ in robots_directives(contents, ua_token)]
    return directives, lang, tdm


def _figure_captions(tree: LexborHTMLParser, images: list) -> dict[int, str]:
    """img mem_id -> text of the first ``<figcaption>`` inside (a nested figure's included) its nearest
    enclosing ``<figure>`` that has one. Each element is visited once (ancestors are remembered), so
    nested figures cost no more than flat ones."""
    out: dict[int, str] = {}
    if tree.css_first("figure") is None:
        return out
    known: dict[int, str | None] = {}  # element mem_id -> caption of its nearest captioned figure (itself included)
    for img in images:
        path, cap, node = [], None, img.parent
        while node is not None:
            if node.mem_id in known:
                cap = known[node.mem_id]
                break
            path.append(node)
            node = node.parent
        for node in reversed(path):  # outermost first
            if node.tag == "figure":
                cap_node = node.css_first("figcaption")
                if cap_node is not None:
                    cap = fix_text(cap_node.text(deep=True, separator=" "))
            known[node.mem_id] = cap
        if cap is not None:
            out[img.mem_id] = cap
    return out


#: elements naming the page's licence: <a|link rel="license">, Creative Commons RDFa/microdata
_LICENSE_SELECTOR = ('[rel~="license"][href], [rel~="cc:license"], [property~="cc:license"], '
                     '[property~="dcterms:license"], [property~="schema:license"], [itemprop="license"]')


def _page_license(tree: LexborHTMLParser, base: str) -> str | None:
    """The first licence the page names (an absolute URL, or the text of a content attribute)."""
    for el in tree.css(_LICENSE_SELECTOR):
        a = el.attributes
        for k in ("href", "resource", "content", "src"):
            v = (a.get(k) or "").strip()
            if v:
                if k == "content" and "://" not in v:  # a licence named in text ("CC BY 4.0")
                    return v[:2000]
                return (normalize_url(v, base) or v)[:2000]
    return None


def extract_page(html: bytes, url: str, content_type: str | None = None, *,
                 ua_token: str = DEFAULT_UA_TOKEN) -> Page:
    """Parse one HTML page into pairs, links and page facts (see the module doc for the rules)."""
    text, charset, _how = decode_html(html, content_type) if isinstance(html, bytes) else (html, "utf-8", "str")
    ascii_compatible = isinstance(html, bytes) and not charset.startswith(("utf-16", "replacement"))
    check_parse_budget(text, html if ascii_compatible else None)  # the bytes hold the text's tags: faster
    tree = LexborHTMLParser(text)
    base = normalize_url(url) or url
    b = tree.css_first("base[href]")
    if b is not None:
        base = normalize_url(b.attributes.get("href") or "", base) or base
    page = Page(url=url, base_url=base, charset=charset)

    t = tree.css_first("title")
    page.title = clean_text(t.text()) if t is not None else None
    if not page.title:
        og = tree.css_first('meta[property="og:title"]')
        page.title = clean_text(og.attributes.get("content")) if og is not None else None
    page.title = page.title or None
    directives, meta_lang, tdm = _meta(tree, ua_token)
    h = tree.css_first("html")
    page.language = normalize_language(h.attributes.get("lang") if h is not None else None) or normalize_language(meta_lang)
    page.meta_robots = directives
    page.nofollow = any(d in _NOFOLLOW for d in directives)
    noai = next((d for d in directives if d in _NOAI), None)
    if tdm.get("tdm-reservation") == "1":
        noai, page.tdm_policy = "tdm-reservation", tdm.get("tdm-policy") or None
    page.noai, page.noai_reason = noai is not None, noai
    page.license = _page_license(tree, base)

    images = tree.css("img")
    figcaps = _figure_captions(tree, images)
    pictures: dict[int, list[tuple[bool, Candidate]]] = {}  # picture mem_id -> its best source
    seen: set[tuple[str, str]] = set()
    for img in images:
        page.n_images += 1
        attrs = img.attributes
        w, h_ = _dim(attrs.get("width")), _dim(attrs.get("height"))
        if (w is not None and w <= MAX_PIXEL_SIDE) or (h_ is not None and h_ <= MAX_PIXEL_SIDE):
            continue
        parent = img.parent
        if parent is not None and parent.tag == "noscript":  # <picture>...<noscript><img></noscript></picture>
            parent = parent.parent
        source: list[tuple[bool, Candidate]] = []
        if parent is not None and parent.tag == "picture":
            if parent.mem_id not in pictures:
                pictures[parent.mem_id] = _picture_source([s.attributes for s in parent.css("source")], base)
            source = pictures[parent.mem_id]
        src = _image_url(attrs, source, base)
        if src is None:
            continue
        cands = {"alt": fix_text(attrs.get("alt")), "figcaption": figcaps.get(img.mem_id, ""),
                 "title": fix_text(attrs.get("title")), "aria-label": fix_text(attrs.get("aria-label"))}
        how = next((k for k in CAPTION_ORDER if cands[k]), None)
        if how is None:
            page.n_uncaptioned += 1
            continue
        caption = cands[how]
        if (src, caption) in seen:
            continue
        seen.add((src, caption))
        page.pairs.append(PairCandidate(src, caption, how, w, h_, cands["alt"] or None,
                                        cands["figcaption"] or None, cands["title"] or None))
    if page.noai:
        page.n_withheld, page.pairs = len(page.pairs), []

    if not page.nofollow:
        links: dict[str, None] = {}
        for a in tree.css("a[href], area[href]"):
            attrs = a.attributes
            rel = attrs.get("rel")
            if rel and "nofollow" in rel.lower().split():
                continue
            u = normalize_url(attrs.get("href") or "", base)
            if u is not None:
                links[u] = None
        page.links = list(links)
    return page
