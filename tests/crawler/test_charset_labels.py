"""Charset labels resolve through the WHATWG Encoding Standard's table (issue 24): what a browser does
with a label, clipcrawl does; labels it does not know are ignored, replacement labels blank the page."""

from __future__ import annotations

import pytest

from clipcrawl.crawler.charset import codec_for, decode_html, detected_codec
from clipcrawl.crawler.extract import extract_page

URL = "http://example.com/p.html"
UTF7_ALT = "+ADw-script+AD4-alert(1)+ADw-/script+AD4-"


def _alt_page(head: str = "") -> bytes:
    return f'<html><head>{head}</head><body><img src="a.jpg" alt="{UTF7_ALT}"></body></html>'.encode("ascii")


@pytest.mark.parametrize("head, ctype", [
    ('<meta charset="utf-7">', None),
    ('<meta http-equiv="Content-Type" content="text/html; charset=UTF-7">', "text/html"),
    ("", "text/html; charset=utf-7"),
    ("", 'text/html; charset="x-unicode-2-0-utf-7"'),
])
def test_utf7_is_not_honoured(head, ctype):
    """It was: the caption became <script>alert(1)</script>. No browser decodes UTF-7."""
    page = extract_page(_alt_page(head), URL, ctype)
    assert [p.caption for p in page.pairs] == [UTF7_ALT] and page.charset == "utf-8"


@pytest.mark.parametrize("label, name", [
    ("latin1", "windows-1252"), ("ISO-8859-1", "windows-1252"), ("ascii", "windows-1252"),
    ("us-ascii", "windows-1252"), ("iso_8859-1:1987", "windows-1252"), ("cp1252", "windows-1252"),
    ("iso-8859-9", "windows-1254"), ("tis-620", "windows-874"), ("iso-8859-11", "windows-874"),
    ("gb2312", "gb18030"), ("GBK", "gb18030"), ("x-gbk", "gb18030"), ("shift_jis", "shift_jis"),
    ("windows-31j", "shift_jis"), ("ks_c_5601-1987", "euc-kr"), ("big5", "big5"), ("koi8-u", "koi8-u"),
    ("x-mac-cyrillic", "x-mac-cyrillic"), ("mac", "macintosh"), ("iso-8859-8-i", "iso-8859-8"),
    ("unicode-1-1-utf-8", "utf-8"), ("utf8", "utf-8"), ("  UTF-8 ", "utf-8"), ("cp866", "ibm866"),
])
def test_labels_decode_as_in_a_browser(label, name):
    body = "<p>caf\u00e9 \u201cquoted\u201d</p>".encode("cp1252", "replace") if name == "windows-1252" else b"<p>x</p>"
    text, charset, how = decode_html(body, f"text/html; charset={label}")
    assert (charset, how) == (name, "header")
    if name == "windows-1252":  # 0x93/0x94 are the quotes its author typed, not C1 controls
        assert text == "<p>caf\u00e9 \u201cquoted\u201d</p>"


@pytest.mark.parametrize("label", ["utf-7", "utf-32", "UTF-32LE", "cp037", "ebcdic-cp-us", "bogus", "cesu-8", "hz"])
def test_unknown_labels_fall_through_to_the_next_step(label):
    assert codec_for(label) is None
    body = '<meta charset="windows-1251"><p>\u041f\u0440\u0438\u0432\u0435\u0442</p>'.encode("cp1251")
    assert decode_html(body, f"text/html; charset={label}")[1:] == ("windows-1251", "meta")
    assert decode_html(b"<p>plain</p>", f"text/html; charset={label}")[1:] == ("utf-8", "utf-8")


@pytest.mark.parametrize("label", ["iso-2022-kr", "csiso2022kr", "hz-gb-2312", "iso-2022-cn", "iso-2022-cn-ext",
                                   "replacement"])
def test_replacement_labels_decode_the_page_to_one_replacement_character(label):
    """The Encoding Standard maps these to "replacement": escape sequences (ESC $ ) C, ~{) could hide markup."""
    body = b'<html><body>\x1b$)C<img src="a.jpg" alt="\x0e!!\x0f"></body></html>'
    for head, ctype in (("", f"text/html; charset={label}"), (f'<meta charset="{label}">', None)):
        page = extract_page(head.encode() + body, URL, ctype)
        assert (page.pairs, page.charset) == ([], "replacement")
    assert decode_html(body, f"text/html; charset={label}")[:2] == ("\ufffd", "replacement")
    # valid non-ASCII UTF-8 still wins over any label (our deliberate exception, see the module doc)
    assert decode_html("<p>é</p>".encode(), f"text/html; charset={label}")[1:] == ("utf-8", "utf-8")


def test_meta_cannot_declare_utf16_or_x_user_defined():
    assert decode_html(b'<meta charset="utf-16"><p>x</p>')[1:] == ("utf-8", "meta")
    assert decode_html(b'<meta charset="x-user-defined"><p>\x80</p>')[:2] == ("<meta charset=\"x-user-defined\"><p>\u20ac</p>",
                                                                            "windows-1252")
    assert decode_html(b"<p>\x80</p>", "text/html; charset=x-user-defined")[:2] == ("<p>\uf780</p>", "x-user-defined")
    assert decode_html(b"<\x00p\x00>\x00", "text/html; charset=utf-16")[1] == "utf-16le"


@pytest.mark.parametrize("name, codec", [
    ("utf_7", None), ("utf_32", None), ("cp037", None), ("cp500", None), ("hz", None), ("iso2022_kr", None),
    ("utf_16", None), ("cp1125", None), ("latin_1", "cp1252"), ("ascii", "cp1252"), ("euc_kr", "cp949"),
    ("shift_jis", "cp932"), ("gb2312", "gb18030"), ("big5", "big5hkscs"), ("iso8859_2", "iso8859-2"),
    ("mac_roman", "mac-roman"), ("windows-1251", "cp1251"), ("koi8_r", "koi8-r"), ("tis_620", "cp874"),
])
def test_detector_guesses_are_kept_to_web_encodings(name, codec):
    assert detected_codec(name) == codec
