"""Page-level consent and licences: ``noml`` withholds a page's pairs like ``noai``; a page's licence
(``rel="license"`` links, Creative Commons RDFa/microdata) reaches its pairs as ``page_license`` through the
crawler, and the download turns it into the ``license`` column when the image states none."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from clipcrawl.cli import main
from clipcrawl.crawler.crawl import crawl
from clipcrawl.crawler.extract import extract_page
from clipcrawl.schemas.config import CrawlConfig
from clipcrawl.schemas.tables import PAIRS, check
from tests.crawler.provenance_files import with_xmp, xmp_packet
from tests.crawler.site import LoopbackServer, html, page

BY_SA = "https://creativecommons.org/licenses/by-sa/4.0/"
CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
IMG = '<img src="/{name}.jpg" alt="a photograph of {name}" width="200" height="150">'


@pytest.mark.parametrize("markup,want", [
    (f'<a rel="license" href="{BY_SA}">CC BY-SA</a>', BY_SA),
    (f'<a rel="nofollow license" href="{BY_SA}">CC BY-SA</a>', BY_SA),
    ('<a rel="license" href="/terms">terms</a>', "https://ex.example/terms"),
    (f'<div xmlns:cc="http://creativecommons.org/ns#"><a rel="cc:license" href="{CC0}">CC0</a></div>', CC0),
    (f'<span property="cc:license" resource="{CC0}"></span>', CC0),
    ('<meta property="dcterms:license" content="CC BY 4.0">', "CC BY 4.0"),
    (f'<div itemscope itemtype="https://schema.org/ImageObject"><link itemprop="license" href="{BY_SA}"></div>',
     BY_SA),
    ('<a href="https://creativecommons.org/licenses/by/4.0/">a link without rel</a>', None),
    ("<p>no licence</p>", None),
])
def test_page_licence_markup(markup, want):
    assert extract_page(html(markup).encode(), "https://ex.example/p/").license == want


def test_noml_withholds_pairs_like_noai():
    p = extract_page(html(IMG.format(name="x"), head='<meta name="robots" content="noml">').encode(),
                     "https://ex.example/")
    assert p.noai and p.noai_reason == "noml" and p.pairs == [] and p.n_withheld == 1


def _site(log, srv) -> web.Application:
    async def index(_):
        return page(html('<a href="/cc">cc</a> <a href="/plain">plain</a> <a href="/noml">noml</a> '
                         '<a href="/hdr">hdr</a>'))

    async def cc(_):
        return page(html(IMG.format(name="cc") + f'<footer><a rel="license" href="{BY_SA}">CC BY-SA 4.0</a></footer>'))

    async def plain(_):
        return page(html(IMG.format(name="plain")))

    async def noml(_):
        return page(html(IMG.format(name="noml"), head='<meta name="robots" content="noml">'))

    async def hdr(_):
        return page(html(IMG.format(name="hdr")), **{"X-Robots-Tag": "noml"})

    async def robots(_):
        return web.Response(text="User-agent: *\nAllow: /\n")

    async def image(request):
        xmp = xmp_packet(web_statement=CC0) if request.match_info["name"] == "plain" else None
        return web.Response(body=with_xmp("jpeg", xmp, size=(200, 150)), content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/cc", cc)
    app.router.add_get("/plain", plain)
    app.router.add_get("/noml", noml)
    app.router.add_get("/hdr", hdr)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/{name}.jpg", image)
    return app


def test_crawl_carries_page_licence_and_honours_noml(tmp_path: Path):
    with LoopbackServer(_site) as srv:
        crawl(CrawlConfig(seeds=[srv.base + "/"], max_pages=20, max_depth=2, allowed_networks=["127.0.0.0/8"],
                          timeout=5), tmp_path, progress=False)
        out = tmp_path / "images"
        assert main(["-q", "download", str(tmp_path), "--out", str(out), "--allow-private-networks",
                     "--output-format", "parquet", "--image-size", "32", "--workers", "1"]) in (0, None)
    got = {r["url"].rsplit("/", 1)[-1]: r for r in pq.read_table(next(out.glob("*.parquet"))).to_pylist()}
    assert got["cc.jpg"]["status"] == "success"
    assert (got["cc.jpg"]["license"], got["cc.jpg"]["license_source"]) == (BY_SA, "page")  # the page's
    assert (got["plain.jpg"]["license"], got["plain.jpg"]["license_source"]) == (CC0, "xmpRights:WebStatement")
    pairs = pa.concat_tables([pq.read_table(f) for f in sorted((tmp_path / "pairs").glob("*.parquet"))])
    check(pairs, PAIRS)
    by_page = {r["page_url"].rsplit("/", 1)[-1]: r for r in pairs.to_pylist()}
    assert set(by_page) == {"cc", "plain"}  # noml (meta and X-Robots-Tag) pages give no pairs
    assert by_page["cc"]["page_license"] == BY_SA and by_page["plain"]["page_license"] is None
    pages = {r["url"].rsplit("/", 1)[-1]: r for r in
             pa.concat_tables([pq.read_table(f) for f in (tmp_path / "pages").glob("*.parquet")]).to_pylist()}
    assert pages["noml"]["status"] == "meta_noai" and "noml" in pages["noml"]["error_message"]
    assert pages["hdr"]["status"] == "meta_noai" and "noml" in pages["hdr"]["error_message"]
