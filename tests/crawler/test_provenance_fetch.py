"""The download honours what images and origins say about AI training: IPTC/PLUS Data Mining and C2PA
training-mining in the original bytes, Spawning's ai.txt, X-Robots-Tag noml; provenance columns per row; the
--ignore-... switches; rows of images without such metadata unchanged."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest
from PIL import Image

from clipcrawl.pipelines.fetch_images import FetchImages
from clipcrawl.schemas.config import DownloadConfig
from clipcrawl.schemas.tables import PROVENANCE_FIELDS

from .provenance_files import (
    LAUGHS,
    FileServer,
    c2pa_signed,
    jpeg_with_app1,
    source_type_action,
    training_mining,
    with_xmp,
    xmp_packet,
)

BY = "https://creativecommons.org/licenses/by/4.0/"
CTYPE = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}


def _have_c2pa() -> bool:
    try:
        import c2pa  # noqa: F401
    except ImportError:
        return False
    return True


def _files() -> dict[str, tuple]:
    f: dict[str, tuple] = {
        "/plain.jpg": (with_xmp("jpeg", None), "image/jpeg"),
        "/plain.png": (with_xmp("png", None, seed=1), "image/png"),
        "/dmi.jpg": (with_xmp("jpeg", xmp_packet(data_mining="DMI-PROHIBITED-AIMLTRAINING"), seed=2), "image/jpeg"),
        "/seeconstraint.webp": (with_xmp("webp", xmp_packet(data_mining="DMI-PROHIBITED-SEECONSTRAINT"), seed=3),
                                "image/webp"),
        "/allowed.gif": (with_xmp("gif", xmp_packet(data_mining="DMI-ALLOWED"), seed=4), "image/gif"),
        "/gen.png": (with_xmp("png", xmp_packet(source_type="trainedAlgorithmicMedia", data_mining="DMI-UNSPECIFIED"),
                              seed=5), "image/png"),
        "/cc.webp": (with_xmp("webp", xmp_packet(web_statement=BY), seed=6), "image/webp"),
        "/laughs.jpg": (jpeg_with_app1(b"http://ns.adobe.com/xap/1.0/\x00" + LAUGHS.encode()), "image/jpeg"),
        "/noml.jpg": (with_xmp("jpeg", None, seed=7), "image/jpeg", {"X-Robots-Tag": "noml"}),
    }
    if _have_c2pa():
        f["/c2pa-no.jpg"] = (c2pa_signed([training_mining(ai_training="notAllowed")], seed=8), "image/jpeg")
        f["/c2pa-old-no.png"] = (c2pa_signed([training_mining("c2pa.training-mining", ai_generative_training="notAllowed")],
                                             fmt="png", seed=9), "image/png")
        f["/c2pa-ok.jpg"] = (c2pa_signed([training_mining(ai_training="allowed"),
                                          source_type_action("trainedAlgorithmicMedia")], seed=10), "image/jpeg")
    return f


@pytest.fixture(scope="module")
def images():
    s = FileServer(_files()).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def aitxt_origin():
    """A second origin (localhost, not 127.0.0.1) whose ai.txt refuses JPEGs and /portfolio/."""
    s = FileServer({"/ai.txt": (b"User-Agent: *\nDisallow: *.jpg\nDisallow: /portfolio/\n", "text/plain"),
                    "/a.jpg": (with_xmp("jpeg", None), "image/jpeg"),
                    "/a.png": (with_xmp("png", None), "image/png"),
                    "/portfolio/b.png": (with_xmp("png", None, seed=2), "image/png"),
                    "/img": (with_xmp("jpeg", None, seed=3), "image/jpeg"),
                    "/pic": (with_xmp("png", None, seed=4), "image/png")}).start()
    yield s
    s.stop()


def _config(**kw) -> DownloadConfig:
    base = dict(allow_private_networks=True, timeout=3.0, retries=0, workers=1, concurrency=8,
                per_host_concurrency=8, image_size=32)
    base.update(kw)
    return DownloadConfig(**base)


def _fetch(urls: list[str], extra: dict | None = None, **cfg) -> dict[str, dict]:
    cols = {"url": urls, "key": [f"k{i}" for i in range(len(urls))], **(extra or {})}
    st = FetchImages(_config(**cfg))
    try:
        out = st(pa.table(cols))
    finally:
        st.teardown()
    return {u.rsplit("/", 1)[-1]: r for u, r in zip(urls, out.to_pylist())}


def test_refusals_and_columns(images):
    paths = list(_files())
    rows = _fetch([images.url(p) for p in paths])

    def refused(name: str, reason: str) -> dict:
        r = rows[name]
        assert r["status"] == "failed_to_download", (name, r["error_message"])
        assert r["error_message"] == f"download: {reason}", (name, r["error_message"])
        assert r["image"] is None
        return r

    r = refused("dmi.jpg", "data mining prohibited by the image's IPTC metadata (XMP plus:DataMining "
                           "DMI-PROHIBITED-AIMLTRAINING)")
    assert r["data_mining"] == "DMI-PROHIBITED-AIMLTRAINING" and r["c2pa_present"] is None
    refused("seeconstraint.webp", "data mining prohibited by the image's IPTC metadata (XMP plus:DataMining "
                                  "DMI-PROHIBITED-SEECONSTRAINT)")
    refused("laughs.jpg", "image metadata refused unread, so its terms are unknown: XMP declares a DTD or entities "
                          "(never in XMP; refused unread)")
    refused("noml.jpg", "Use of image disallowed by X-Robots-Tag directive (noml)")
    for name in ("plain.jpg", "plain.png", "allowed.gif", "gen.png", "cc.webp"):
        assert rows[name]["status"] == "success", (name, rows[name]["error_message"])
        assert rows[name]["error_message"] is None
    assert rows["allowed.gif"]["data_mining"] == "DMI-ALLOWED"
    assert (rows["gen.png"]["ai_generated"], rows["gen.png"]["ai_generated_source"]) == (True, "iptc")
    assert (rows["cc.webp"]["license"], rows["cc.webp"]["license_source"]) == (BY, "xmpRights:WebStatement")
    plain = rows["plain.jpg"]
    assert all(plain[f.name] is None for f in PROVENANCE_FIELDS)  # all null: <key>.json as before
    if _have_c2pa():
        r = refused("c2pa-no.jpg", "ai_training notAllowed by the image's C2PA manifest (training-mining assertion; "
                                   "validation Valid)")
        assert r["c2pa_present"] and r["c2pa_training_mining"] == "ai_training=notAllowed"
        refused("c2pa-old-no.png", "ai_generative_training notAllowed by the image's C2PA manifest "
                                   "(training-mining assertion; validation Valid)")
        ok = rows["c2pa-ok.jpg"]
        assert ok["status"] == "success"
        assert (ok["c2pa_present"], ok["c2pa_validation_state"], ok["c2pa_claim_generator"]) == (
            True, "Valid", "clipcrawl-tests/1.0")
        assert (ok["ai_generated"], ok["ai_generated_source"]) == (True, "c2pa")


def test_ignore_image_metadata_records_but_keeps(images):
    rows = _fetch([images.url("/dmi.jpg"), images.url("/laughs.jpg")], respect_image_metadata=False)
    assert rows["dmi.jpg"]["status"] == "success" and rows["dmi.jpg"]["data_mining"] == "DMI-PROHIBITED-AIMLTRAINING"
    assert rows["laughs.jpg"]["status"] == "success"


def test_images_without_metadata_unchanged(images):
    """Rows of images without these metadata: the same image bytes and columns with the checks on or off."""
    urls = [images.url("/plain.jpg"), images.url("/plain.png")]
    on = _fetch(urls)
    off = _fetch(urls, respect_image_metadata=False, respect_ai_txt=False)
    prov = {f.name for f in PROVENANCE_FIELDS}
    for name in on:
        a = {k: v for k, v in on[name].items() if k not in prov}
        b = {k: v for k, v in off[name].items() if k not in prov}
        assert a == b
        Image.open(io.BytesIO(on[name]["image"])).load()


def test_ai_txt_refuses_by_type_and_path_once_per_origin(aitxt_origin):
    base = f"http://localhost:{aitxt_origin.port}"
    urls = [f"{base}/a.jpg", f"{base}/a.png", f"{base}/portfolio/b.png", f"{base}/a.jpg?x=1"]
    before = aitxt_origin.hits("/ai.txt")
    rows = _fetch(urls)
    reason = f"download: disallowed for AI training by {base}/ai.txt (Spawning ai.txt)"
    assert [rows[u.rsplit("/", 1)[-1]]["status"] for u in urls] == [
        "failed_to_download", "success", "failed_to_download", "failed_to_download"]
    assert rows["a.jpg"]["error_message"] == reason and rows["b.png"]["error_message"] == reason
    assert aitxt_origin.hits("/ai.txt") - before == 1  # fetched once for the origin
    assert aitxt_origin.hits("/a.jpg") == 0 and aitxt_origin.hits("/portfolio/b.png") == 0  # never requested
    before = aitxt_origin.hits("/ai.txt")
    rows = _fetch(urls[:1], respect_ai_txt=False)
    assert rows["a.jpg"]["status"] == "success" and aitxt_origin.hits("/ai.txt") == before


def test_license_from_page_when_the_image_has_none(images):
    page = "https://creativecommons.org/publicdomain/zero/1.0/"
    rows = _fetch([images.url("/plain.jpg"), images.url("/cc.webp")], extra={"page_license": [page, page]})
    assert (rows["plain.jpg"]["license"], rows["plain.jpg"]["license_source"]) == (page, "page")
    assert (rows["cc.webp"]["license"], rows["cc.webp"]["license_source"]) == (BY, "xmpRights:WebStatement")


def test_blocklisted_url_asks_no_ai_txt(aitxt_origin, tmp_path):
    base = f"http://localhost:{aitxt_origin.port}"
    rules = tmp_path / "block.txt"
    rules.write_text(f"{base}/a.png\n")
    before = aitxt_origin.hits("/ai.txt")
    rows = _fetch([f"{base}/a.png"], blocklists=[str(rules)])
    assert rows["a.png"]["status"] == "blocked" and aitxt_origin.hits("/ai.txt") == before


def test_ai_txt_file_types_by_content_type_and_redirect_targets(aitxt_origin, images):
    base = f"http://localhost:{aitxt_origin.port}"
    images.files["/hop.png"] = (f"{base}/a.jpg".encode(), "redirect")  # another origin's refused image
    rows = _fetch([f"{base}/img", f"{base}/pic", images.url("/hop.png")])
    assert rows["img"]["error_message"] == (f"download: disallowed for AI training by {base}/ai.txt (Spawning "
                                            "ai.txt, image/jpeg as *.jpg)")
    assert rows["pic"]["status"] == "success"
    assert rows["hop.png"]["error_message"] == f"download: disallowed for AI training by {base}/ai.txt (Spawning ai.txt)"


def test_tar_json_of_an_image_without_metadata_has_no_provenance_key(images, tmp_path):
    import json
    import tarfile

    from clipcrawl.cli import main

    inp = tmp_path / "urls.csv"
    inp.write_text(f"url,caption\n{images.url('/plain.jpg')},a plain picture\n{images.url('/gen.png')},generated\n")
    out = tmp_path / "out"
    assert main(["-q", "download", str(inp), "--out", str(out), "--allow-private-networks", "--image-size", "32",
                 "--workers", "1"]) in (0, None)
    with tarfile.open(next(out.glob("*.tar"))) as tar:
        docs = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    by_url = {d["url"].rsplit("/", 1)[-1]: d for d in docs}
    prov = {f.name for f in PROVENANCE_FIELDS}
    assert not prov & set(by_url["plain.jpg"])
    assert by_url["gen.png"]["ai_generated"] is True and by_url["gen.png"]["ai_generated_source"] == "iptc"
