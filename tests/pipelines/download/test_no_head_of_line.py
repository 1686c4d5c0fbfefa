"""No head-of-line blocking in the streamed download (issue 26): a URL that waits out its timeout delays only
itself. Rows after it keep being fetched (their results wait in the reorder buffer, bounded by what it holds),
the chunk holding the slow row goes out when that row is done, and the output keeps the input's row order,
byte for byte."""

from __future__ import annotations

import asyncio
import csv
import threading
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pytest
from aiohttp import web

from clipcrawl.pipelines.fetch_images import DECODE_QUEUE_PER_WORKER, FetchImages
from clipcrawl.pipelines.passes.download import DownloadPass, download
from clipcrawl.schemas.config import OutputConfig, UrlListConfig

from .conftest import loopback_config
from .server import make_image

TIMEOUT = 5.0  # the client's; the hanging handler answers only after it


@dataclass
class TimedServer:
    """Tiny PNGs at /fast/<i>.png, and /hang.png that answers only after the client's timeout; records when
    each request arrived (monotonic seconds)."""

    hang_for: float = TIMEOUT + 1.0
    arrivals: list[tuple[str, float]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def times(self, prefix: str) -> list[float]:
        return [t for p, t in self.arrivals if p.startswith(prefix)]

    def start(self) -> TimedServer:
        bodies = [make_image(24 + i % 5, 20 + i % 3, "PNG", seed=i) for i in range(10)]
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def fast(request: web.Request) -> web.Response:
            self.arrivals.append((request.path, time.monotonic()))
            return web.Response(body=bodies[int(request.match_info["i"]) % 10], content_type="image/png")

        async def hang(request: web.Request) -> web.Response:
            self.arrivals.append((request.path, time.monotonic()))
            await asyncio.sleep(self.hang_for)
            return web.Response(body=bodies[0], content_type="image/png")

        async def robots(_: web.Request) -> web.Response:
            return web.Response(text="User-agent: *\nAllow: /\n")

        async def serve() -> None:
            app = web.Application()
            app.add_routes([web.get("/fast/{i}.png", fast), web.get("/hang.png", hang), web.get("/robots.txt", robots)])
            self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in left:  # a handler still hanging
                t.cancel()
            await asyncio.gather(*left, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture()
def timed():
    s = TimedServer().start()
    yield s
    s.stop()


def _urls(server: TimedServer, n_fast: int, hang_at: int) -> list[str]:
    urls = [server.url(f"/fast/{i}.png") for i in range(n_fast)]
    urls.insert(hang_at, server.url("/hang.png"))
    return urls


def _listing(tmp_path, urls: list[str]) -> str:
    path = tmp_path / "list.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        w.writerows([u, f"picture {i}"] for i, u in enumerate(urls))
    return str(path)


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.endswith("_stats.json")
            and not p.name.startswith(".")}


def test_a_hanging_url_in_the_first_chunk_delays_only_itself(timed, tmp_path, monkeypatch):
    """One shard, 16-row chunks, the 4th URL hangs past the timeout, 200 fast URLs after it: every fast URL is
    requested before the hanging one times out (the old run-ahead window, max(2 x chunk, 2 x lanes) = 48 rows,
    stopped at ~48), and the shard's files are the same as with one chunk for the whole shard."""
    n_fast = 200
    listing = _listing(tmp_path, _urls(timed, n_fast, hang_at=3))
    cfg = loopback_config(image_size=16, timeout=TIMEOUT, concurrency=16, per_host_concurrency=16, workers=1)
    out = OutputConfig(samples_per_shard=1000)
    monkeypatch.setattr(DownloadPass, "chunk_rows", 16)
    t0 = time.monotonic()
    s = download(UrlListConfig(path=listing), str(tmp_path / "chunked"), cfg, out)
    took = time.monotonic() - t0
    assert s.status_counts == {"success": n_fast, "failed_to_download": 1}, s.status_counts
    (hang,) = timed.times("/hang")
    fast = timed.times("/fast/")
    assert len(fast) == n_fast
    late = [t - hang for t in fast if t >= hang + TIMEOUT]
    assert not late, f"{len(late)} fast URLs requested only after the hanging one timed out"
    assert took < 2 * TIMEOUT + 5, took  # one timeout, not one per window of rows

    timed.arrivals.clear()
    monkeypatch.setattr(DownloadPass, "chunk_rows", 100_000)  # the whole shard as one chunk: the reference
    download(UrlListConfig(path=listing), str(tmp_path / "whole"), cfg, out)
    a, b = _files(tmp_path / "chunked"), _files(tmp_path / "whole")
    assert sorted(a) == ["00000.parquet", "00000.tar"] and a == b  # same rows, same order, same bytes


@pytest.fixture()
def fetcher():
    st = FetchImages(loopback_config(image_size=16, timeout=2.0, concurrency=8, per_host_concurrency=8, workers=1))
    st.setup()
    st._is_setup = True
    yield st
    st.teardown()


def _chunks(stage: FetchImages, table: pa.Table, chunk: int) -> list[pa.Table]:
    return list(stage.iter_process(table, chunk))


@pytest.mark.parametrize("budget", [{"held_rows": 5}, {"held_bytes": 1}])
def test_a_full_reorder_buffer_holds_lanes_back_without_deadlock(timed, fetcher, budget):
    """A budget smaller than one chunk: lanes stop taking rows while the hanging row holds its chunk (rows of
    the chunk being waited for are always taken), then the run goes on; output as without the budget."""
    timed.hang_for = 3.0
    chunk, lanes = 10, fetcher.config.concurrency + DECODE_QUEUE_PER_WORKER * fetcher.workers
    table = pa.table({"url": _urls(timed, 120, hang_at=2)})
    reference = pa.concat_tables(_chunks(fetcher, table, chunk))
    assert fetcher.last_run is not None and fetcher.last_run.peak_rows > lanes + chunk  # unbudgeted: ran ahead
    for k, v in budget.items():
        setattr(fetcher, k, v)
    timed.arrivals.clear()
    chunks = _chunks(fetcher, table, chunk)
    assert [c.num_rows for c in chunks] == [10] * 12 + [1]
    assert pa.concat_tables(chunks).equals(reference)
    (hang,) = timed.times("/hang")
    before_timeout = [t for t in timed.times("/fast/") if t < hang + 2.0]
    cap = budget.get("held_rows", 1) + lanes + chunk
    assert len(before_timeout) <= cap, (len(before_timeout), cap)
    assert fetcher.last_run is not None and fetcher.last_run.peak_rows <= cap


def test_memory_is_bounded_by_what_the_buffer_holds(timed, fetcher):
    """The buffer counts the rows and image bytes it holds, and holds nothing once every chunk went out."""
    timed.hang_for = 3.0
    table = pa.table({"url": _urls(timed, 150, hang_at=0)})
    chunks = _chunks(fetcher, table, 10)
    run = fetcher.last_run
    assert run is not None and run.held_rows == 0 and run.held_bytes == 0  # everything went out
    lanes = fetcher.config.concurrency + DECODE_QUEUE_PER_WORKER * fetcher.workers
    assert run.peak_rows > lanes + 10  # fast rows went on past row 0 while it waited
    images = sorted(len(b or b"") for c in chunks for b in c.column("image").to_pylist())
    exif = sum(len(e or "") for c in chunks for e in c.column("exif").to_pylist())
    assert run.peak_rows * 512 <= run.peak_bytes <= run.peak_rows * 512 + sum(images[-run.peak_rows:]) + exif
