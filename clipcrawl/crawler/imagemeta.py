"""Consent and provenance carried by the image itself, read from the ORIGINAL bytes before any decode.

The downloader re-encodes every image, which strips its metadata; what the metadata said is read here first:

* **XMP** (``read_xmp``): JPEG APP1 (``http://ns.adobe.com/xap/1.0/`` plus extended XMP segments, reassembled
  by GUID and offset), PNG ``iTXt`` ``XML:com.adobe.xmp`` (zlib-compressed or not), WebP's ``XMP `` chunk,
  GIF's ``XMP DataXMP`` application extension. Only the container's segment headers are walked (no pixel data is
  touched), so an image without metadata costs a few microseconds.
* From the XMP: IPTC/PLUS **Data Mining** (``plus:DataMining``), IPTC **Digital Source Type**
  (``Iptc4xmpExt:DigitalSourceType``: ``trainedAlgorithmicMedia`` and ``compositeWithTrainedAlgorithmicMedia``
  mean made by a generative model), and the licence (``xmpRights:WebStatement``, ``cc:license``, then the IPTC
  copyright notice ``dc:rights``; a JPEG without any of them: the IPTC IIM copyright notice, 2:116, of its
  Photoshop APP13 segment).
* **C2PA** manifests (JUMBF in JPEG APP11, PNG ``caBX``, WebP ``C2PA``): only when the cheap pre-scan found such
  a box is the official reader (``c2pa-python``, optional: ``pip install clipcrawl[provenance]``) run on the
  bytes; it gives the validation state, the claim generator, the ``c2pa.training-mining`` /
  ``cawg.training-mining`` entries and ``c2pa.actions`` ``digitalSourceType``. It runs offline (no remote
  manifest or OCSP request: :data:`C2PA_SETTINGS`) on a copy of the body already downloaded.

:func:`refusal` turns that into the reason an image must not be used for training (or None):
``plus:DataMining`` ``DMI-PROHIBITED*`` (every prohibited value, the "see constraint/rights expression" ones
conservatively), a C2PA/CAWG ``ai_training``, ``ai_generative_training`` or ``data_mining`` entry whose ``use``
is ``notAllowed`` or ``constrained`` (whatever the signature's validation state: a broken signature does not
make a rightsholder's opt-out void), and metadata that cannot be read safely (an XMP packet over
:data:`MAX_XMP_BYTES`, an XMP with a DTD or entity declarations -- XMP never has one, "billion laughs" does --,
a C2PA manifest store the reader rejects): what it said is unknown, so the image is refused, conservatively,
with the cause.

XML is parsed with expat directly: a DOCTYPE or ENTITY declaration aborts the parse before anything is expanded;
element count and depth are capped.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from xml.parsers import expat

#: an XMP packet (standard + extended, reassembled; PNG's decompressed) over this many bytes is refused unread
MAX_XMP_BYTES = 1 << 20
#: more XML elements / deeper nesting than this in one XMP packet: refused (a sane packet has a few hundred)
MAX_XMP_ELEMENTS = 20_000
MAX_XMP_DEPTH = 64
#: container segments walked at most (JPEG markers, PNG/WebP chunks) before the scan gives up
MAX_SEGMENTS = 4096
#: the C2PA reader is given at most this many bytes of an image (the body cap applies anyway)
MAX_C2PA_BYTES = 64 << 20

NS_PLUS = "http://ns.useplus.org/ldf/xmp/1.0/"
NS_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
NS_XMP_RIGHTS = "http://ns.adobe.com/xap/1.0/rights/"
NS_CC = "http://creativecommons.org/ns#"
NS_DC = "http://purl.org/dc/elements/1.1/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

#: XMP properties read, as expat's "namespace local" names -> our field
_WANTED = {
    f"{NS_PLUS} DataMining": "data_mining",
    f"{NS_IPTC_EXT} DigitalSourceType": "digital_source_type",
    f"{NS_XMP_RIGHTS} WebStatement": "web_statement",
    f"{NS_CC} license": "cc_license",
    f"{NS_DC} rights": "rights",
}
_RDF_RESOURCE = f"{NS_RDF} resource"
_RDF_LI = f"{NS_RDF} li"

#: IPTC Digital Source Type values that mean "made (in part) by a generative model"
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
#: PLUS Data Mining values that allow it, or say nothing
DMI_ALLOWED = frozenset({"DMI-ALLOWED", "DMI-UNSPECIFIED"})
#: C2PA/CAWG training-and-data-mining entries whose refusal refuses the image (``ai_inference`` alone does not:
#: it is about using the image as a model's input, not about training on it)
REFUSING_ENTRIES = ("ai_training", "ai_generative_training", "data_mining")
TRAINING_MINING_LABELS = ("c2pa.training-mining", "cawg.training-mining")

_XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_JPEG_EXT = b"http://ns.adobe.com/xmp/extension/\x00"


class MetadataRefused(Exception):
    """Metadata that is not read because reading it is unsafe (its size, a DTD): the message says why."""


@dataclass
class ImageMeta:
    """What an image's embedded metadata says. ``None`` fields: not stated."""

    data_mining: str | None = None  # the PLUS value, short form: "DMI-PROHIBITED-AIMLTRAINING"
    digital_source_type: str | None = None  # IPTC, short form: "trainedAlgorithmicMedia"
    license: str | None = None  # licence URL or notice
    license_source: str | None = None  # xmpRights:WebStatement | cc:license | dc:rights | iptc:CopyrightNotice
    has_jumbf: bool = False  # the pre-scan saw a C2PA/JUMBF box
    c2pa_present: bool = False  # the reader found a manifest store
    c2pa_validation_state: str | None = None  # Valid | Trusted | Invalid | "unreadable: <cause>"
    c2pa_claim_generator: str | None = None
    c2pa_training_mining: dict[str, str] = field(default_factory=dict)  # entry ("ai_training") -> use
    c2pa_source_types: list[str] = field(default_factory=list)  # digitalSourceType of c2pa.actions, short form
    unsafe: str | None = None  # why the metadata was refused unread (oversized, DTD, unreadable manifest)

    @property
    def ai_generated(self) -> bool | None:
        """True when IPTC or C2PA say a generative model made the image, False when a source type is stated and
        is not one of those, None when nothing says."""
        return self.ai_generated_from()[0]

    def ai_generated_from(self) -> tuple[bool | None, str | None]:
        """``(ai_generated, source)``; source ``"iptc"``, ``"c2pa"`` or ``"iptc,c2pa"`` (whichever stated it)."""
        said: dict[str, bool] = {}
        if self.digital_source_type:
            said["iptc"] = self.digital_source_type in AI_SOURCE_TYPES
        if self.c2pa_source_types:
            said["c2pa"] = any(t in AI_SOURCE_TYPES for t in self.c2pa_source_types)
        if not said:
            return None, None
        if any(said.values()):
            return True, ",".join(k for k, v in said.items() if v)
        return False, ",".join(said)

    def training_mining_text(self) -> str | None:
        if not self.c2pa_training_mining:
            return None
        return ",".join(f"{k}={v}" for k, v in sorted(self.c2pa_training_mining.items()))


