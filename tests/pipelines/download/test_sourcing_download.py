"""The download pass honours every opt-out and blocklist, and blurs faces before encoding (loopback only)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.pipelines.passes.download import download
from clipcrawl.schemas.config import OutputConfig, UrlListConfig
from tests.crawler.site import LoopbackServer
from tests.crawler.test_sourcing import BAD_MD5, BAD_SHA, sourcing_site

from .conftest import loopback_config

ASTRONAUT = Path(__file__).resolve().parents[3].parent / "shared" / "testdata" / "images" / "photos" / "astronaut.png"


def test_download_statuses_for_every_rule(tmp_path):
    with LoopbackServer(sourcing_site) as srv:
        b = srv.base
        bl = tmp_path / "block.txt"
        bl.write_text(f"{b}/img/ok?x=1\ndomain:blocked.invalid\nsha256:{hashlib.sha256(BAD_SHA).hexdigest()}\n"
                      f"md5:{hashlib.md5(BAD_MD5).hexdigest()}\n")
        rows = [
            ("ok", f"{b}/img/ok", None), ("tdm_header", f"{b}/img/tdm-header", None),
            ("tdm_file", f"{b}/reserved/x", None), ("xrobots", f"{b}/img/xrobots-combined", None),
            ("xrobots_other", f"{b}/img/xrobots-other", None), ("sha", f"{b}/img/bad-sha", None),
            ("md5", f"{b}/img/bad-md5", None), ("url", f"{b}/img/ok?x=1", None),
            ("domain", "http://cdn.blocked.invalid/a.jpg", None), ("page", f"{b}/img/free", "https://blocked.invalid/p"),
        ]
        src = tmp_path / "crawl"  # crawl output (pairs/ with page_url)
        (src / "pairs").mkdir(parents=True)
        pq.write_table(pa.table({"url": [r[1] for r in rows], "caption": [r[0] for r in rows],
                                 "page_url": [r[2] for r in rows]}), src / "pairs" / "00000.parquet")
        cfg = loopback_config(blocklists=[str(bl)], encode_format="png")
        download(UrlListConfig(path=str(src)), str(tmp_path / "out"), cfg,
                 OutputConfig(samples_per_shard=100))
        hits = srv.log.counts()
    t = pq.read_table(tmp_path / "out" / "00000.parquet").to_pylist()
    got = {r["caption"]: (r["status"], r["error_message"] or "") for r in t}
    assert got["ok"][0] == got["xrobots_other"][0] == "success"
    assert got["tdm_header"][0] == "failed_to_download" and "tdm-reservation: 1" in got["tdm_header"][1]
    assert got["tdm_file"][0] == "failed_to_download" and "tdmrep.json" in got["tdm_file"][1]
    assert got["xrobots"][0] == "failed_to_download" and "X-Robots-Tag" in got["xrobots"][1]
    for k, rule in (("sha", "sha256:"), ("md5", "md5:"), ("url", "block.txt:1"), ("domain", "domain:blocked.invalid"),
                    ("page", "domain:blocked.invalid")):
        assert got[k][0] == "blocked" and rule in got[k][1], (k, got[k])
    assert hits["/reserved/x"] == 0 and hits["/img/ok?x=1"] == 0 and hits["/img/free"] == 0
    stats = json.loads((tmp_path / "out" / "00000_stats.json").read_text())
    assert stats["blocked"] == 5 and stats["successes"] == 2


@pytest.mark.skipif(not ASTRONAUT.is_file(), reason="shared testdata absent")
def test_download_blurs_faces_before_encoding(tmp_path):
    pytest.importorskip("cv2")
    from aiohttp import web

    data = ASTRONAUT.read_bytes()

    def app(log, srv):
        async def photo(request):
            return web.Response(body=data, content_type="image/png")
        a = web.Application()
        a.router.add_get("/astronaut.png", photo)
        return a

    with LoopbackServer(app) as srv:
        src = tmp_path / "urls.txt"
        src.write_text(f"{srv.base}/astronaut.png\n")
        for blur in (False, True):
            cfg = loopback_config(blur_faces=blur, image_size=512, encode_format="png", respect_robots=False,
                                  respect_tdmrep=False)
            download(UrlListConfig(path=str(src)), str(tmp_path / f"out{blur}"), cfg, OutputConfig())
    rows = {b: pq.read_table(tmp_path / f"out{b}" / "00000.parquet").to_pylist()[0] for b in (False, True)}
    assert rows[False]["num_faces"] is None and rows[True]["num_faces"] == 1 and len(rows[True]["face_bboxes"]) == 1
    imgs = {}
    for b in (False, True):
        with tarfile.open(tmp_path / f"out{b}" / "00000.tar") as tar:
            m = next(m for m in tar.getmembers() if m.name.endswith(".png"))
            imgs[b] = tar.extractfile(m).read()
    import numpy as np
    from PIL import Image

    a, c = (np.asarray(Image.open(io.BytesIO(imgs[b])).convert("RGB")).astype(int) for b in (False, True))
    x0, y0, x1, y1 = (int(v * 512) for v in rows[True]["face_bboxes"][0])
    assert np.abs(a - c)[y0:y1, x0:x1].mean() > 5  # the written image is blurred on the face
    assert np.abs(a - c)[:, 400:].max() == 0 and np.abs(a - c)[300:, :].max() == 0  # and nowhere far from it


def test_cli_blocklist_is_repeatable(tmp_path):
    from clipcrawl.cli import main

    with LoopbackServer(sourcing_site) as srv:
        b = srv.base
        (tmp_path / "a.txt").write_text(f"{b}/img/ok?x=1\n")
        (tmp_path / "b.txt").write_text(f"sha256:{hashlib.sha256(BAD_SHA).hexdigest()}\n")
        (tmp_path / "urls.txt").write_text(f"{b}/img/ok\n{b}/img/ok?x=1\n{b}/img/bad-sha\n")
        rc = main(["download", str(tmp_path / "urls.txt"), "--out", str(tmp_path / "out"), "--allow-private-networks",
                   "--blocklist", str(tmp_path / "a.txt"), "--blocklist", str(tmp_path / "b.txt"), "--workers", "1"])
        assert main(["crawl", "--seeds", b + "/", "--out", str(tmp_path / "crawl"), "--allow-private-networks",
                     "--blocklist", str(tmp_path / "a.txt"), "--max-pages", "3"]) == 0
    assert rc in (0, None)
    status = pq.read_table(tmp_path / "out" / "00000.parquet").column("status").to_pylist()
    assert status == ["success", "blocked", "blocked"]
    assert main(["download", str(tmp_path / "urls.txt"), "--out", str(tmp_path / "x"),
                 "--blocklist", str(tmp_path / "missing.txt")]) == 2  # a missing list is a config error
