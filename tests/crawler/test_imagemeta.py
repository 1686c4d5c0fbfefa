"""The image-metadata reader on real files: XMP written into JPEG/PNG/WebP/GIF with every Data Mining value and
Digital Source Type, C2PA manifests signed by c2pa-python (allowed/notAllowed/constrained, CAWG and older
labels, tampered), hostile metadata (oversized XMP, entity expansion, broken JUMBF) in bounded time."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import pytest

from clipcrawl.crawler.aitxt import disallows, parse_ai_txt
from clipcrawl.crawler.imagemeta import (
    MAX_XMP_BYTES,
    ImageMeta,
    read_c2pa,
    read_image_meta,
    read_xmp,
    refusal,
)

from .provenance_files import (
    LAUGHS,
    broken_jumbf,
    c2pa_signed,
    jpeg_with_app1,
    jpeg_with_extended_xmp,
    picture,
    source_type_action,
    tampered_pixels,
    training_mining,
    truncated_jumbf,
    with_xmp,
    xmp_packet,
)

FORMATS = ("jpeg", "png", "webp", "gif")
#: every PLUS Data Mining value -> refused?
DATA_MINING = {
    "DMI-UNSPECIFIED": False,
    "DMI-ALLOWED": False,
    "DMI-PROHIBITED-AIMLTRAINING": True,
    "DMI-PROHIBITED-GENAIMLTRAINING": True,
    "DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING": True,
    "DMI-PROHIBITED": True,
    "DMI-PROHIBITED-SEECONSTRAINT": True,  # conservatively
    "DMI-PROHIBITED-SEEEMBEDDEDRIGHTSEXPR": True,
    "DMI-PROHIBITED-SEELINKEDRIGHTSEXPR": True,
}
#: IPTC Digital Source Type -> ai_generated
SOURCE_TYPES = {
    "trainedAlgorithmicMedia": True,
    "compositeWithTrainedAlgorithmicMedia": True,
    "digitalCapture": False,
    "algorithmicMedia": False,
    "composite": False,
}

def c2pa_or_skip() -> None:
    pytest.importorskip("c2pa", reason="c2pa-python not installed (pip install clipcrawl[provenance])")


# ------------------------------------------------------------------ XMP
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value,refused", DATA_MINING.items())
def test_data_mining_values(fmt, value, refused):
    meta = read_image_meta(with_xmp(fmt, xmp_packet(data_mining=value)))
    assert meta.data_mining == value
    why = refusal(meta)
    if refused:
        assert why == f"data mining prohibited by the image's IPTC metadata (XMP plus:DataMining {value})"
    else:
        assert why is None
    assert meta.ai_generated is None and not meta.c2pa_present


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value,ai", SOURCE_TYPES.items())
def test_digital_source_types(fmt, value, ai):
    meta = read_image_meta(with_xmp(fmt, xmp_packet(source_type=value)))
    assert meta.digital_source_type == value
    assert meta.ai_generated_from() == (ai, "iptc")
    assert refusal(meta) is None


def test_licence_fields_in_order_of_preference():
    by = "https://creativecommons.org/licenses/by/4.0/"
    m = read_image_meta(with_xmp("jpeg", xmp_packet(web_statement=by, cc_license="x", rights="(c) A")))
    assert (m.license, m.license_source) == (by, "xmpRights:WebStatement")
    m = read_image_meta(with_xmp("png", xmp_packet(cc_license=by, rights="(c) A")))
    assert (m.license, m.license_source) == (by, "cc:license")
    m = read_image_meta(with_xmp("webp", xmp_packet(rights="(c) 2024 Jane Doe, all rights reserved")))
    assert (m.license, m.license_source) == ("(c) 2024 Jane Doe, all rights reserved", "dc:rights")


def test_uncompressed_png_itxt_and_attribute_form():
    m = read_image_meta(with_xmp("png", xmp_packet(data_mining="DMI-ALLOWED"), compress_png=False))
    assert m.data_mining == "DMI-ALLOWED"
    attr = xmp_packet(attrs='plus:DataMining="http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED" '
                            'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/'
                            'trainedAlgorithmicMedia"')
    m = read_image_meta(with_xmp("jpeg", attr))
    assert (m.data_mining, m.digital_source_type) == ("DMI-PROHIBITED", "trainedAlgorithmicMedia")


def test_extended_xmp_in_jpeg():
    body = jpeg_with_extended_xmp("", xmp_packet(data_mining="DMI-PROHIBITED-GENAIMLTRAINING"))
    m = read_image_meta(body)
    assert m.data_mining == "DMI-PROHIBITED-GENAIMLTRAINING" and "GENAIMLTRAINING" in refusal(m)


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_metadata(fmt):
    m = read_image_meta(with_xmp(fmt, None))
    assert refusal(m) is None and m.ai_generated is None and m.license is None and not m.has_jumbf
    assert read_image_meta(b"").unsafe is None and read_image_meta(b"not an image").unsafe is None


def test_truncated_containers_never_raise():
    for fmt in FORMATS:
        body = with_xmp(fmt, xmp_packet(data_mining="DMI-PROHIBITED"))
        for cut in range(0, len(body), max(1, len(body) // 97)):
            read_image_meta(body[:cut])  # no exception, whatever it finds


# ------------------------------------------------------------------ hostile
def _bounded(body: bytes, seconds: float = 0.5, peak_bytes: int = 16 << 20):
    tracemalloc.start()
    t = time.perf_counter()
    try:
        meta = read_image_meta(body)
        took = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert took < seconds, took
    assert peak < peak_bytes, peak
    return meta


def test_oversized_xmp_refused_unread():
    big = xmp_packet(extra="<dc:description>" + "x" * (MAX_XMP_BYTES + 10) + "</dc:description>")
    for fmt in ("png", "webp", "gif"):
        m = _bounded(with_xmp(fmt, big))
        assert m.unsafe and "exceeds" in m.unsafe
        assert refusal(m).startswith("image metadata refused unread, so its terms are unknown: XMP packet of")
    # JPEG: an extended XMP segment declaring a packet over the cap (the standard packet fits in 64 KB)
    ext = (b"http://ns.adobe.com/xmp/extension/\x00" + b"0" * 32 + struct.pack(">II", MAX_XMP_BYTES + 1, 0)
           + b"x" * 1000)
    m = _bounded(jpeg_with_app1(ext))
    assert m.unsafe == f"XMP packet of {MAX_XMP_BYTES + 1:,} bytes exceeds the {MAX_XMP_BYTES:,}-byte cap"


def test_png_zlib_bomb_xmp_is_capped():
    bomb = zlib.compress(b" " * (32 << 20), 9)  # 32 MiB of spaces in ~32 KB
    buf = io.BytesIO()
    picture().save(buf, "PNG")
    png = buf.getvalue()
    data = b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + bomb
    chunk = struct.pack(">I", len(data)) + b"iTXt" + data + struct.pack(">I", zlib.crc32(b"iTXt" + data))
    m = _bounded(png[:33] + chunk + png[33:], seconds=1.0, peak_bytes=8 << 20)
    assert m.unsafe and "exceeds" in m.unsafe


@pytest.mark.parametrize("fmt", ("jpeg", "png", "webp", "gif"))
def test_entity_expansion_refused(fmt):
    body = (jpeg_with_app1(b"http://ns.adobe.com/xap/1.0/\x00" + LAUGHS.encode()) if fmt == "jpeg"
            else with_xmp(fmt, LAUGHS.encode()))
    m = _bounded(body)
    assert m.license is None
    assert m.unsafe == "XMP declares a DTD or entities (never in XMP; refused unread)"
    assert "DTD" in refusal(m)


def test_deep_and_malformed_xml():
    deep = xmp_packet(extra="<a>" * 5000 + "</a>" * 5000)
    m = _bounded(with_xmp("png", deep))
    assert m.unsafe and "levels deep" in m.unsafe
    broken = xmp_packet(data_mining="DMI-PROHIBITED").replace(b"</rdf:RDF>", b"<unclosed")
    m = _bounded(with_xmp("webp", broken))
    assert m.data_mining == "DMI-PROHIBITED" and m.unsafe is None  # read up to the error


def test_read_xmp_reports_jumbf_presence_only_for_boxes():
    assert read_xmp(with_xmp("jpeg", None)) == (None, False)


# ------------------------------------------------------------------ C2PA
@pytest.mark.parametrize("label", ["cawg.training-mining", "c2pa.training-mining"])
@pytest.mark.parametrize("entry,use,refused", [
    ("ai_training", "notAllowed", True),
    ("ai_generative_training", "notAllowed", True),
    ("data_mining", "notAllowed", True),
    ("ai_training", "constrained", True),
    ("ai_inference", "notAllowed", False),  # inference only: training is not refused by it
    ("ai_training", "allowed", False),
])
def test_c2pa_training_mining(label, entry, use, refused):
    c2pa_or_skip()
    m = read_image_meta(c2pa_signed([training_mining(label, **{entry: use})]))
    assert m.c2pa_present and m.c2pa_validation_state in ("Valid", "Trusted")
    assert m.c2pa_claim_generator == "clipcrawl-tests/1.0"
    assert m.c2pa_training_mining[entry] == use and m.training_mining_text() == f"{entry}={use}"
    assert m.ai_generated_from() == (False, "c2pa")  # digitalCapture
    why = refusal(m)
    if refused:
        assert why == f"{entry} {use} by the image's C2PA manifest (training-mining assertion; validation Valid)"
    else:
        assert why is None


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_c2pa_in_png_and_webp(fmt):
    c2pa_or_skip()
    m = read_image_meta(c2pa_signed([training_mining(ai_generative_training="notAllowed"),
                                     source_type_action("trainedAlgorithmicMedia")], fmt=fmt))
    assert m.has_jumbf and m.c2pa_present and m.c2pa_validation_state == "Valid"
    assert m.ai_generated_from() == (True, "c2pa")
    assert "ai_generative_training notAllowed" in refusal(m)


def test_c2pa_and_xmp_together():
    c2pa_or_skip()
    body = c2pa_signed([training_mining(ai_training="allowed"), source_type_action("trainedAlgorithmicMedia")],
                       xmp=xmp_packet(source_type="compositeWithTrainedAlgorithmicMedia", data_mining="DMI-ALLOWED"))
    m = read_image_meta(body)
    assert m.ai_generated_from() == (True, "iptc,c2pa")
    assert m.data_mining == "DMI-ALLOWED" and refusal(m) is None


def test_tampered_manifest_still_honoured():
    c2pa_or_skip()
    refused = tampered_pixels(c2pa_signed([training_mining(ai_training="notAllowed")]))
    m = read_image_meta(refused)
    assert m.c2pa_validation_state == "Invalid"
    assert refusal(m) == ("ai_training notAllowed by the image's C2PA manifest (training-mining assertion; "
                          "validation Invalid)")
    allowed = read_image_meta(tampered_pixels(c2pa_signed([training_mining(ai_training="allowed")])))
    assert allowed.c2pa_validation_state == "Invalid" and refusal(allowed) is None  # recorded, not refused


def test_broken_jumbf_is_a_reason_not_a_crash():
    c2pa_or_skip()
    for body in (broken_jumbf(c2pa_signed([training_mining(ai_training="allowed")])), truncated_jumbf()):
        m = _bounded(body, seconds=2.0, peak_bytes=64 << 20)
        assert m.c2pa_present and m.c2pa_validation_state.startswith("unreadable: ")
        assert refusal(m).startswith("image metadata refused unread, so its terms are unknown: C2PA manifest "
                                     "store unreadable (")


def test_c2pa_reader_only_runs_when_a_box_is_present(monkeypatch):
    c2pa_or_skip()
    import c2pa

    calls = []
    real = c2pa.Reader.try_create
    monkeypatch.setattr(c2pa.Reader, "try_create", lambda *a, **k: calls.append(1) or real(*a, **k))
    read_image_meta(with_xmp("jpeg", xmp_packet(data_mining="DMI-ALLOWED")))
    assert calls == []
    read_image_meta(c2pa_signed([training_mining(ai_training="allowed")]))
    assert calls == [1]


# ------------------------------------------------------------------ ai.txt
AI_TXT = """# Spawning AI
# Prevent datasets from using the following file types
User-Agent: *
Disallow: *.jpg
Disallow: /portfolio/
Allow: /portfolio/press/
"""


def test_ai_txt_rules_by_path_and_type():
    p = parse_ai_txt(AI_TXT.encode())
    assert disallows(p, "https://a.example/img/x.jpg", "clipcrawl")
    assert disallows(p, "https://a.example/img/X.JPG", "clipcrawl")  # file types case-insensitively
    assert disallows(p, "https://a.example/portfolio/a.png", "clipcrawl")
    assert not disallows(p, "https://a.example/portfolio/press/a.png", "clipcrawl")
    assert not disallows(p, "https://a.example/img/x.png", "clipcrawl")
    assert parse_ai_txt(b"<html><body>soft 404</body></html>") is None
    scoped = parse_ai_txt(b"User-Agent: otherbot\nDisallow: /\n")
    assert not disallows(scoped, "https://a.example/x.jpg", "clipcrawl")


def test_c2pa_reader_makes_no_request():
    """A manifest said to be elsewhere (XMP dcterms:provenance) is not fetched by the reader (offline settings)."""
    c2pa_or_skip()
    from .provenance_files import FileServer

    srv = FileServer({"/m.c2pa": (c2pa_signed([training_mining(ai_training="notAllowed")]), "application/c2pa")})
    srv.start()
    try:
        xmp = xmp_packet(attrs=f'xmlns:dcterms="http://purl.org/dc/terms/" dcterms:provenance="{srv.url("/m.c2pa")}"')
        meta = read_image_meta(truncated_jumbf(with_xmp("jpeg", xmp)))
        assert meta.has_jumbf and srv.requests == []
        # the reader itself, on an image with no embedded box (c2pa-python's default settings fetch this URL)
        meta = ImageMeta()
        read_c2pa(with_xmp("jpeg", xmp), meta, "image/jpeg")
        assert srv.requests == [] and meta.c2pa_validation_state.startswith("unreadable: ")
    finally:
        srv.stop()


def test_mutated_metadata_never_raises():
    """Random byte changes in the metadata region of every container: a result, never an exception."""
    import random

    rng = random.Random(28)
    bodies = [with_xmp(f, xmp_packet(data_mining="DMI-PROHIBITED", source_type="trainedAlgorithmicMedia",
                                     rights="(c) x")) for f in FORMATS]
    bodies.append(jpeg_with_extended_xmp("", xmp_packet(data_mining="DMI-ALLOWED")))
    for _ in range(3000):
        b = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(min(len(b), 3000))] = rng.choice([0, 0xFF, 0x3C, 0x26, rng.randrange(256)])
        read_image_meta(bytes(b), c2pa=False)


def test_iptc_iim_copyright_notice_in_jpeg():
    from .provenance_files import jpeg_with_iim_copyright

    m = read_image_meta(jpeg_with_iim_copyright("© 2021 Jane Doe, CC BY-NC 4.0"))
    assert (m.license, m.license_source) == ("© 2021 Jane Doe, CC BY-NC 4.0", "iptc:CopyrightNotice")
    m = read_image_meta(jpeg_with_iim_copyright("(c) old notice", xmp_packet(rights="(c) XMP notice")))
    assert (m.license, m.license_source) == ("(c) XMP notice", "dc:rights")  # XMP first
    from PIL import Image, IptcImagePlugin

    im = Image.open(io.BytesIO(jpeg_with_iim_copyright("(c) x")))
    im.load()  # still a valid JPEG, and Pillow's own IPTC reader sees the same notice
    assert IptcImagePlugin.getiptcinfo(im)[(2, 116)] == b"(c) x"
