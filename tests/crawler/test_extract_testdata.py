"""extract_page on 220 real pages (the shared testdata) against an independent BeautifulSoup+lxml
implementation of the same documented rules (tests/crawler/bs4_reference.py).

Known, accepted differences (ours is right in each): a page declaring gb2312 whose bytes are UTF-8
(we decode UTF-8; the reference trusts the meta), lxml's HTML4 parser nesting <img> inside
unclosed <source> elements (the reference compensates), and urllib's urljoin collapsing "//"
inside paths (web.archive.org links), which RFC 3986 keeps.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("bs4")
pytest.importorskip("lxml")

from clipcrawl.crawler.extract import extract_page  # noqa: E402
from tests.crawler.bs4_reference import reference_extract  # noqa: E402

FAKE_BASE = "http://fakehost/test/page.html"  # readability's test base URL, for pages without an original URL


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float]:
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


@pytest.mark.slow
def test_extraction_matches_reference_on_real_pages(testdata):
    root = testdata / "html"
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) >= 200
    tp = fp = fn = ltp = lfp = lfn = exact = 0
    for r in rows:
        body = (root / r["file"]).read_bytes()
        url = r.get("original_url") or FAKE_BASE
        ours, ref = extract_page(body, url), reference_extract(body, url)
        o = {(p.url, p.caption) for p in ours.pairs}
        f = {(u, c) for u, c, _ in ref.pairs}
        tp, fp, fn = tp + len(o & f), fp + len(o - f), fn + len(f - o)
        exact += o == f
        ol, fl = set(ours.links), set(ref.links)
        ltp, lfp, lfn = ltp + len(ol & fl), lfp + len(ol - fl), lfn + len(fl - ol)
        assert len(ours.pairs) == len({(p.url, p.caption) for p in ours.pairs})  # unique per page
        assert all(p.caption == " ".join(p.caption.split()) and p.caption for p in ours.pairs)
    precision, recall = _prf(tp, fp, fn)
    lp, lr = _prf(ltp, lfp, lfn)
    print(f"\npairs: precision {precision:.4f} recall {recall:.4f} ({tp} shared, {fp} ours only, {fn} reference only); "
          f"pages identical {exact}/{len(rows)}; links: precision {lp:.4f} recall {lr:.4f}")
    assert tp > 2500
    assert precision >= 0.98 and recall >= 0.98
    assert lp >= 0.99 and lr >= 0.99
    assert exact >= 0.97 * len(rows)


def test_legacy_charset_pages_decode_cleanly(testdata):
    """No page crashes the extractor, and non-UTF-8 pages decode without replacement characters."""
    root = testdata / "html"
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:
        if r.get("valid_utf8") or r.get("declared_charset") in (None, "utf-8"):
            continue
        page = extract_page((root / r["file"]).read_bytes(), r.get("original_url") or FAKE_BASE)
        assert page.charset != "utf-8", r["file"]
        assert not any("\ufffd" in p.caption for p in page.pairs), r["file"]
        assert not page.title or "\ufffd" not in page.title, r["file"]
