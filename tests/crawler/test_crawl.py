"""The crawler end to end against loopback sites (tests/crawler/site.py); nothing else is contacted."""

from __future__ import annotations

import functools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.crawler.crawl import crawl
from clipcrawl.schemas.config import CrawlConfig
from clipcrawl.schemas.keys import is_valid_key, sample_key
from clipcrawl.schemas.tables import PAGES, PAIRS, check
from tests.crawler.site import CHARSET_MODES, CHARSET_TEXTS, LoopbackServer, generated_site, rules_site

LOOPBACK = ["127.0.0.0/8"]  # the only exception to the address guard: tests never leave loopback


def _cfg(seed: str, **kw) -> CrawlConfig:
    args = dict(seeds=[seed], max_pages=200, max_depth=3, allowed_networks=LOOPBACK, concurrency=8,
                per_host_concurrency=4, retries=2, timeout=5)
    args.update(kw)
    return CrawlConfig(**args)


def read_dir(out: Path, what: str) -> pa.Table:
    files = sorted((out / what).glob("*.parquet"))
    tables = [pq.read_table(f) for f in files]
    return pa.concat_tables(tables) if tables else (PAIRS if what == "pairs" else PAGES).empty_table()


def _pages(out: Path) -> dict[str, dict]:
    return {r["url"].split("/", 3)[3]: r for r in read_dir(out, "pages").to_pylist()}


@pytest.fixture(scope="module")
def rules_crawl(tmp_path_factory):
    out = tmp_path_factory.mktemp("rules")
    with LoopbackServer(rules_site) as srv:
        summary = crawl(_cfg(srv.base + "/"), out, progress=False)
        return srv, out, summary


def test_outputs_match_schemas(rules_crawl):
    srv, out, summary = rules_crawl
    pairs, pages = read_dir(out, "pairs"), read_dir(out, "pages")
    check(pairs, PAIRS)
    check(pages, PAGES)
    assert summary.stop_reason == "frontier exhausted"
    assert summary.pages == pages.num_rows == summary.pages_total
    assert summary.pairs == pairs.num_rows
    rows = pairs.to_pylist()
    assert all(is_valid_key(r["key"]) and r["key"] == sample_key(r["url"], r["caption"]) for r in rows)
    assert {r["source"] for r in rows} == {"crawl"}
    assert len({r["key"] for r in rows}) == len(rows)


def test_robots_and_politeness(rules_crawl):
    srv, out, _ = rules_crawl
    hits = srv.log.counts()
    pages = _pages(out)
    assert hits["/robots.txt"] == 1
    assert "/private/secret" not in hits and pages["private/secret"]["status"] == "robots_disallowed"
    for path in ("busy", "unavailable"):  # 429 / 503 with Retry-After: 1, then succeeded
        t = srv.log.times("/" + path)
        assert len(t) == 2 and t[1] - t[0] >= 0.9, path
        assert pages[path]["status"] == "ok"
    assert all(h.user_agent.startswith("clipcrawl/") for h in srv.log.hits)


def test_links_dedupe_nofollow_depth(rules_crawl):
    srv, out, _ = rules_crawl
    hits = srv.log.counts()
    pages = _pages(out)
    assert hits["/a"] == 1 and sum(1 for u in pages if u == "a") == 1  # case/port/fragment/dot variants
    assert hits["/f-target"] == 1 and "/nf-target" not in hits  # rel=nofollow
    assert "/mnf-target" not in hits  # meta nofollow
    assert hits["/after-noai"] == 1  # noai withholds pairs, not links
    assert [hits[f"/deep/{n}"] for n in (1, 2, 3)] == [1, 1, 1] and "/deep/4" not in hits  # max_depth=3
    assert "/photo.jpg" not in hits  # image extensions are never queued
    assert "/offsite-link" not in hits and "/landing" not in hits  # off-domain, link or redirect
    assert pages["doc"]["status"] == "not_html" and pages["doc"]["bytes"] is None
    assert pages["missing"]["status"] == "http_error" and pages["missing"]["http_status"] == 404


