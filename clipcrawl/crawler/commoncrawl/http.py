"""The HTTP message inside a WARC ``response`` record: status, headers, decoded body, HTML sniffing.

Parsed here rather than by the WARC library because archives in the wild bend HTTP: LF-only
header lines (ClueWeb09), ``Content-Encoding: gzip`` on bodies stored decoded (ClueWeb09, Common
Crawl renames it ``X-Crawler-Content-Encoding``), chunked bodies with wrong chunk sizes, gzip
bodies cut by ``WARC-Truncated``. Every decoder here keeps what it could decode and never raises.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/vnd.wap.xhtml+xml"})
#: Declared types that say nothing; the payload is sniffed then.
VAGUE_TYPES = frozenset({"", "text/plain", "application/octet-stream", "unknown/unknown", "application/unknown",
                         "text/x-unknown", "content/unknown", "*/*"})
_HEX = re.compile(rb"^[0-9a-fA-F]+$")
_SNIFF = re.compile(rb"<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>]|meta\s|title>)", re.IGNORECASE)


@dataclass
class HttpMessage:
    status: int | None
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; repeated ones joined by ", "
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def mime_type(self) -> str:
        return (self.headers.get("content-type") or "").split(";", 1)[0].strip().lower()


def parse_http(block: bytes) -> HttpMessage | None:
    """Status line + headers + raw body of an HTTP response block; None when it is not HTTP."""
    if not block.startswith(b"HTTP/"):
        return None
    crlf, lf = block.find(b"\r\n\r\n"), block.find(b"\n\n")
    if crlf < 0 and lf < 0:
        head, body = block, b""
    elif lf < 0 or (0 <= crlf < lf):
        head, body = block[:crlf], block[crlf + 4:]
    else:
        head, body = block[:lf], block[lf + 2:]
    lines = head.split(b"\n")
    parts = lines[0].split(None, 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    headers: dict[str, str] = {}
    last = None
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and last:  # obsolete line folding
            headers[last] += " " + line.strip().decode("latin-1")
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.strip().decode("latin-1").lower()
        val = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {val}" if key in headers else val
        last = key
    return HttpMessage(status, headers, body)


def dechunk(body: bytes) -> bytes:
    """Undo ``Transfer-Encoding: chunked``; returns ``body`` unchanged when it is not chunked."""
    out: list[bytes] = []
    pos, n = 0, len(body)
    while pos < n:
        eol = body.find(b"\n", pos)
        if eol < 0:
            break
        size_field = body[pos:eol].strip().split(b";", 1)[0]
        if not _HEX.match(size_field):
            if not out:
                return body  # not chunked at all (headers kept after decoding, as many crawlers do)
            break
        size = int(size_field, 16)
        if size == 0:
            break
        start = eol + 1
        out.append(body[start:start + size])
        pos = start + size
        if body[pos:pos + 2] == b"\r\n":
            pos += 2
        elif body[pos:pos + 1] == b"\n":
            pos += 1
    return b"".join(out) if out else body


def _inflate(data: bytes, wbits: int, limit: int) -> bytes | None:
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, limit)
    except zlib.error:
        return None
    return out or None


def decode_body(msg: HttpMessage, limit: int = 50_000_000) -> bytes:
    """The body with transfer and content codings removed, as far as they decode (capped at ``limit``)."""
    body = msg.body
    if "chunked" in (msg.header("transfer-encoding") or "").lower():
        body = dechunk(body)
    coding = (msg.header("content-encoding") or "").lower()
    if not coding or coding == "identity":
        return body
    out: bytes | None = None
    if "gzip" in coding and body[:2] == b"\x1f\x8b":
        out = _inflate(body, 16 + zlib.MAX_WBITS, limit)
    elif "deflate" in coding:
        out = _inflate(body, zlib.MAX_WBITS, limit) or _inflate(body, -zlib.MAX_WBITS, limit)
    elif "br" in coding and not _SNIFF.search(body[:1024]):
        out = _unbrotli(body, limit)
    return out if out else body  # stored decoded despite the header (ClueWeb09, many crawlers)


def _unbrotli(data: bytes, limit: int) -> bytes | None:
    try:
        import brotli

        d = brotli.Decompressor()
        try:
            return d.process(data, output_buffer_limit=limit)[:limit] or None
        except TypeError:  # brotli < 1.2: no output limit; refuse what could be a bomb
            return d.process(data)[:limit] if len(data) * 50 <= limit else None
    except Exception:  # noqa: BLE001 - brotli missing, or data already decoded/broken
        return None


def looks_like_html(body: bytes) -> bool:
    head = body[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    return bool(_SNIFF.search(head))


def is_html(msg: HttpMessage, body: bytes, identified_type: str | None = None) -> bool:
    """Declared HTML, or an undeclared/vague type whose payload looks like HTML."""
    mime = msg.mime_type
    if mime in HTML_TYPES:
        return True
    ident = (identified_type or "").split(";", 1)[0].strip().lower()
    if mime in VAGUE_TYPES or ident in HTML_TYPES:
        return looks_like_html(body)
    return False
