"""FetchImages against the hostile loopback server: every failure mode gets the right status."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest
from PIL import Image

from clipcrawl.pipelines.fetch_images import FetchImages

from .conftest import loopback_config

CASES = [
    ("/ok.jpg", "success", None),
    ("/status/404", "failed_to_download", "download: HTTP 404"),
    ("/status/500", "failed_to_download", "download: HTTP 500"),
    ("/status/503", "failed_to_download", "download: HTTP 503"),
    ("/slow.jpg", "failed_to_download", "download: timeout"),
    ("/reset.jpg", "failed_to_download", "download: server disconnected"),
    ("/drop.jpg", "failed_to_download", "download: truncated body"),
    ("/loop", "failed_to_download", "download: redirect loop"),
    ("/big.jpg", "failed_to_download", "download: body exceeds the 1000000-byte cap"),
    ("/private/a.jpg", "failed_to_download", "download: disallowed by robots.txt"),
    ("/xrobots.jpg?v=noai", "failed_to_download", "download: Use of image disallowed by X-Robots-Tag directive (noai)"),
    ("/xrobots.jpg?v=nofollow,%20noimageindex", "failed_to_download", "X-Robots-Tag directive (noimageindex)"),
    ("/xrobots.jpg?v=clipcrawl:%20noimageai", "failed_to_download", "X-Robots-Tag directive (noimageai)"),
    ("/xrobots.jpg?v=otherbot:%20noai", "success", None),  # scoped to another crawler
    ("/xrobots.jpg?v=nofollow", "success", None),
    ("/page.jpg", "failed_to_resize", "resize: Image decoding error"),
    ("/truncated.jpg", "failed_to_resize", "resize: Image decoding error"),
    ("/bomb.png", "failed_to_resize", "resize: image too large to decode: 30000x30000"),
    ("notaurl", "failed_to_download", "download: "),
    ("ftp://127.0.0.1/x.jpg", "failed_to_download", "download: unsupported scheme"),
]


def _run(stage, server, paths):
    urls = [p if "://" in p or not p.startswith("/") else server.url(p) for p in paths]
    return stage(pa.table({"url": urls, "key": [f"k{i}" for i in range(len(urls))]}))


def test_every_failure_mode(stage, server):
    robots_before = server.hits("/robots.txt")
    out = _run(stage, server, [p for p, _, _ in CASES]).to_pylist()
    for (path, status, message), row in zip(CASES, out):
        assert row["status"] == status, (path, row["error_message"])
        if message is None:
            assert row["error_message"] is None
        else:
            assert row["error_message"].startswith("download: " if status == "failed_to_download" else "resize: ")
            assert message in row["error_message"], (path, row["error_message"])
        if status == "success":
            assert Image.open(io.BytesIO(row["image"])).size == (64, 64)
            assert (row["width"], row["height"], row["original_width"], row["original_height"]) == (64, 64, 640, 480)
            assert row["mime_type"] == "image/jpeg" and row["http_status"] == 200 and row["bytes"] > 1000
            assert len(row["sha256"]) == 64 and row["exif"] == "{}"
        else:
            assert row["image"] is None and row["width"] is None
    by_path = dict(zip([p for p, _, _ in CASES], out))
    assert by_path["/status/404"]["http_status"] == 404
    assert by_path["/bomb.png"]["sha256"] is not None  # downloaded, then refused
    assert server.hits("/private/a.jpg") == 0  # robots.txt forbids it: never requested
    assert server.hits("/robots.txt") - robots_before <= 1  # once per origin, cached across requests


def test_xrobots_check_can_be_turned_off(server):
    st = FetchImages(loopback_config(disallowed_header_directives=[], workers=1))
    try:
        out = _run(st, server, ["/xrobots.jpg?v=noai"])
    finally:
        st.teardown()
    assert out.column("status").to_pylist() == ["success"]


def test_private_addresses_refused_unless_allowed(server):
    st = FetchImages(loopback_config(allow_private_networks=False, workers=1))
    before = len(server.requests)
    try:
        out = _run(st, server, ["/ok.jpg?private-check"]).to_pylist()
    finally:
        st.teardown()
    assert out[0]["status"] == "failed_to_download"
    assert "127.0.0.1" in out[0]["error_message"] and "not public" in out[0]["error_message"]
    assert len(server.requests) == before  # nothing reached the server, robots.txt included


def test_rows_already_failed_are_not_fetched_and_retries(stage, server):
    server.flaky_left["a"] = 1
    t = pa.table({"url": [server.url("/ok.jpg?dup"), server.url("/flaky/a")], "key": ["k0", "k1"],
                  "status": ["duplicate", "success"], "error_message": ["input: duplicate", None]})
    out = stage(t).to_pylist()
    assert out[0]["status"] == "duplicate" and out[0]["error_message"] == "input: duplicate"
    assert not any(r.query == "dup" for r in server.requests)  # a duplicate is never fetched
    assert out[1]["status"] == "failed_to_download" and "503" in out[1]["error_message"]
    server.flaky_left["b"] = 2
    st = FetchImages(loopback_config(retries=2, workers=1))
    try:
        row = _run(st, server, ["/flaky/b"]).to_pylist()[0]
    finally:
        st.teardown()
    assert row["status"] == "success" and server.hits("/flaky/b") == 3


def test_user_agent_is_sent(stage, server):
    _run(stage, server, ["/ok.jpg?ua"])
    assert all(r.user_agent and r.user_agent.startswith("clipcrawl/") for r in server.requests)


@pytest.mark.parametrize("n", [300])
def test_many_images_in_flight_keep_order(stage, server, n):
    import numpy as np

    from .server import make_image

    for i in range(5):
        server.files[f"{i}.png"] = make_image(100 + 10 * i, 80, "PNG", seed=i)
    paths = [f"/f/{i % 5}.png" for i in range(n)]
    out = _run(stage, server, paths)
    assert out.column("status").to_pylist() == ["success"] * n
    widths = out.column("original_width").to_pylist()
    assert widths == [100 + 10 * (i % 5) for i in range(n)]
    assert len(set(out.column("sha256").to_pylist())) == 5
    assert np.all(np.array(out.column("width").to_pylist()) == 64)


def test_stage_pickles_without_its_heavy_state(stage):
    import pickle

    clone = pickle.loads(pickle.dumps(stage))
    assert clone.config == stage.config and clone._pool is None and clone._loop is None
    assert clone.counters.done == 0


def test_a_killed_decoder_restarts_the_pool():
    import asyncio
    import os
    import signal

    from clipcrawl.filters.images import ResizeOptions
    from clipcrawl.filters.images.pool import CRASHED, DecodePool

    from .server import make_image

    bodies = [make_image(800, 600, "JPEG", seed=i) for i in range(4)] * 10
    pool = DecodePool(ResizeOptions(image_size=64), workers=1, decoder="processes").start()

    async def go():
        tasks = [asyncio.ensure_future(pool.resize(b)) for b in bodies]
        await asyncio.wait(tasks[:1])
        for pid in list(pool._executor._processes):
            os.kill(pid, signal.SIGKILL)
        results = await asyncio.gather(*tasks)
        return results, await pool.resize(bodies[0])

    try:
        results, after = asyncio.run(go())
    finally:
        pool.close()
    assert pool.restarts >= 1
    assert all(r.image is not None or r.error == CRASHED for r in results)
    assert sum(r.image is not None for r in results) >= len(bodies) - 8
    assert after.image is not None


def test_thread_and_process_decoders_give_the_same_bytes():
    import asyncio

    from clipcrawl.filters.images import ResizeOptions
    from clipcrawl.filters.images.pool import DecodePool

    from .server import make_image

    bodies = [make_image(800, 600, "JPEG", seed=i) for i in range(6)] + [b"not an image", make_image(40, 30, "PNG")]
    out = {}
    for decoder in ("threads", "processes"):
        pool = DecodePool(ResizeOptions(image_size=64), workers=2, decoder=decoder).start()

        async def go(pool=pool):
            return await asyncio.gather(*(pool.resize(b) for b in bodies))

        try:
            out[decoder] = asyncio.run(go())
        finally:
            pool.close()
    assert [(r.image, r.error, r.sha256) for r in out["threads"]] == [(r.image, r.error, r.sha256) for r in out["processes"]]
    assert out["threads"][-2].error and out["threads"][0].image


def test_decoder_names_are_checked():
    from clipcrawl.filters.images import ResizeOptions
    from clipcrawl.filters.images.pool import DecodePool

    with pytest.raises(ValueError, match="decoder"):
        DecodePool(ResizeOptions(), workers=1, decoder="fork")
