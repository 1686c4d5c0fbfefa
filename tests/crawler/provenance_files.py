"""Real image files carrying consent/provenance metadata, made at test time (only the public C2PA test signer is committed):

* XMP packets (IPTC/PLUS Data Mining, IPTC Digital Source Type, licences) written into JPEG, WebP and PNG by
  Pillow, into GIF as the ``XMP DataXMP`` application extension, into JPEG as extended XMP;
* C2PA manifests signed by c2pa-python (skipped when it is absent) with c2pa-python's own public ES256 test
  credentials (copied from its repository's tests/fixtures into fixtures/c2pa/: the wheel ships none and the
  tests use no network);
* a loopback HTTP server serving them (and an origin's ``/ai.txt``).
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
from pathlib import Path

import numpy as np
from aiohttp import web
from PIL import Image, PngImagePlugin

DMI = "http://ns.useplus.org/ldf/vocab/"
DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def xmp_packet(data_mining: str | None = None, source_type: str | None = None, web_statement: str | None = None,
               cc_license: str | None = None, rights: str | None = None, extra: str = "",
               attrs: str = "") -> bytes:
    """An XMP packet as Photoshop/ExifTool write them (properties as elements, resources as rdf:resource)."""
    props = []
    if data_mining:
        props.append(f'<plus:DataMining rdf:resource="{DMI}{data_mining}"/>')
    if source_type:
        props.append(f"<Iptc4xmpExt:DigitalSourceType>{DST}{source_type}</Iptc4xmpExt:DigitalSourceType>")
    if web_statement:
        props.append(f"<xmpRights:WebStatement>{web_statement}</xmpRights:WebStatement>")
    if cc_license:
        props.append(f'<cc:license rdf:resource="{cc_license}"/>')
    if rights:
        props.append(f'<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">{rights}</rdf:li></rdf:Alt></dc:rights>')
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/" '
            'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
            'xmlns:xmpRights="http://ns.adobe.com/xap/1.0/rights/" xmlns:cc="http://creativecommons.org/ns#" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmpNote="http://ns.adobe.com/xmp/note/"'
            f' {attrs}>{"".join(props)}{extra}</rdf:Description></rdf:RDF></x:xmpmeta>\n'
            '<?xpacket end="w"?>').encode()


def picture(w: int = 96, h: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.BICUBIC)


def with_xmp(fmt: str, xmp: bytes | None, seed: int = 0, compress_png: bool = True,
             size: tuple[int, int] = (96, 64)) -> bytes:
    """A ``fmt`` (jpeg, png, webp, gif) image with ``xmp`` embedded the way that format carries it."""
    im, buf = picture(*size, seed=seed), io.BytesIO()
    if fmt == "jpeg":
        im.save(buf, "JPEG", quality=90, **({"xmp": xmp} if xmp else {}))
    elif fmt == "webp":
        im.save(buf, "WEBP", quality=80, **({"xmp": xmp} if xmp else {}))
    elif fmt == "png":
        info = PngImagePlugin.PngInfo()
        if xmp:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"), zip=compress_png)
        im.save(buf, "PNG", pnginfo=info)
    elif fmt == "gif":
        im.convert("P").save(buf, "GIF")
        return gif_with_xmp(buf.getvalue(), xmp) if xmp else buf.getvalue()
    else:
        raise ValueError(fmt)
    return buf.getvalue()


def gif_with_xmp(gif: bytes, xmp: bytes) -> bytes:
    """Insert XMP's GIF application extension (Adobe's layout: raw packet + 258-byte "magic trailer") after the
    global colour table."""
    flags = gif[10]
    at = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    ext = b"\x21\xff\x0bXMP DataXMP" + xmp + bytes([1]) + bytes(range(255, -1, -1)) + b"\x00"
    return gif[:at] + ext + gif[at:]


def jpeg_with_extended_xmp(main_props: str, ext_xmp: bytes, guid: str = "0123456789ABCDEF0123456789ABCDEF") -> bytes:
    """A JPEG whose standard XMP names ``guid`` in xmpNote:HasExtendedXMP and whose APP1 extension segments carry
    ``ext_xmp`` in two parts (Adobe XMP spec part 3, 1.1.3.1)."""
    main = xmp_packet(attrs=f'xmpNote:HasExtendedXMP="{guid}" {main_props}')
    base = with_xmp("jpeg", main)
    segs = b""
    half = len(ext_xmp) // 2
    for off, part in ((0, ext_xmp[:half]), (half, ext_xmp[half:])):
        payload = b"http://ns.adobe.com/xmp/extension/\x00" + guid.encode() + struct.pack(">II", len(ext_xmp), off) + part
        segs += b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return base[:2] + segs + base[2:]  # segment order does not matter to readers


def jpeg_with_app1(payload: bytes) -> bytes:
    """A JPEG with one raw APP1 segment (for oversized/hostile packets Pillow would refuse to write)."""
    base = with_xmp("jpeg", None)
    return base[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + base[2:]


#: "billion laughs": nine levels of entities, each ten of the one below (10^9 'lol's), in an XMP packet
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
          + ']><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
          '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:rights>&lol9;</dc:rights>'
          "</rdf:Description></rdf:RDF></x:xmpmeta>")


def jpeg_with_iim_copyright(notice: str, xmp: bytes | None = None) -> bytes:
    """A JPEG with a Photoshop APP13 segment holding an IPTC IIM record with the copyright notice (2:116), as
    older photo tools write it."""
    text = notice.encode("utf-8")
    iim = b"\x1c\x02\x00\x00\x02\x00\x04" + b"\x1c\x02\x74" + struct.pack(">H", len(text)) + text  # 2:0 version
    irb = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iim)) + iim + (b"\x00" if len(iim) & 1 else b"")
    payload = b"Photoshop 3.0\x00" + irb
    base = with_xmp("jpeg", xmp)
    return base[:2] + b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload + base[2:]


# ------------------------------------------------------------------ C2PA
#: c2pa-python's own public test signer (its tests/fixtures; the wheel does not ship them): see SOURCE.md there
C2PA_FIXTURES = Path(__file__).parent / "fixtures" / "c2pa"


def signer_pems() -> tuple[bytes, bytes]:
    """(certificate chain PEM: signer + intermediate, private key PEM): c2pa-python's ES256 test credentials."""
    return (C2PA_FIXTURES / "es256_certs.pem").read_bytes(), (C2PA_FIXTURES / "es256_private.key").read_bytes()


