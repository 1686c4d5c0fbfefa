"""Alt-text recall of the extractor against an independent reading of raw ``alt`` attributes.

Truth (shares no caption choice with clipcrawl): lxml.html parses each page; every ``<img>``
outside ``<template>`` whose raw ``alt`` attribute is non-empty after whitespace collapse, whose
declared width/height are not 2 px or less, and which has a usable source (``src``, a
``data-*src*`` attribute or the first URL of a ``srcset``-like attribute that urllib resolves to
http(s) and that is not ``data:``/``blob:``/``.svg``) gives one truth item (page, alt text).
Distinct alt texts per page. Found = some pair of ``extract_page`` on that page has that alt as
its caption. Texts are compared after ftfy + whitespace collapse on both sides (text repair,
not caption choice).

Pages: the first 150 real pages of the manifest (crafted readability edge cases excluded) that
have at least one truth item and whose ``<meta name=robots>`` does not forbid indexing/AI use
(those give no pairs by policy; counted and printed).

    python bench/alt_recall.py [--testdata DIR] [--pages 150] [--show 20]
Run with PYTHONPATH of another checkout (e.g. main) to measure that extractor.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import urljoin

ROOT = Path(__file__).resolve().parents[1]
CRAFTED = re.compile(r"readability/(lazy-image-\d|data-url-image|base-url.*|keep-images)\.html$")
FAKE_BASE = "http://fakehost/test/page.html"
NOAI_META = re.compile(rb"<meta[^>]+name=[\"']?robots[^>]+(noindex|noai|noimageai|noimageindex|none)", re.I)
_DIM = re.compile(r"^\s*(\d+)")


def _norm(s: str) -> str:
    import ftfy

    return " ".join(ftfy.fix_text(s, normalization="NFC").split())


def _usable(raw: str | None, base: str) -> bool:
    if not raw or not raw.strip():
        return False
    raw = raw.strip()
    if raw[:5].lower() in ("data:", "blob:"):
        return False
    try:
        u = urljoin(base, raw)
    except ValueError:
        return False
    path = u.split("?", 1)[0].split("#", 1)[0].lower()
    return u.lower().startswith(("http://", "https://")) and not path.endswith((".svg", ".svgz"))


def truth_alts(body: bytes, url: str) -> set[str]:
    import lxml.html

    try:
        doc = lxml.html.document_fromstring(body)
    except (ValueError, lxml.etree.ParserError):
        return set()
    base = url
    for b in doc.iter("base"):
        if b.get("href"):
            base = urljoin(url, b.get("href").strip())
        break
    out = set()
    for img in doc.iter("img"):
        if any(a.tag == "template" for a in img.iterancestors()):
            continue
        alt = " ".join((img.get("alt") or "").split())
        if not alt:
            continue
        dims = [_DIM.match(img.get(a) or "") for a in ("width", "height")]
        if any(m and int(m.group(1)) <= 2 for m in dims):
            continue
        cands = []
        for k, v in img.attrib.items():
            if k.endswith("srcset"):
                cands.append((v.strip().split() or [""])[0].rstrip(","))
            elif k == "src" or (k.startswith("data-") and "src" in k):
                cands.append(v)
        if any(_usable(c, base) for c in cands):
            out.add(_norm(alt))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--testdata", type=Path,
                    default=Path(os.environ.get("CLIPCRAWL_TESTDATA", ROOT.parent / "shared" / "testdata")))
    ap.add_argument("--pages", type=int, default=150)
    ap.add_argument("--show", type=int, default=15, help="Print this many misses.")
    args = ap.parse_args()
    from clipcrawl.crawler.extract import extract_page

    root = args.testdata / "html"
    rows = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines() if x.strip()]
    pages = found = total = withheld = 0
    misses: list[tuple[str, str, str]] = []
    by_source: dict[str, int] = {}
    for r in rows:
        if pages >= args.pages or CRAFTED.search(r["file"]):
            continue
        body = (root / r["file"]).read_bytes()
        url = r.get("original_url") or FAKE_BASE
        truth = truth_alts(body, url)
        if not truth:
            continue
        if NOAI_META.search(body[:200_000]):  # pages that forbid indexing/AI use give no pairs by policy
            withheld += 1
            continue
        pages += 1
        page = extract_page(body, url)
        caps = {_norm(p.caption): p.caption_source for p in page.pairs}
        for p in page.pairs:
            by_source[p.caption_source] = by_source.get(p.caption_source, 0) + 1
        for alt in truth:
            total += 1
            if alt in caps:
                found += 1
            else:
                misses.append((r["file"], alt[:80], ""))
    print(f"(pages skipped because their meta robots forbids indexing or AI use: {withheld})")
    print(f"pages {pages}, truth alt texts {total}, found as captions {found}, recall {found / max(1, total):.4f}")
    print("pairs by caption_source:", dict(sorted(by_source.items())))
    for f, alt, _ in misses[: args.show]:
        print(f"  miss {f}: {alt!r}")


if __name__ == "__main__":
    sys.path.insert(0, os.environ.get("PYTHONPATH", "").split(":")[0] or str(ROOT))
    main()