def test_redirects(rules_crawl):
    srv, out, _ = rules_crawl
    pages = _pages(out)
    off = pages["redirect-off"]
    assert off["status"] == "off_domain" and off["final_url"].startswith("http://localhost:")
    private = pages["redirect-private"]
    assert private["status"] == "blocked_address" and private["final_url"] == "http://10.1.2.3/secret"
    inside = pages["redirect-in"]
    assert inside["status"] == "ok" and inside["final_url"].endswith("/redirected-target")


def test_pairs_and_noai(rules_crawl):
    srv, out, _ = rules_crawl
    pairs = read_dir(out, "pairs").to_pylist()
    by_page: dict[str, set] = {}
    for r in pairs:
        by_page.setdefault(r["page_url"].split("/", 3)[3], set()).add(
            (r["url"].split("/", 3)[3], r["caption"], r["caption_source"]))
    assert by_page["a"] == {
        ("img/plain.jpg", "A plain & simple photo", "alt"),
        ("img/lazy.jpg", "Lazy loaded", "alt"),
        ("img/l.jpg", "Responsive", "alt"),
        ("img/p2.webp", "In a picture", "alt"),
        ("img/f.jpg", "alt text", "alt"),
        ("img/ns.jpg", "No script", "alt"),
    }
    assert by_page["b"] == {("img/b.jpg", "Title only", "title")}
    f = next(r for r in pairs if r["url"].endswith("/img/f.jpg"))
    assert (f["alt"], f["figcaption"], f["caption_words"], f["caption_chars"]) == (
        "alt text", "The figure caption", 2, 8)
    assert all(r["language"] for r in pairs if r["caption_words"] >= 2)
    b = next(r for r in pairs if r["url"].endswith("/img/b.jpg"))
    assert (b["img_width_attr"], b["img_height_attr"]) == (640, 480)
    a = next(r for r in pairs if r["url"].endswith("/img/plain.jpg"))
    assert a["page_title"] == "Page A" and a["page_language"] == "en-GB"
    pages = _pages(out)
    for path in ("noai", "noai-ua", "xrobots-noai"):
        assert path not in by_page and pages[path]["status"] == "meta_noai" and pages[path]["n_pairs"] == 1
    assert by_page["noai-other"] == {("img/noai-other.jpg", "noai-other", "alt")}  # another bot's meta
    assert by_page["meta-nofollow"] == {("img/mnf.jpg", "Kept despite nofollow", "alt")}


@pytest.mark.parametrize("name", sorted(CHARSET_TEXTS))
def test_charsets(rules_crawl, name):
    srv, out, _ = rules_crawl
    pairs = {r["page_url"].split("/")[-1]: r for r in read_dir(out, "pairs").to_pylist()}
    pages = _pages(out)
    label, alt, _ = CHARSET_TEXTS[name]
    for mode in CHARSET_MODES:
        got = pairs[f"{name}-{mode}"]
        assert got["caption"] == alt and got["page_title"] == alt, (name, mode)
        assert pages[f"charset/{name}-{mode}"]["charset"] in {
            "iso-8859-1": ("windows-1252",), "windows-1251": ("windows-1251",), "shift_jis": ("shift_jis",)}[label]


def test_crawl_delay_spaces_requests(tmp_path):
    with LoopbackServer(functools.partial(rules_site, crawl_delay=0.3)) as srv:
        crawl(_cfg(srv.base + "/", max_pages=5, max_depth=1), tmp_path, progress=False)
        times = sorted(h.t for h in srv.log.hits if h.path != "/robots.txt")
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) >= 4
    # starts are spaced 0.3 s apart by the client; arrival jitter on a loaded machine eats a little of it
    assert min(gaps) >= 0.2 and sum(gaps) / len(gaps) >= 0.28