# ------------------------------------------------------------------ containers
def sniff(body: bytes) -> str | None:
    if body[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if body[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "webp"
    if body[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def _check_size(n: int) -> None:
    if n > MAX_XMP_BYTES:
        raise MetadataRefused(f"XMP packet of {n:,} bytes exceeds the {MAX_XMP_BYTES:,}-byte cap")


def iim_copyright(seg: bytes) -> str | None:
    """The IPTC IIM copyright notice (record 2, dataset 116) of a Photoshop APP13 segment, or None."""
    if not seg.startswith(b"Photoshop 3.0\x00"):
        return None
    pos, n = 14, len(seg)
    for _ in range(MAX_SEGMENTS):
        if pos + 12 > n or seg[pos:pos + 4] != b"8BIM":
            return None
        (rid,) = struct.unpack_from(">H", seg, pos + 4)
        name_len = seg[pos + 6]
        pos += 6 + ((name_len + 2) & ~1)  # Pascal name, padded to an even length
        if pos + 4 > n:
            return None
        (size,) = struct.unpack_from(">I", seg, pos)
        data = seg[pos + 4:pos + 4 + size]
        pos += 4 + size + (size & 1)
        if rid != 0x0404:  # IPTC-NAA record
            continue
        i = 0
        while i + 5 <= len(data) and data[i] == 0x1C:
            rec, ds, ln = data[i + 1], data[i + 2], struct.unpack_from(">H", data, i + 3)[0]
            if ln & 0x8000:  # extended dataset length: not used for text fields
                return None
            if (rec, ds) == (2, 116):
                raw = data[i + 5:i + 5 + ln]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("latin-1")
                return text.strip() or None
            i += 5 + ln
        return None
    return None


def _jpeg(body: bytes) -> tuple[bytes | None, bool, str | None]:
    pos, n, seen = 2, len(body), 0
    xmp: bytes | None = None
    ext: dict[bytes, tuple[int, dict[int, bytes]]] = {}  # guid -> (full length, offset -> part)
    jumbf = False
    iim: str | None = None
    while pos + 4 <= n and seen < MAX_SEGMENTS:
        seen += 1
        if body[pos] != 0xFF:
            break
        marker = body[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: metadata comes before
            break
        (length,) = struct.unpack_from(">H", body, pos + 2)
        seg = body[pos + 4:pos + 2 + length]
        if marker == 0xE1:
            if seg.startswith(_XMP_JPEG) and xmp is None:
                xmp = seg[len(_XMP_JPEG):]
                _check_size(len(xmp))
            elif seg.startswith(_XMP_JPEG_EXT) and len(seg) >= len(_XMP_JPEG_EXT) + 40:
                h = len(_XMP_JPEG_EXT)
                guid = seg[h:h + 32]
                full, off = struct.unpack_from(">II", seg, h + 32)
                _check_size(full)
                parts = ext.setdefault(guid, (full, {}))[1]
                parts[off] = seg[h + 40:]
                _check_size(sum(len(p) for q in ext.values() for p in q[1].values()))
        elif marker == 0xEB and seg[:2] == b"JP":  # APP11 JUMBF (C2PA)
            jumbf = True
        elif marker == 0xED and iim is None:  # APP13: Photoshop IRB with the IPTC IIM record
            iim = iim_copyright(seg)
        pos += 2 + length
    if xmp is not None and ext:
        main = _parse_xmp(xmp)
        guid = (main.get("HasExtendedXMP") or "").encode("ascii", "replace")
        if guid in ext:
            full, parts = ext[guid]
            joined = b"".join(parts[k] for k in sorted(parts))[:full]
            xmp = xmp + b"\n" + joined  # parsed as two packets by read_xmp
    return xmp, jumbf, iim


def _png(body: bytes) -> tuple[bytes | None, bool]:
    pos, n, seen = 8, len(body), 0
    xmp: bytes | None = None
    jumbf = False
    while pos + 8 <= n and seen < MAX_SEGMENTS:
        seen += 1
        length, ctype = struct.unpack_from(">I4s", body, pos)
        data = body[pos + 8:pos + 8 + length]
        if ctype == b"iTXt" and xmp is None and data.startswith(b"XML:com.adobe.xmp\x00"):
            rest = data[len(b"XML:com.adobe.xmp\x00"):]
            compressed = rest[:1] == b"\x01"
            rest = rest[2:]
            rest = rest[rest.find(b"\x00") + 1:]  # language tag
            rest = rest[rest.find(b"\x00") + 1:]  # translated keyword
            if compressed:
                d = zlib.decompressobj()
                try:
                    rest = d.decompress(rest, MAX_XMP_BYTES + 1)
                except zlib.error as e:
                    raise MetadataRefused(f"PNG iTXt XMP does not decompress: {e}") from None
            _check_size(len(rest))
            xmp = rest
        elif ctype == b"caBX":
            jumbf = True
        elif ctype == b"IEND":
            break
        pos += 12 + length
    return xmp, jumbf


def _webp(body: bytes) -> tuple[bytes | None, bool]:
    pos, n, seen = 12, len(body), 0
    xmp: bytes | None = None
    jumbf = False
    while pos + 8 <= n and seen < MAX_SEGMENTS:
        seen += 1
        fourcc, length = struct.unpack_from("<4sI", body, pos)
        if fourcc == b"XMP " and xmp is None:
            _check_size(length)
            xmp = body[pos + 8:pos + 8 + length]
        elif fourcc == b"C2PA":
            jumbf = True
        pos += 8 + length + (length & 1)
    return xmp, jumbf


def _gif(body: bytes) -> tuple[bytes | None, bool]:
    at = body.find(b"\x21\xff\x0bXMP DataXMP")
    if at < 0:
        return None, False
    start = at + 14
    end = body.find(b"<?xpacket end=", start, start + MAX_XMP_BYTES + 64)
    if end < 0:
        end = body.find(b"</x:xmpmeta>", start, start + MAX_XMP_BYTES + 64)
        if end < 0:
            _check_size(len(body) - start)
            return None, False
        end += len(b"</x:xmpmeta>")
    else:
        close = body.find(b"?>", end)
        end = close + 2 if close > 0 else end
    _check_size(end - start)
    return body[start:end], False


def scan(body: bytes) -> tuple[bytes | None, bool, str | None]:
    """``(xmp packet bytes or None, whether a C2PA/JUMBF box is present, JPEG's IPTC IIM copyright notice)``
    from the container's headers. Raises :class:`MetadataRefused` for an oversized packet."""
    kind = sniff(body)
    try:
        if kind == "jpeg":
            return _jpeg(body)
        if kind in ("png", "webp", "gif"):
            return (*{"png": _png, "webp": _webp, "gif": _gif}[kind](body), None)
    except struct.error:  # a truncated segment header: what came before it was read
        return None, False, None
    return None, False, None


def read_xmp(body: bytes) -> tuple[bytes | None, bool]:
    """``(xmp packet bytes or None, whether a C2PA/JUMBF box is present)``."""
    return scan(body)[:2]


# ------------------------------------------------------------------ XMP
def _short(value: str) -> str:
    v = value.strip()
    return v.rstrip("/").rsplit("/", 1)[-1] if "/" in v and not v.startswith("DMI-") else v


def _parse_xmp(xmp: bytes) -> dict[str, str]:
    """The wanted properties of one or more XMP packets (text, attribute or ``rdf:resource`` forms; the first
    ``rdf:li`` of a Bag/Seq/Alt). Raises :class:`MetadataRefused` for a DTD, an entity declaration, or a packet
    over the element or depth caps. Malformed XML gives what was read before the error."""
    out: dict[str, str] = {}
    # several packets (JPEG's standard + extended): parse each inside one synthetic root
    body = xmp.replace(b"<?xpacket", b"<?xpkt").replace(b"<?xml", b"<?xdecl")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise MetadataRefused("XMP declares a DTD or entities (never in XMP; refused unread)")
    p = expat.ParserCreate(namespace_separator=" ")
    stack: list[str] = []
    capture: list[list] = []  # [field, depth, text parts]
    count = [0]

    def refuse(*_a: object) -> None:
        raise MetadataRefused("XMP declares a DTD or entities (never in XMP; refused unread)")

    def start(name: str, attrs: dict[str, str]) -> None:
        count[0] += 1
        if count[0] > MAX_XMP_ELEMENTS or len(stack) >= MAX_XMP_DEPTH:
            raise MetadataRefused(f"XMP over {MAX_XMP_ELEMENTS:,} elements or {MAX_XMP_DEPTH} levels deep")
        for k, v in attrs.items():
            f = _WANTED.get(k)
            if f and f not in out and v.strip():
                out[f] = v.strip()
            elif k.endswith(" HasExtendedXMP"):
                out["HasExtendedXMP"] = v.strip()
        f = _WANTED.get(name)
        if f:
            res = attrs.get(_RDF_RESOURCE)
            if res and f not in out:
                out[f] = res.strip()
            capture.append([f, len(stack), []])
        stack.append(name)

    def end(name: str) -> None:
        stack.pop()
        if capture:
            f, depth, parts = capture[-1]
            if len(stack) == depth:
                capture.pop()
                text = "".join(parts).strip()
                if text and f not in out:
                    out[f] = text
            elif name == _RDF_LI and f not in out:
                text = "".join(parts).strip()
                if text:
                    out[f] = text

    def chars(data: str) -> None:
        if capture:
            parts = capture[-1][2]
            if sum(map(len, parts)) < 4096:
                parts.append(data)

    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    p.UnparsedEntityDeclHandler = refuse
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    try:
        p.Parse(b"<xmp-root>", False)
        p.Parse(body, False)
        p.Parse(b"</xmp-root>", True)
    except expat.ExpatError:
        pass  # malformed: keep what was read
    return out


# ------------------------------------------------------------------ C2PA
_warned = False  # the "c2pa-python not installed" warning is logged once per process


def _entry_name(key: str) -> str:
    return key.split(".", 1)[1] if key.startswith(("c2pa.", "cawg.")) else key


def apply_c2pa_store(meta: ImageMeta, store: dict, state: str | None) -> None:
    """Fill ``meta``'s C2PA fields from a manifest store (the reader's JSON)."""
    meta.c2pa_present = True
    meta.c2pa_validation_state = state or store.get("validation_state")
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest") or "") or {}
    gen = active.get("claim_generator")
    info = active.get("claim_generator_info") or []
    if not gen and info and isinstance(info[0], dict):
        gen = "/".join(str(info[0][k]) for k in ("name", "version") if info[0].get(k))
    meta.c2pa_claim_generator = gen or None
    for a in active.get("assertions") or []:
        label = str(a.get("label") or "")
        if label.split(".v")[0] in TRAINING_MINING_LABELS or label in TRAINING_MINING_LABELS:
            entries = (a.get("data") or {}).get("entries") or {}
            for k, v in entries.items():
                use = v.get("use") if isinstance(v, dict) else None
                if use:
                    name = _entry_name(str(k))
                    # two assertions (old and CAWG labels) stating one entry: the stricter use wins
                    old = meta.c2pa_training_mining.get(name)
                    if old is None or old == "allowed":
                        meta.c2pa_training_mining[name] = str(use)
    for m in manifests.values():  # ingredients' manifests too: a composite with generated parts is AI-generated
        for a in m.get("assertions") or []:
            if str(a.get("label") or "").startswith("c2pa.actions"):
                for act in (a.get("data") or {}).get("actions") or []:
                    t = act.get("digitalSourceType") if isinstance(act, dict) else None
                    if t:
                        meta.c2pa_source_types.append(_short(str(t)))


def read_c2pa(body: bytes, meta: ImageMeta, mime: str) -> None:
    """Run c2pa-python's reader on ``body``; an error leaves ``meta.unsafe`` set (the store is unreadable)."""
    try:
        import c2pa
    except ImportError:
        global _warned
        if not _warned:
            _warned = True
            import logging

            logging.getLogger("clipcrawl").warning(
                "an image carries a C2PA manifest but c2pa-python is not installed: its training-mining terms are "
                "not read (pip install 'clipcrawl[provenance]')")
        meta.c2pa_present = True
        meta.c2pa_validation_state = "not read: c2pa-python not installed"
        return
    import json

    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(body[:MAX_C2PA_BYTES]), None, _offline_context(c2pa))
        if reader is None:
            return
        with reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
    except Exception as e:  # noqa: BLE001 - a broken box is data, never a crash
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        meta.c2pa_present = True
        meta.c2pa_validation_state = f"unreadable: {msg}"
        meta.unsafe = f"C2PA manifest store unreadable ({msg})"
        return
    apply_c2pa_store(meta, store, state)


#: the reader makes no request of its own: a manifest stored elsewhere (a URL in the XMP) and certificate
#: revocation (OCSP) would be fetched past the downloader's address guard and politeness
C2PA_SETTINGS = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
_context_cache: list = []


def _offline_context(c2pa):  # noqa: ANN001, ANN202 - the c2pa module, a c2pa.Context
    if not _context_cache:
        import json

        _context_cache.append(c2pa.Context(settings=c2pa.Settings.from_json(json.dumps(C2PA_SETTINGS))))
    return _context_cache[0]


_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}


def read_image_meta(body: bytes, c2pa: bool = True) -> ImageMeta:
    """Everything above from an image's original bytes; never raises on bad input."""
    meta = ImageMeta()
    try:
        xmp, meta.has_jumbf, iim = scan(body)
        props = _parse_xmp(xmp) if xmp else {}
    except MetadataRefused as e:
        meta.unsafe = str(e)
        return meta
    if props.get("data_mining"):
        meta.data_mining = _short(props["data_mining"])
    if props.get("digital_source_type"):
        meta.digital_source_type = _short(props["digital_source_type"])
    for f, src in (("web_statement", "xmpRights:WebStatement"), ("cc_license", "cc:license"), ("rights", "dc:rights")):
        if props.get(f):
            meta.license, meta.license_source = props[f][:2000], src
            break
    if meta.license is None and iim:
        meta.license, meta.license_source = iim[:2000], "iptc:CopyrightNotice"
    if meta.has_jumbf and c2pa:
        read_c2pa(body, meta, _MIME.get(sniff(body) or "", "image/jpeg"))
    return meta


def refusal(meta: ImageMeta) -> str | None:
    """Why the image must not be used for AI training, with the rule and its source; None when nothing refuses."""
    if meta.unsafe:
        return f"image metadata refused unread, so its terms are unknown: {meta.unsafe}"
    dm = meta.data_mining
    if dm and dm.upper().startswith("DMI-PROHIBITED"):
        return f"data mining prohibited by the image's IPTC metadata (XMP plus:DataMining {dm})"
    for name in REFUSING_ENTRIES:
        use = meta.c2pa_training_mining.get(name)
        if use and use != "allowed":
            state = meta.c2pa_validation_state or "unknown"
            return (f"{name} {use} by the image's C2PA manifest (training-mining assertion; "
                    f"validation {state})")
    return None
