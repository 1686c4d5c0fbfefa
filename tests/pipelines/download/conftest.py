from __future__ import annotations

import pytest

from clipcrawl.pipelines.fetch_images import FetchImages
from clipcrawl.schemas.config import DownloadConfig

from .server import HostileServer


@pytest.fixture(scope="package")
def server():
    s = HostileServer().start()
    yield s
    s.stop()


def loopback_config(**kw) -> DownloadConfig:
    """Tests opt in to loopback; everything else stays at the defaults."""
    base = dict(allow_private_networks=True, timeout=2.0, retries=0, workers=1, concurrency=16,
                per_host_concurrency=16, max_bytes=1_000_000, image_size=64)
    base.update(kw)
    return DownloadConfig(**base)


@pytest.fixture(scope="package")
def stage():
    """One stage (one loop, one Fetcher, one decode pool) shared by the package's tests."""
    st = FetchImages(loopback_config())
    st.setup()
    st._is_setup = True
    yield st
    st.teardown()