def training_mining(label: str = "cawg.training-mining", **uses: str) -> dict:
    """A training-and-data-mining assertion: ``training_mining("c2pa.training-mining", ai_training="notAllowed")``."""
    prefix = label.split(".", 1)[0]
    return {"label": label, "data": {"entries": {f"{prefix}.{k}": {"use": v} for k, v in uses.items()}}}


def source_type_action(source_type: str) -> dict:
    return {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.created",
                                                            "digitalSourceType": DST + source_type}]}}


def c2pa_signed(assertions: list[dict], fmt: str = "jpeg", seed: int = 0, xmp: bytes | None = None,
                size: tuple[int, int] = (96, 64)) -> bytes:
    """An image (with ``xmp`` if given) signed with a C2PA manifest holding ``assertions``."""
    import c2pa

    chain, key = signer_pems()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, key, None))
    if not any(a["label"].startswith("c2pa.actions") for a in assertions):  # the first action must be "created"
        assertions = [*assertions, source_type_action("digitalCapture")]
    manifest = {"claim_generator_info": [{"name": "clipcrawl-tests", "version": "1.0"}], "title": "test image",
                "assertions": assertions}
    mime = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[fmt]
    out = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, mime, io.BytesIO(with_xmp(fmt, xmp, seed=seed, size=size)), out)
    return out.getvalue()


def jpeg_segments(body: bytes) -> list[tuple[int, int, int]]:
    """(marker, start of the segment's payload, payload length) of a JPEG's segments before the scan."""
    out, pos = [], 2
    while pos + 4 <= len(body) and body[pos] == 0xFF and body[pos + 1] not in (0xDA, 0xD9):
        (length,) = struct.unpack_from(">H", body, pos + 2)
        out.append((body[pos + 1], pos + 4, length - 2))
        pos += 2 + length
    return out


def tampered_pixels(body: bytes) -> bytes:
    """``body`` with one byte of its entropy-coded data changed: the manifest's hash no longer matches."""
    sos = body.find(b"\xff\xda")
    at = sos + 40
    return body[:at] + bytes([body[at] ^ 0x55]) + body[at + 1:]


def broken_jumbf(body: bytes) -> bytes:
    """``body`` with the header of its C2PA JUMBF superbox (APP11, after the 8-byte JPEG XT preamble) clobbered:
    the reader finds the box and cannot parse it."""
    for marker, start, _length in jpeg_segments(body):
        if marker == 0xEB:
            return body[:start + 8] + b"\x00\x00\x00\x10XXXX" + body[start + 16:]
    raise AssertionError("no APP11 segment")


def truncated_jumbf(base: bytes | None = None) -> bytes:
    """A JPEG (``base``, default a plain one) whose APP11 segment holds a C2PA superbox that ends before its
    description box does."""
    base = base or with_xmp("jpeg", None)
    payload = (b"JP\x00\x01\x00\x00\x00\x01" + struct.pack(">I4s", 48, b"jumb") + struct.pack(">I4s", 40, b"jumd")
               + b"c2pa" + b"\x00" * 28)
    return base[:2] + b"\xff\xeb" + struct.pack(">H", len(payload) + 2) + payload + base[2:]


# ------------------------------------------------------------------ server
class FileServer:
    """``path -> (body, content type)`` on an ephemeral loopback port, in its own thread; requests recorded."""

    def __init__(self, files: dict[str, tuple] | None = None) -> None:  # (body, content type[, headers])
        self.files = dict(files or {})
        self.requests: list[str] = []
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for p in self.requests if p == path)

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        hit = self.files.get(request.path)
        if hit is None:
            return web.Response(status=404, text="not found")
        if hit[1] == "redirect":  # (target URL, "redirect")
            raise web.HTTPFound(hit[0].decode())
        return web.Response(body=hit[0], content_type=hit[1], headers=hit[2] if len(hit) > 2 else None)

    def start(self) -> FileServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_get("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, handle_signals=False)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
