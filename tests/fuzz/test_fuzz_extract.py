"""The HTML extractor on arbitrary bytes and tag soup: a Page, never an exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clipcrawl.crawler.extract import extract_page

from .conftest import FUZZ

ATTR = st.sampled_from(["src", "alt", "srcset", "data-src", "width", "height", "href", "content", "name",
                        "lang", "sizes", "title", "charset", "http-equiv", "class"])
VALUE = st.one_of(st.text(max_size=30), st.sampled_from(["a.jpg", "//x/y.png", "data:image/gif;base64,R0", "0",
                                                          "-1", "1e99", "x 1x, y 2x", "a.jpg 9999999999999w",
                                                          "javascript:1", "http://[::1", "http://a:99999/x"]))
TAG = st.sampled_from(["img", "picture", "source", "figure", "figcaption", "a", "base", "meta", "html", "title",
                       "noscript", "p", "div", "svg", "script"])


@st.composite
def soup(draw) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        tag = draw(TAG)
        attrs = "".join(f' {draw(ATTR)}="{draw(VALUE)}"' for _ in range(draw(st.integers(0, 4))))
        parts.append(f"<{tag}{attrs}>{draw(st.text(max_size=20))}" + (f"</{tag}>" if draw(st.booleans()) else ""))
    enc = draw(st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1251"]))
    return "".join(parts).encode(enc, "replace")


@FUZZ
@given(html=st.binary(max_size=500) | soup(), url=st.sampled_from(["http://example.com/a/b.html", "https://x.y/",
                                                                  "http://[::1]/p", "http://a.b/%zz"]),
       ctype=st.none() | st.sampled_from(["text/html; charset=koi8-r", "text/html; charset=bogus", "text/html"]))
def test_extract_page_never_raises(html, url, ctype):
    page = extract_page(html, url, ctype)
    for pair in page.pairs:
        assert isinstance(pair.url, str) and pair.url.startswith(("http://", "https://"))


# ---------------------------------------------------------------- issue 24: the parse budget's sketch
SKETCH_NAMES = ["div", "span", "p", "b", "i", "em", "strong", "font", "a", "li", "ul", "ol", "dl", "dt",
                "dd", "table", "tr", "td", "th", "tbody", "caption", "h1", "h2", "button", "form",
                "select", "option", "nobr", "s", "u", "code", "small", "section", "article", "blockquote",
                "pre", "center", "svg", "math", "g", "foreignobject", "object", "marquee", "template",
                "textarea", "style", "title"]
SKETCH_TOKEN = st.one_of(
    st.tuples(st.just("<"), st.sampled_from(SKETCH_NAMES), st.booleans(), st.booleans()).map(
        lambda t: f"<{t[1]}{' size={i}' if t[2] else ''}{'/' if t[3] else ''}>"),
    st.sampled_from(SKETCH_NAMES).map(lambda n: f"</{n}>"),
    st.sampled_from(["x", "<!-->", "<!--", "-->", "--!>", "<!x>", "</ x>", "<![CDATA[", "]]>", "<script>", "</script>"]),
)


def _lexbor(html: str) -> tuple[int, int]:
    from tests.crawler.test_extract_budget import lexbor_tree  # one walk of Lexbor's tree for both tests

    return lexbor_tree(html)


def _sketch(html: str) -> tuple[int, int]:
    from clipcrawl.crawler.parsebudget import _TreeCost

    t = _TreeCost(10**9, 10**9)
    t.feed(html)
    return t.depth, t.elements


@FUZZ
@given(pattern=st.lists(SKETCH_TOKEN, min_size=2, max_size=6))
def test_parse_budget_sketch_grows_where_lexbor_grows(pattern):
    """A pattern repeated: if it makes Lexbor's tree deeper or bigger with every repetition, the sketch
    of the parse budget must grow too (at a quarter of the rate at least), or an attack gets through."""
    def page(n: int) -> str:
        return "<html><body>" + "".join("".join(pattern).replace("{i}", str(i)) for i in range(n))

    (rd1, rn1), (rd2, rn2) = _lexbor(page(150)), _lexbor(page(300))
    (sd1, sn1), (sd2, sn2) = _sketch(page(150)), _sketch(page(300))
    assert rd2 - rd1 <= 50 or sd2 - sd1 >= (rd2 - rd1) / 4, (pattern, rd2 - rd1, sd2 - sd1)
    assert rn2 - rn1 <= 2000 or sn2 - sn1 >= (rn2 - rn1) / 4, (pattern, rn2 - rn1, sn2 - sn1)


IMAGE_PART = st.sampled_from([
    "<picture>", "</picture>", "<figure>", "</figure>", "<figcaption>cap A</figcaption>", "<figcaption>B</figcaption>",
    "<noscript>", "</noscript>", "<div>", "</div>", "<source srcset='s1.jpg 800w, s2.jpg 1600w'>",
    "<source type=image/avif srcset='a.avif 3000w'>", "<source type=image/svg+xml srcset='v.svg 9000w'>",
    "<source srcset='data:x 4000w, d.jpg 100w'>", "<source srcset='x1.jpg, x3.jpg 3x'>",
    "<img src=i.jpg alt={i}>", "<img srcset='w.jpg 900w, n.jpg 200w' alt={i}>", "<img srcset='t.jpg 1x' alt={i}>",
    "<img data-src=lazy.jpg src=data:x alt={i}>", "<img src=icon.svg alt={i}>",
])


@FUZZ
@given(parts=st.lists(IMAGE_PART, max_size=14))
def test_pictures_and_figures_pick_as_before(parts):
    """The per-picture best source and the remembered figure ancestors (issue 24: both were quadratic)
    choose what the former per-image code chose: every source of the picture ranked with the image's
    own candidates, and every figure's images collected, outer figures first."""
    from selectolax.lexbor import LexborHTMLParser

    from clipcrawl.base.captions import fix_text
    from clipcrawl.crawler.extract import LAZY_SRC_ATTRS, _srcset, _usable
    from clipcrawl.crawler.srcset import best_candidate

    html = "<html><body>" + "".join(p.replace("{i}", str(k)) for k, p in enumerate(parts)) + "</body></html>"
    base = "http://example.com/p/"
    tree = LexborHTMLParser(html)
    figcaps: dict[int, str] = {}
    for fig in tree.css("figure"):
        cap = fig.css_first("figcaption")
        if cap is not None:
            for img in fig.css("img"):
                figcaps[img.mem_id] = fix_text(cap.text(deep=True, separator=" "))
    expected = {}
    for img in tree.css("img"):
        parent = img.parent
        if parent is not None and parent.tag == "noscript":
            parent = parent.parent
        cands = []
        for s in [s.attributes for s in parent.css("source")] if parent is not None and parent.tag == "picture" else []:
            typ = (s.get("type") or "").lower()
            if "svg" not in typ:
                raster = not typ or any(t in typ for t in ("jpeg", "jpg", "png", "webp", "gif"))
                cands.extend((raster, c) for c in _srcset(s))
        cands.extend((True, c) for c in _srcset(img.attributes))
        url = next((u for u in map(lambda c: _usable(c, base), best_candidate(cands)) if u), None)
        url = url or next((u for a in LAZY_SRC_ATTRS if (u := _usable(img.attributes.get(a), base))), None)
        url = url or _usable(img.attributes.get("src"), base)
        if url:
            expected[img.attributes["alt"]] = (url, figcaps.get(img.mem_id) or None)
    got = {p.alt: (p.url, p.figcaption) for p in extract_page(html.encode(), base).pairs}
    assert got == expected
