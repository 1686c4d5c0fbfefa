"""Decode HTML bytes the way a browser would, with a detector as the last resort.

Order (WHATWG "encoding sniffing", simplified): a byte-order mark; then UTF-8 if the body has
non-ASCII bytes and they are all valid UTF-8 (a legacy-encoded text almost never is, while
"charset=iso-8859-1" headers on UTF-8 pages are common: here we deliberately part from WHATWG);
the charset of the HTTP ``Content-Type`` header; a ``<meta charset>`` or
``<meta http-equiv="Content-Type">`` in the first :data:`PRESCAN_BYTES`; then charset-normalizer,
restricted to the code pages of the ``<html lang>`` language when there is one (else with a
web-popularity tie-break); then windows-1252. Undecodable bytes become U+FFFD; decoding never fails.

Every label, from the header, a meta or the detector, goes through the WHATWG Encoding Standard's
label table (the ``webencodings`` package), as in a browser: ``iso-8859-1``, ``latin1`` and ``ascii``
are windows-1252 (the bytes 0x80-0x9F of a "latin-1" page become the quotes and dashes its author
typed), ``gb2312``/``gbk`` decode as gb18030, ``shift_jis`` as cp932, ``euc-kr`` as cp949. Labels the
standard does not have (``utf-7``, ``utf-32``, EBCDIC code pages, ``bogus``) are ignored, so the next
step decides: ``<meta charset="utf-7">`` no longer turns ``+ADw-script+AD4-`` into ``<script>``. The
labels of the ``replacement`` encoding (``iso-2022-kr``, ``iso-2022-cn``, ``hz-gb-2312``, ...: encodings
whose escape sequences hide markup) decode the whole page to one U+FFFD, as the standard says. A meta
cannot declare UTF-16 (it was read as ASCII: UTF-8 then) nor x-user-defined (windows-1252 then).
"""

from __future__ import annotations

import codecs
import functools
import re

PRESCAN_BYTES = 16384  # WHATWG scans 1024; real pages put long scripts/styles before the meta
DETECT_BYTES = 200_000  # bytes handed to charset-normalizer

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9._:+-]+)""", re.I)
_META = re.compile(rb"<meta\s[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:+-]+)", re.I)

#: WHATWG encoding -> the Python codec that decodes it as browsers do, where webencodings' differs
_CODEC_OVERRIDE = {"gbk": "gb18030"}  # the Encoding Standard's gbk decoder is its gb18030 decoder
#: Python codecs charset-normalizer may name -> the superset a browser decodes that page with
_DETECTED_SUPERSET = {"latin-1": "cp1252", "iso8859-1": "cp1252", "ascii": "cp1252", "iso8859-9": "cp1254",
                      "iso8859-11": "cp874", "tis-620": "cp874", "shift_jis": "cp932", "euc_kr": "cp949",
                      "gb2312": "gb18030", "gbk": "gb18030", "big5": "big5hkscs"}
REPLACEMENT = "replacement"  # the encoding that decodes any page to one U+FFFD
X_USER_DEFINED = "x-user-defined"
# Python codec name -> the name we report (WHATWG's)
_PRETTY = {"cp932": "shift_jis", "cp949": "euc-kr", "big5hkscs": "big5", "cp874": "windows-874",
           "euc_jp": "euc-jp", "iso2022_jp": "iso-2022-jp", "mac-roman": "macintosh", "utf-16-le": "utf-16le",
           "utf-16-be": "utf-16be", "mac-cyrillic": "x-mac-cyrillic", "cp866": "ibm866"}


@functools.lru_cache(maxsize=256)
def codec_for(label: str | None, from_meta: bool = False) -> str | None:
    """A charset label -> the Python codec that decodes it as browsers do (:data:`REPLACEMENT` and
    :data:`X_USER_DEFINED` are decoded by :func:`decode_with`), or None when the WHATWG Encoding
    Standard has no such label."""
    import webencodings

    enc = webencodings.lookup(label.strip().strip("\"'")) if label else None
    if enc is None:
        return None
    name = enc.name
    if from_meta and name in ("utf-16le", "utf-16be"):
        name = "utf-8"  # a meta can't truthfully declare UTF-16 (it was read as ASCII): WHATWG says utf-8
    elif from_meta and name == X_USER_DEFINED:
        name = "windows-1252"
    if name in (REPLACEMENT, X_USER_DEFINED):
        return name
    return _CODEC_OVERRIDE.get(name) or codecs.lookup(webencodings.lookup(name).codec_info.name).name


@functools.lru_cache(maxsize=1)
def _web_codecs() -> frozenset[str]:
    """The Python codecs of the WHATWG encodings (those a browser may decode a page with)."""
    import webencodings

    return frozenset(c for c in (codec_for(label) for label in webencodings.LABELS)
                     if c not in (None, REPLACEMENT, X_USER_DEFINED))


@functools.lru_cache(maxsize=256)
def detected_codec(name: str | None) -> str | None:
    """A codec name charset-normalizer gives -> the codec a browser would decode with, or None when no
    WHATWG encoding decodes like it (utf_7, utf_32, EBCDIC cp037, ...)."""
    if not name:
        return None
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        codec = codec_for(name) or ""
    codec = _DETECTED_SUPERSET.get(codec, codec)
    return codec if codec in _web_codecs() else None


def decode_with(body: bytes, codec: str) -> str:
    """``body`` decoded with a codec of :func:`codec_for`; undecodable bytes become U+FFFD."""
    if codec == REPLACEMENT:
        return "\ufffd" if body else ""
    if codec == X_USER_DEFINED:  # 0x80-0xFF -> U+F780-U+F7FF
        return body.decode("latin-1").translate(_X_USER_DEFINED_TABLE)
    return body.decode(codec, "replace")


_X_USER_DEFINED_TABLE = {b: 0xF780 + b - 0x80 for b in range(0x80, 0x100)}


def pretty_name(codec: str) -> str:
    """``cp1252`` -> ``windows-1252``, ``iso8859-2`` -> ``iso-8859-2``."""
    if codec in _PRETTY:
        return _PRETTY[codec]
    if codec in (REPLACEMENT, X_USER_DEFINED):
        return codec
    if re.fullmatch(r"cp125\d", codec):
        return "windows-" + codec[2:]
    if codec.startswith("iso8859-"):
        return "iso-" + codec[3:]
    return codec.replace("_", "-")


def header_charset(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type header value, if any."""
    if not content_type:
        return None
    m = _HEADER_CHARSET.search(content_type)
    return m.group(1) if m else None