def test_private_addresses_refused_without_exception(tmp_path):
    with LoopbackServer(rules_site) as srv:
        summary = crawl(_cfg(srv.base + "/", allowed_networks=[]), tmp_path, progress=False)
        assert len(srv.log) == 0  # not even robots.txt: loopback is refused before connecting
    assert summary.by_status == {"blocked_address": 1}
    assert _pages(tmp_path)[""]["status"] == "blocked_address"


def test_page_limit_then_continue(tmp_path):
    with LoopbackServer(generated_site(n_pages=40)) as srv:
        s1 = crawl(_cfg(srv.base + "/p/0", max_pages=5, max_depth=10), tmp_path, progress=False)
        first = srv.log.counts()
        s2 = crawl(_cfg(srv.base + "/p/0", max_pages=12, max_depth=10), tmp_path, progress=False)
        both = srv.log.counts()
    assert (s1.pages, s1.stop_reason) == (5, "max_pages reached")
    assert (s2.pages, s2.pages_total) == (7, 12)
    pages = read_dir(tmp_path, "pages")
    assert pages.num_rows == 12 and len(set(pages.column("url").to_pylist())) == 12
    refetched = [p for p, n in both.items() if p.startswith("/p/") and n > 1]
    assert refetched == [] and sum(n for p, n in first.items() if p.startswith("/p/")) == 5


def test_revisit_after_days(tmp_path):
    with LoopbackServer(generated_site(n_pages=6, fanout=2)) as srv:
        crawl(_cfg(srv.base + "/p/0", max_depth=10), tmp_path, progress=False)
        s2 = crawl(_cfg(srv.base + "/p/0", max_depth=10, revisit_after_days=1), tmp_path, progress=False)
        assert s2.pages == 0  # nothing is a day old
        s3 = crawl(_cfg(srv.base + "/p/0", max_depth=10, revisit_after_days=1e-9), tmp_path, progress=False)
        hits = srv.log.counts()
    assert s3.revisits == 6 and s3.pages == 6 and s3.pairs == 0  # same pairs: no duplicates
    assert all(hits[f"/p/{i}"] == 2 for i in range(6))
    assert read_dir(tmp_path, "pages").num_rows == 12
    pairs = read_dir(tmp_path, "pairs")
    assert pairs.num_rows == len(set(pairs.column("key").to_pylist()))


def _cli_crawl(seed: str, out: Path, extra: list[str] | None = None):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "clipcrawl", "--log-format", "text", "crawl", "--seeds", seed, "--out", str(out),
           "--max-pages", "1000", "--max-depth", "100", "--concurrency", "4", "--per-host-concurrency", "4",
           "--allowed-networks", "127.0.0.0/8", *(extra or [])]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _frontier_states(out: Path) -> dict[str, str]:
    import sqlite3

    db = sqlite3.connect(out / "state" / "frontier.sqlite")
    try:
        return dict(db.execute("SELECT url, state FROM urls").fetchall())
    finally:
        db.close()


@pytest.mark.slow
def test_resume_after_kill(tmp_path):
    import os
    import signal
    import time

    n = 120
    with LoopbackServer(generated_site(n_pages=n, fanout=3, latency=0.02)) as srv:
        seed = srv.base + "/p/0"
        # the reference: one uninterrupted crawl
        ref = _cli_crawl(seed, tmp_path / "ref")
        assert ref.wait(120) == 0, ref.stderr.read()
        before = len(srv.log)
        # the same crawl, killed with SIGKILL mid-way, then rerun
        proc = _cli_crawl(seed, tmp_path / "run")
        deadline = time.monotonic() + 60
        while len(srv.log) - before < 40 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        killed_at = len(srv.log)
        states = _frontier_states(tmp_path / "run")
        finished = {u.split("/", 3)[3] for u, s in states.items() if s in ("done", "failed")}
        assert 0 < len(finished) < n, "the kill must land mid-crawl"
        again = _cli_crawl(seed, tmp_path / "run")
        assert again.wait(120) == 0, again.stderr.read()
        rerun_paths = [h.path.lstrip("/") for h in srv.log.hits[killed_at:]]
    refetched = finished & set(rerun_paths)
    assert not refetched, f"finished pages fetched again after the restart: {sorted(refetched)[:5]}"

    def outputs(out: Path):
        pages = read_dir(out, "pages").to_pylist()
        pairs = read_dir(out, "pairs").to_pylist()
        assert len({p["url"] for p in pages}) == len(pages)  # no page twice
        assert len({p["key"] for p in pairs}) == len(pairs)  # no pair twice
        return {(p["url"].split("/", 3)[3], p["status"]) for p in pages}, {(p["key"], p["url"]) for p in pairs}

    ref_pages, ref_pairs = outputs(tmp_path / "ref")
    run_pages, run_pairs = outputs(tmp_path / "run")
    assert len(ref_pages) == n and len(ref_pairs) == 1 + 3 * n  # every page, 3 pairs each + the shared logo
    assert run_pages == ref_pages
    assert run_pairs == ref_pairs


