"""The demo end to end: the bundled site crawled, downloaded, scored by the tiny CLIP, deduplicated
and written; every assertion is on the files a user gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest

from clipcrawl.base.shardfiles import list_shards
from clipcrawl.pipelines.demo import demo_config
from clipcrawl.pipelines.demo.site import DemoSite
from clipcrawl.pipelines.run import run
from clipcrawl.schemas import PAGES, PAIRS, SAMPLES, check
from tests.verify_helpers import assert_verified

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "ds"
    with DemoSite() as site:
        st = run(demo_config(site.url, str(out)))
        yield site, out, st


def _all(folder, columns=None):
    import pyarrow as pa

    files = sorted(p for p in folder.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def test_robots_disallowed_never_requested(demo):
    site, _, _ = demo
    paths = {urlsplit(r).path for r in site.requests}
    assert "/robots.txt" in paths
    assert not paths & site.content.expected.private_paths
    assert not any(p.startswith("/private/") for p in paths)


def test_parquet_accounts_for_every_image_url_found(demo):
    _, out, st = demo
    pairs = _all(out / "crawl" / "pairs")
    samples = _all(out / "shards")
    assert sorted(samples.column("key").to_pylist()) == sorted(pairs.column("key").to_pylist())
    assert samples.column("status").null_count == 0
    failed = [e for s, e in zip(samples.column("status").to_pylist(), samples.column("error_message").to_pylist())
              if s != "success"]
    assert all(e and ": " in e for e in failed)  # "<stage>: <reason>"
    assert st.state == "done" and st.counts["pairs_new"] == pairs.num_rows


def test_every_artifact_matches_its_schema(demo):
    _, out, _ = demo
    for folder, schema in ((out / "crawl" / "pairs", PAIRS), (out / "crawl" / "pages", PAGES),
                           (out / "shards", SAMPLES)):
        for f in folder.glob("*.parquet"):
            check(pq.read_table(f), schema)


def test_statuses_cover_what_the_site_plants(demo):
    site, out, _ = demo
    exp = site.content.expected
    t = _all(out / "shards").to_pandas()
    by_path = {urlsplit(u).path: s for u, s in zip(t["url"], t["status"])}
    assert by_path["/img/missing.jpg"] == "failed_to_download"
    assert by_path["/img/truncated.jpg"] == "failed_to_resize"
    assert by_path["/img/not-an-image.jpg"] == "failed_to_resize"
    for name in exp.generic:
        assert by_path[f"/img/{name}.jpg"] == "filtered_text"
    # deliberately wrong captions score below the right ones and (nearly all) fall under the threshold;
    # the tiny shapes model is weakest on wrong shapes, so one may survive on another CPU's int8 kernels
    sim = dict(zip(t["url"].map(lambda u: urlsplit(u).path), t["clip_similarity"]))
    wrong = [sim[f"/img/{n}.jpg"] for n in exp.mismatched]
    right = t[(t.status == "success")].clip_similarity
    assert wrong and max(wrong) < right.median()
    dropped = [by_path[f"/img/{n}.jpg"] == "filtered_clip" for n in exp.mismatched]
    assert sum(dropped) >= len(dropped) - 1
    dups = t[t.status == "duplicate"]
    assert len(dups) >= 2 and set(dups.dedup_method) >= {"sha256"}
    assert dups.duplicate_of.notna().all()
    # exactly the planted copies: a mirror and its original, never two different shapes
    path_of = {k: urlsplit(u).path for k, u in zip(t["key"], t["url"])}
    planted = {frozenset({m, "/img/" + m.split("/")[-1].replace("-copy", "")}) for m in exp.duplicates}
    found = {frozenset({path_of[k], path_of[d]}) for k, d in zip(dups["key"], dups["duplicate_of"])}
    assert found == planted, sorted(map(sorted, found - planted))
    kept = t[t.status == "success"]
    assert len(kept) >= 25 and kept.clip_similarity.min() >= 0.4
    # the page that opts out of AI use gave no pairs
    pages = _all(out / "crawl" / "pages").to_pandas()
    assert (pages.status == "meta_noai").sum() == 1


def test_shards_read_by_webdataset(demo):
    wds = pytest.importorskip("webdataset")
    _, out, _ = demo
    tars = [r.tar for r in list_shards(str(out))]
    n = 0
    for jpg, txt, meta in wds.WebDataset(tars, shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json"):
        assert jpg.size[0] > 0 and txt and meta["status"] == "success" and meta["caption"] == txt
        n += 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert n == manifest["totals"]["samples_kept"] > 0
    assert_verified(out)


def test_cli_demo_exits_0_and_prints_the_summary(tmp_path):
    r = subprocess.run([sys.executable, "-m", "clipcrawl", "demo", "--out", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "100"})
    assert r.returncode == 0, r.stderr[-3000:]
    for word in ("pages crawled", "pairs found", "downloaded", "kept after dedup", "dropped by reason", "shards"):
        assert word in r.stdout
    assert list((tmp_path / "d" / "shards").glob("*.tar"))
    assert_verified(tmp_path / "d")