def meta_charset(head: bytes) -> str | None:
    """The charset a ``<meta>`` near the top of the document declares, if any."""
    m = _META.search(head[:PRESCAN_BYTES])
    return m.group(1).decode("ascii", "replace") if m else None


#: legacy encodings by how common they are on the web: the tie-breaker between near-equal guesses
WEB_RANK = ("utf-8", "cp1252", "gb18030", "cp1251", "cp932", "cp949", "euc_jp", "iso8859-2", "cp1250", "big5hkscs",
            "cp1256", "cp1253", "cp1254", "cp874", "cp1255", "koi8-r", "iso8859-15", "cp1257")
CHAOS_MARGIN = 0.03  # guesses this close to the best (in mess ratio) count as ties
LANG_MARGIN = 0.1  # the page language's code page wins unless it is this much messier than the best
_LANG_GROUPS = (
    ("cp1252", "en fr de es pt it nl sv da no nb nn fi is ca eu gl ga af sq id ms sw lb fo oc br co wa"),
    ("cp1250 iso8859_2", "pl cs sk hu sl hr bs ro"),
    ("cp1257 iso8859_13", "lt lv et"),
    ("cp1254 iso8859_9", "tr az"),
    ("cp1251 koi8_r koi8_u", "ru uk bg be sr mk kk ky tg mn"),
    ("cp1253 iso8859_7", "el"),
    ("cp1255 iso8859_8", "he yi"),
    ("cp1256 iso8859_6", "ar fa ur"),
    ("cp874", "th"),
    ("cp1258", "vi"),
    ("cp932 euc_jp iso2022_jp", "ja"),
    ("gb18030 big5", "zh"),
    ("cp949", "ko"),
)
#: primary language subtag -> the legacy code pages its pages were written in
LANG_CODECS = {lang: tuple(codecs_.split()) for codecs_, langs in _LANG_GROUPS for lang in langs.split()}
_HTML_LANG = re.compile(rb"<html[^>]*?\slang\s*=\s*[\"']?\s*([A-Za-z]{2,3})\b", re.I)


def lang_hint(body: bytes) -> str | None:
    """The primary subtag of ``<html lang>``, read from the raw bytes."""
    m = _HTML_LANG.search(body[:PRESCAN_BYTES])
    return m.group(1).decode("ascii").lower() if m else None


def detect(body: bytes, lang: str | None = None) -> str | None:
    """charset-normalizer's guess, as a codec name. When the page names its language, only that
    language's legacy code pages are tried (short Latin texts decode with little "chaos" in many
    code pages: French is not Baltic windows-1257). Otherwise, among near-ties, the code page most
    common on the web wins."""
    from charset_normalizer import from_bytes

    sample = body[:DETECT_BYTES]
    matches = list(from_bytes(sample))
    if not matches:
        return None
    best = matches[0]
    isolation = LANG_CODECS.get(lang or "")
    if isolation:
        guess = from_bytes(sample, cp_isolation=list(isolation)).best()
        # a wrong lang attribute (a CMS default "en") must not force a much messier decoding
        if guess is not None and guess.chaos <= best.chaos + LANG_MARGIN and detected_codec(guess.encoding):
            return detected_codec(guess.encoding)
    rank = {c: i for i, c in enumerate(WEB_RANK)}
    scored = []
    for m in matches:
        if m.chaos > best.chaos + CHAOS_MARGIN or m.coherence < best.coherence - 0.05:
            continue
        for enc in m.could_be_from_charset or [m.encoding]:
            codec = detected_codec(enc)
            if codec is not None:
                scored.append((rank.get(codec, len(rank)), codec))
    return min(scored)[1] if scored else detected_codec(best.encoding)


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str, str]:
    """Decode a page. Returns ``(text, charset, how)`` with ``charset`` the reported (WHATWG) name
    and ``how`` one of ``bom``, ``header``, ``meta``, ``utf-8``, ``detected``, ``default``."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(name, "replace"), pretty_name(name), "bom"
    ascii_only = body.isascii()
    if not ascii_only:
        try:  # non-ASCII bytes that form valid UTF-8 are UTF-8 whatever the page claims
            return body.decode("utf-8"), "utf-8", "utf-8"
        except UnicodeDecodeError:
            pass
    codec = codec_for(header_charset(content_type))
    how = "header"
    if codec is None:
        codec, how = codec_for(meta_charset(body), from_meta=True), "meta"
    if codec is not None:
        return decode_with(body, codec), pretty_name(codec), how
    if ascii_only:
        return body.decode("ascii"), "utf-8", "utf-8"
    codec = detect(body, lang_hint(body))
    if codec is not None:
        return decode_with(body, codec), pretty_name(codec), "detected"
    return body.decode("cp1252", "replace"), "windows-1252", "default"
