"""An independent reference extractor: BeautifulSoup + lxml, the documented rules of
clipcrawl.crawler.extract re-implemented from the module doc (own decoding via BeautifulSoup's
UnicodeDammit, urllib's urljoin, its own srcset scanner). Used by the accuracy test on real
pages and as the baseline of bench/extract_bench.py. Only the attribute lists and the text repair
(clipcrawl.base.captions.fix_text: ftfy on mojibake, whitespace collapse) are shared.

Caption order follows the documented rule (alt, figcaption, title, aria-label; nested texts joined
with a space; ftfy repair). Until issue 15 both sides put the figcaption first; the switch to alt
first changed only that order, so this reference followed it. The caption recall measured against
raw alt attributes, which shares no caption choice with us, is bench/alt_recall.py."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin

from bs4 import BeautifulSoup

from clipcrawl.base.captions import fix_text
from clipcrawl.crawler.extract import LAZY_SRC_ATTRS
from clipcrawl.crawler.urls import normalize_url

NOAI = {"noai", "noimageai", "noml", "noindex", "noimageindex", "none"}
RASTER = ("jpeg", "jpg", "png", "webp", "gif")
_DIM = re.compile(r"^\s*(\d+)(\.\d*)?\s*(px)?\s*$", re.I)


@dataclass
class RefPage:
    pairs: list[tuple[str, str, str]] = field(default_factory=list)  # (url, caption, caption_source)
    links: list[str] = field(default_factory=list)
    noai: bool = False
    nofollow: bool = False


def srcset_candidates(value: str) -> list[tuple[str, int | None, float]]:
    """WHATWG srcset parsing, character by character."""
    out, i, n = [], 0, len(value)
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        start = i
        while i < n and not value[i].isspace():
            i += 1
        url = value[start:i]
        if not url:
            break
        desc = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            desc = value[start:i]
        w, x, bad = None, 1.0, False
        for tok in desc.lower().split():
            if tok[-1:] == "w" and tok[:-1].isdigit() and int(tok[:-1]) > 0:
                w = int(tok[:-1])
            elif tok[-1:] == "x":
                try:
                    x = float(tok[:-1])
                    bad = bad or x <= 0
                except ValueError:
                    bad = True
            elif tok[-1:] != "h":
                bad = True
        if url and not bad:
            out.append((url, w, x))
    return out


def _text(s) -> str:
    return fix_text(s) if s else ""


def _resolve(raw, base: str) -> str | None:
    if not raw or not raw.strip() or raw.strip()[:5].lower() in ("data:", "blob:"):
        return None
    try:
        absolute = urljoin(base, raw.strip())
    except ValueError:
        return None
    u = normalize_url(absolute)
    if u is None or re.search(r"\.svgz?$", u.split("?")[0], re.I):
        return None
    return u


def _dim(v) -> int | None:
    m = _DIM.match(v or "")
    return int(m.group(1)) if m else None


def reference_extract(html: bytes, url: str, ua_token: str = "clipcrawl") -> RefPage:
    soup = BeautifulSoup(html, "lxml")
    page = RefPage()
    base = url
    b = soup.find("base", href=True)
    if b is not None:
        base = _resolve(b["href"], url) or url
    directives = []
    for m in soup.find_all("meta"):
        if (m.get("name") or "").strip().lower() in ("robots", ua_token):
            directives += [d.strip().lower() for d in (m.get("content") or "").split(",")]
    page.noai = any(d in NOAI for d in directives)
    page.nofollow = any(d in ("nofollow", "none") for d in directives)
    seen = set()
    for t in soup.find_all("template"):  # inert content
        t.decompose()
    for img in soup.find_all("img"):
        w, h = _dim(img.get("width")), _dim(img.get("height"))
        if (w is not None and w <= 2) or (h is not None and h <= 2):
            continue
        cands = []  # (preferred type, has width, width, density, -position, url)
        elements = []
        picture = img.find_parent("picture")  # lxml nests <img> inside unclosed <source>s
        if picture is not None:
            for s in picture.find_all("source"):
                typ = (s.get("type") or "").lower()
                if "svg" not in typ:
                    elements.append((s, not typ or any(t in typ for t in RASTER)))
        elements.append((img, True))
        for el, preferred in elements:
            for a in ("data-lazy-srcset", "data-srcset", "srcset"):
                found = [c for c in srcset_candidates(el.get(a) or "") if c[1] is None or c[1] > 2]
                if found:
                    break
            for u, cw, cx in found:
                cands.append((preferred, cw is not None, cw or 0, cx, -len(cands), u))
        src = None
        for c in sorted(cands, reverse=True):
            src = _resolve(c[-1], base)
            if src:
                break
        for a in (*LAZY_SRC_ATTRS, "src"):
            if src:
                break
            src = _resolve(img.get(a), base)
        if not src:
            continue
        figcaption = ""
        fig = img.find_parent("figure")
        while fig is not None:
            fc = fig.find("figcaption")
            if fc is not None:
                figcaption = _text(fc.get_text(" "))
                break
            fig = fig.find_parent("figure")
        caption, how = "", ""
        for a in ("alt", "figcaption", "title", "aria-label"):  # alt first, as LAION/DataComp/COYO
            caption, how = (figcaption if a == "figcaption" else _text(img.get(a))), a
            if caption:
                break
        if caption and (src, caption) not in seen:
            seen.add((src, caption))
            page.pairs.append((src, caption, how))
    if page.noai:
        page.pairs = []
    if not page.nofollow:
        links = {}
        for a in soup.find_all(["a", "area"], href=True):
            rel = a.get("rel") or []
            rel = rel.split() if isinstance(rel, str) else rel
            if "nofollow" in [r.lower() for r in rel]:
                continue
            u = normalize_url(urljoin(base, a["href"].strip())) if a["href"].strip() else None
            if u:
                links[u] = None
        page.links = list(links)
    return page
