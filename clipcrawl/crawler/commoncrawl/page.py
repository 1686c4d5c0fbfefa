"""What the WARC and WAT paths both produce: one page's pair candidates, and the helpers they share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from clipcrawl.base.captions import MAX_TEXT_CHARS, cut_text
from clipcrawl.crawler.extract import normalize_language
from clipcrawl.schemas.config import NOAI_DIRECTIVES

_SURROGATE = re.compile("[\ud800-\udfff]")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


class Skip(Exception):
    """The record holds no page to take pairs from; ``reason`` is the counter to bump."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Candidate:
    """One (image URL, caption) pair found on a page, before keying."""

    url: str  # absolute, normalised
    caption: str
    caption_source: str
    width: int | None = None  # declared width/height attributes
    height: int | None = None
    alt: str | None = None  # the caption candidates (WARC path; the WAT path knows only the alt)
    figcaption: str | None = None
    title: str | None = None


@dataclass
class PageInfo:
    url: str
    title: str | None = None
    language: str | None = None
    date: datetime | None = None  # capture time (WARC-Date)
    noai: bool = False
    license: str | None = None  # the page's licence link (extract.Page.license)
    pairs: list[Candidate] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # image candidates left out, by reason


def unescape_entities(s: str) -> str:
    """Decode HTML character references that end with ``;`` (old WAT files keep ``&amp;`` raw),
    and replace lone surrogates (JSON may escape them; Arrow and UTF-8 refuse them) with U+FFFD.

    Only terminated references: ``?a=1&copy=2`` stays as written, unlike ``html.unescape``.
    """
    if not s.isascii() and _SURROGATE.search(s):
        s = _SURROGATE.sub("\ufffd", s)
    if "&" not in s or not _ENTITY.search(s):
        return s
    import html

    return _ENTITY.sub(lambda m: html.unescape(m.group(0)), s)


def clean_text(s: str | None) -> str:
    """Collapse whitespace, strip; entity-decoded; at most :data:`~clipcrawl.base.captions.MAX_TEXT_CHARS`
    characters (a WAT record's alt text is as unbounded as a page's)."""
    if not s:
        return ""
    return cut_text(unescape_entities(s[:4 * MAX_TEXT_CHARS]))


def is_svg(url: str) -> bool:
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    return path.endswith((".svg", ".svgz"))


def noai_directives(value: str | None) -> bool:
    """Does a robots value (meta content, X-Robots-Tag) carry a directive that forbids AI use?

    Parsed by :func:`clipcrawl.crawler.robots.robots_directives` for the ``clipcrawl`` token:
    ``otherbot: noindex`` is addressed to another crawler and ignored, ``a: x, clipcrawl: noai``
    (comma-combined groups) is ours, ``none`` means ``noindex, nofollow``, a past ``unavailable_after``
    means ``noindex``.
    """
    if not value:
        return False
    from clipcrawl.crawler.robots import robots_tag_disallows

    return robots_tag_disallows([value], "clipcrawl", (*NOAI_DIRECTIVES, "none")) is not None


def tdm_reserved(value: str | None) -> bool:
    """TDMRep: is a ``tdm-reservation`` header or meta value ``1``?"""
    return bool(value) and any(v.strip() == "1" for v in str(value).split(","))


_W3CDTF = re.compile(r"^(\d{4}-\d\d-\d\d)(?:[T ](\d\d:\d\d(?::\d\d)?)(?:\.(\d+))?)?\s*(Z|[+-]\d\d:?\d\d)?$")


def parse_warc_date(value: str | None) -> datetime | None:
    """W3C-DTF as WARC writes it (``2020-08-08T17:27:41Z``, fractions of any length, offsets,
    date only), in UTC, to the millisecond (``found_at`` is timestamp[ms]); None when invalid
    (ClueWeb09's ``2008-10-294T...``)."""
    m = _W3CDTF.match((value or "").strip())
    if not m:
        return None
    day, clock, frac, tz = m.groups()
    clock = clock or "00:00:00"
    if len(clock) == 5:
        clock += ":00"
    ms = (frac or "")[:3].ljust(3, "0")
    tz = "+00:00" if tz in (None, "Z") else (tz if ":" in tz else f"{tz[:3]}:{tz[3:]}")
    try:
        d = datetime.fromisoformat(f"{day}T{clock}.{ms}000{tz}")
    except ValueError:
        return None
    return d.astimezone(timezone.utc)


def first_language(value: str | None) -> str | None:
    """``Content-Language: de-de, en`` -> ``de-DE``, normalised as the crawler does ``<html lang>``."""
    return normalize_language(value)
