"""The browse page: its JSON API on the demo dataset, and the page itself in headless Chromium
(type a query in the search box, press Enter, see the results)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from tests.pipelines.inspect.cdp import CHROMIUM, Browser
from tests.pipelines.inspect.test_search import truth

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.fixture(scope="module")
def server(indexed_demo, searcher):
    from clipcrawl.pipelines.inspect.browse import BrowseData, BrowseServer

    with BrowseServer(indexed_demo, data=BrowseData(indexed_demo, searcher=searcher)) as srv:
        yield srv


def get(srv, path: str, host: str | None = None):
    req = urllib.request.Request(srv.url + path.lstrip("/"), headers={"Host": host} if host else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.headers, r.read()


def test_api(server):
    assert server.url.startswith("http://127.0.0.1:")
    _, headers, _ = get(server, "/")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    info = json.loads(get(server, "/api/info")[2])
    assert info["rows"] > info["kept"] == info["indexed"] == info["searchable"] > 0 and info["index"] == "flat"
    assert dict(info["statuses"])["success"] == info["kept"] and info["domains"][0][0] == "127.0.0.1"
    res = json.loads(get(server, "/api/search?q=a+black+square&k=3")[2])
    assert res["mode"] == "text" and len(res["results"]) == 3
    assert truth(res["results"][0]["url"]) == ("black", "square")
    dropped = json.loads(get(server, "/api/search?kept=dropped&k=100")[2])
    assert dropped["total"] == info["rows"] - info["kept"]
    assert all(r["status"] != "success" and r["error_message"] for r in dropped["results"])
    assert json.loads(get(server, "/api/search?kept=dropped&q=a+star")[2])["results"] == []  # no embeddings
    high = json.loads(get(server, "/api/search?min=0.8&k=500")[2])["results"]
    assert high and all(r["clip_similarity"] >= 0.8 for r in high)
    status = json.loads(get(server, "/api/search?status=duplicate")[2])["results"]
    assert status and {r["status"] for r in status} == {"duplicate"}
    key = high[0]["key"]
    _, headers, body = get(server, f"/image/{key}")
    assert headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    meta = json.loads(get(server, f"/meta/{key}")[2])
    assert meta["key"] == key and meta["status"] == "success" and "clip_model" in meta
    like = json.loads(get(server, f"/api/search?like={key}&k=2")[2])["results"]
    assert like[0]["key"] == key
    with pytest.raises(urllib.error.HTTPError) as e:
        get(server, "/meta/nope")
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:  # DNS rebinding: a foreign Host is refused
        get(server, "/api/info", host="evil.example:80")
    assert e.value.code == 403


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_type_a_query_in_chromium(server, indexed_demo, tmp_path):
    async def drive() -> dict:
        async with Browser(tmp_path / "profile") as b:
            await b.goto(server.url)
            await b.wait_for("document.body && document.body.dataset.ready === '1'")
            browse_cards = await b.eval("document.querySelectorAll('.card').length")
            statuses = await b.eval("document.getElementById('status').options.length")
            await b.eval("document.getElementById('q').focus()")
            await b.type_text("a red triangle")
            await b.press_enter()
            await b.wait_for("document.getElementById('summary').dataset.mode === 'text'")
            # thumbnails load lazily: the first row is in the viewport
            await b.wait_for("[...document.images].slice(0, 4).every(i => i.complete && i.naturalWidth > 0)")
            page = await b.eval("""({
                cards: [...document.querySelectorAll('.card')].map(c => ({
                    key: c.dataset.key, caption: c.querySelector('.caption').textContent,
                    scores: c.querySelector('.scores').textContent,
                    meta: c.querySelector('a.meta').getAttribute('href')})),
                images: [...document.images].slice(0, 4).map(i => [i.naturalWidth, i.naturalHeight]),
                summary: document.getElementById('summary').textContent,
                url: location.href})""")
            # a filter narrows the results: only samples with CLIP score >= 0.8
            await b.eval("const m = document.getElementById('min'); m.value = '0.8';"
                         "m.dispatchEvent(new Event('change'))")
            await b.wait_for("location.search.includes('min=0.8') && "
                             "!document.getElementById('summary').textContent.startsWith('searching')")
            page["filtered"] = await b.eval("[...document.querySelectorAll('.card .scores')].map(s => s.textContent)")
            return {**page, "browse_cards": browse_cards, "statuses": statuses, "errors": b.errors()}

    page = asyncio.run(drive())
    assert page["errors"] == []
    assert page["browse_cards"] > 0 and page["statuses"] > 2
    assert "results for “a red triangle”" in page["summary"] and "q=a+red+triangle" in page["url"]
    cards = page["cards"]
    assert len(cards) == 42  # k=60 on the page; every kept sample is indexed
    assert "red triangle" in cards[0]["caption"] and cards[0]["scores"].startswith("similarity 0.")
    assert cards[0]["meta"] == f"/meta/{cards[0]['key']}"
    assert page["images"] and all(w > 0 and h > 0 for w, h in page["images"])
    clip = [float(s.split("clip ")[1]) for s in page["filtered"]]
    assert clip and all(c >= 0.8 for c in clip)