def test_deny_patterns_and_allowed_domains(tmp_path):
    with LoopbackServer(rules_site) as srv:
        s = crawl(_cfg(srv.base + "/", max_depth=2, deny_patterns=[r"/charset/", r"/deep/\d+$"]), tmp_path / "a",
                  progress=False)
        hits = srv.log.counts()
        assert s.pages > 10 and not any(p.startswith(("/charset/", "/deep/")) for p in hits)
        # an allowed domain that is not the seed's: only the seed itself is processed (it is never filtered)
        s = crawl(_cfg(srv.base + "/", allowed_domains=["example.com"]), tmp_path / "b", progress=False)
        assert s.pages == 1


def test_cli_exit_codes(tmp_path):
    from clipcrawl.cli import main
    from clipcrawl.crawler.frontier import Frontier

    assert main(["crawl", "--seeds", "ftp://x.invalid/", "--out", str(tmp_path)]) == 2  # unusable seed
    assert main(["crawl", "--out", str(tmp_path)]) == 2  # no seed at all
    assert main(["crawl", "--seeds", "http://x.invalid/", "--out", str(tmp_path), "--deny-pattern", "("]) == 2
    with Frontier(tmp_path / "locked" / "state"):  # another crawl holds the directory
        assert main(["crawl", "--seeds", "http://x.invalid/", "--out", str(tmp_path / "locked")]) == 3


def test_refusal_redecided_when_its_setting_changes(tmp_path):
    """Issue 25: a loopback seed refused (blocked_address) is crawled by a rerun with --allow-private-networks;
    a rerun with unchanged settings does not ask again."""
    from clipcrawl.cli import main

    out = tmp_path / "c"
    with LoopbackServer(rules_site) as srv:
        args = ["crawl", "--seeds", srv.base + "/", "--out", str(out), "--max-depth", "0", "--concurrency", "2"]
        assert main(args) in (0, 1)
        assert _frontier_states(out) == {srv.base + "/": "failed"} and len(srv.log) == 0
        assert main(args) in (0, 1)  # same settings: the refusal stands, nothing is asked again
        assert read_dir(out, "pages").num_rows == 1
        s = crawl(_cfg(srv.base + "/", max_depth=0, allowed_networks=[], allow_private_networks=True), out,
                  progress=False)
        assert s.redecided == 1 and s.pages == 1 and s.by_status == {"ok": 1}
        assert main([*args, "--allow-private-networks"]) == 0  # already decided under this setting
    assert _frontier_states(out)[srv.base + "/"] == "done"
    statuses = read_dir(out, "pages").column("status").to_pylist()
    assert statuses == ["blocked_address", "ok"]


def test_cli_rerun_with_allow_private_networks_crawls_refused_seed(tmp_path):
    from clipcrawl.cli import main

    out = tmp_path / "c"
    with LoopbackServer(rules_site) as srv:
        args = ["crawl", "--seeds", srv.base + "/", "--out", str(out), "--max-depth", "0"]
        main(args)
        assert main([*args, "--allow-private-networks"]) == 0
        assert len(srv.log) > 0
    assert [p["status"] for p in _pages(out).values()] == ["ok"]
