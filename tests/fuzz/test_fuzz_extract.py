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
