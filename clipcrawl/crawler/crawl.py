"""The polite, resumable, link-following crawler: seed pages in, (image URL, caption) pairs out.

``crawl(config, out_dir)`` writes::

    out_dir/state/frontier.sqlite     the frontier and everything found (see clipcrawl.crawler.frontier)
    out_dir/pairs/NNNNN.parquet       PAIRS schema, one row per pair key (first page wins)
    out_dir/pages/NNNNN.parquet       PAGES schema, one row per processed page, with its PageStatus

Rules: only http(s); what is in scope (allowed domains, deny patterns, non-HTML extensions) is
decided by :mod:`clipcrawl.crawler.scope`; links are followed up to ``max_depth`` hops (links one
hop deeper are kept queued, so a rerun with a larger ``--max-depth`` continues); ``max_pages``
bounds the URLs processed in total, across runs (a rerun with a larger value continues). Fetching goes through
:class:`clipcrawl.crawler.fetch.Fetcher`: robots.txt and Crawl-delay, per-host slots and delay,
retries with Retry-After, the private-address guard on every hop; a redirect that leaves the
allowed domains is not followed (status ``off_domain``, target in ``final_url``). Only HTML
responses are read (the ``accept`` hook refuses others before the body). Pages whose meta robots
or ``X-Robots-Tag`` says noai/noimageai/noml/noindex/noimageindex give no pairs (``meta_noai``);
``nofollow`` gives no links. TDMRep (``tdm-reservation: 1`` header, ``/.well-known/tdmrep.json``,
``<meta name="tdm-reservation" content="1">``) gives ``tdm_reserved``: the first two are never read,
the meta withholds the pairs (links are still followed). Blocklisted page URLs/domains are never
requested (``blocked``). A page over the HTML parse budget (:mod:`clipcrawl.crawler.parsebudget`:
nested deeper than 512 elements, or over 500,000 of them) is ``too_large``, with the reason.

Refusals decided by a setting (``blocked_address``, ``robots_disallowed``, ``blocked``, ``tdm_reserved``,
``off_domain``) are re-decided on the next run whose setting differs (``allow_private_networks`` /
``allowed_networks``, ``respect_robots`` / the user-agent token, the blocklists and their contents,
``respect_tdmrep``, the allowed domains): a rerun with ``--allow-private-networks`` after a refused
loopback seed crawls it (``CrawlSummary.redecided``). A rerun with the same settings does not ask again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from clipcrawl.base.failpoints import failpoint
from clipcrawl.base.progress import Progress, log
from clipcrawl.crawler.extract import PageTooComplex, extract_page, normalize_language
from clipcrawl.crawler.fetch import FetchConfig, Fetcher, FetchResult
from clipcrawl.crawler.frontier import REFUSAL_STATUSES, Claim, Frontier
from clipcrawl.crawler.output import ChunkWriter
from clipcrawl.crawler.robots import robots_tag_disallows, user_agent_token
from clipcrawl.crawler.scope import CrawlScope, read_seeds  # noqa: F401 - read_seeds is re-exported
from clipcrawl.crawler.urls import host_of, normalize_url
from clipcrawl.schemas.config import NOAI_DIRECTIVES, ConfigError, CrawlConfig
from clipcrawl.schemas.keys import sample_key
from clipcrawl.schemas.status import PageStatus

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_KIND_STATUS = {
    "robots": PageStatus.ROBOTS_DISALLOWED, "blocked": PageStatus.BLOCKED_ADDRESS,
    "redirect": PageStatus.REDIRECT_LIMIT, "too_large": PageStatus.TOO_LARGE, "rejected": PageStatus.NOT_HTML,
    "http": PageStatus.HTTP_ERROR, "refused": PageStatus.OFF_DOMAIN, "tdm": PageStatus.TDM_RESERVED,
    "blocklisted": PageStatus.BLOCKED,
}
#: page statuses counted as errors; robots, noai, not-HTML and off-domain refusals are expected outcomes
ERROR_STATUSES = frozenset({PageStatus.HTTP_ERROR, PageStatus.FETCH_ERROR, PageStatus.TOO_LARGE,
                            PageStatus.REDIRECT_LIMIT, PageStatus.BLOCKED_ADDRESS})
CLAIM_WINDOW = 512  # queued URLs scanned per claim for hosts with free slots
_HTML_SNIFF = re.compile(rb"<(!doctype\s+html|html|head|body|title|meta|div|p|a\s)", re.I)


@dataclass
class CrawlSummary:
    out_dir: str
    pages: int = 0  # processed in this run
    pairs: int = 0  # new pair keys in this run
    errors: int = 0  # pages of this run that failed (ERROR_STATUSES); refusals are not errors
    by_status: dict[str, int] = field(default_factory=dict)
    pages_total: int = 0  # across runs
    pairs_total: int = 0
    queued: int = 0  # URLs still queued within max_depth (max_pages stopped the crawl first)
    deeper: int = 0  # URLs queued one hop beyond max_depth (a rerun with a larger --max-depth takes them)
    bytes: int = 0
    elapsed: float = 0.0  # the whole call, opening and final writes included
    crawl_seconds: float = 0.0  # the fetch loop alone
    stop_reason: str = ""  # "frontier exhausted" | "max_pages reached"
    requeued: int = 0  # in-flight URLs of an interrupted run, queued again
    revisits: int = 0  # pages queued again by revisit_after_days
    retried: int = 0  # transient failures of earlier runs queued again
    redecided: int = 0  # policy refusals of earlier runs queued again because their setting changed

    @property
    def pages_per_s(self) -> float:
        t = self.crawl_seconds or self.elapsed
        return self.pages / t if t > 0 else 0.0


class Crawler:
    """One crawl of ``config`` into ``out_dir``; ``await Crawler(...).run()``."""

    def __init__(self, config: CrawlConfig, out_dir: str | Path, progress: bool = True) -> None:
        self.cfg = config
        if "://" in str(out_dir):
            raise ConfigError(f"crawl output {out_dir}: must be a local directory (the frontier is SQLite); "
                              "copy pairs/ and pages/ to object storage afterwards")
        self.out = Path(out_dir)
        self.progress = progress
        self.seeds = read_seeds(config)
        self.scope = CrawlScope(config, self.seeds)
        self.token = user_agent_token(config.user_agent)
        self._inflight: dict[str, int] = {}  # host -> pages claimed and not finished
        self.summary = CrawlSummary(out_dir=str(self.out))
        self.frontier: Frontier | None = None
        self.writer: ChunkWriter | None = None

    @staticmethod
    def _accept(resp) -> str | None:
        mime = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if mime and mime not in HTML_TYPES:
            return f"not HTML: {mime}"
        return None

    def fetch_config(self) -> FetchConfig:
        c = self.cfg
        return FetchConfig(
            user_agent=c.user_agent, timeout=c.timeout, max_bytes=c.max_page_bytes, max_redirects=c.max_redirects,
            retries=c.retries, allow_private=c.allow_private_networks, allowed_networks=tuple(c.allowed_networks),
            respect_robots=c.respect_robots, per_host_concurrency=c.per_host_concurrency, delay=c.delay,
            total_concurrency=c.concurrency, respect_tdmrep=c.respect_tdmrep, blocklists=tuple(c.blocklists),
            max_retry_after=c.max_retry_after)

    def policy(self) -> dict[str, str]:
        """A fingerprint of the setting behind each kind of refusal (see the module doc)."""
        c = self.cfg
        blocklists = []
        for b in c.blocklists:
            try:
                digest = hashlib.sha256(Path(b).read_bytes()).hexdigest() if "://" not in b else ""
            except OSError:
                digest = ""
            blocklists.append([b, digest])
        values = {"address": [c.allow_private_networks, sorted(c.allowed_networks)],
                  "robots": [c.respect_robots, self.token], "blocklist": blocklists,
                  "tdm": [c.respect_tdmrep], "domains": sorted(self.scope.allowed)}
        return {k: json.dumps(v, sort_keys=True) for k, v in values.items()}

    # ------------------------------------------------------------------ run
    async def run(self) -> CrawlSummary:
        t0 = time.monotonic()
        with Frontier(self.out / "state", self.cfg.revisit_after_days, policy=self.policy()) as frontier:
            self.frontier = frontier
            self.writer = ChunkWriter(frontier, self.out, self.cfg.rows_per_chunk)
            self.writer.recover()
            s = self.summary
            s.requeued, s.revisits, s.retried = frontier.requeued, frontier.revisits, frontier.retried
            s.redecided = frontier.redecided
            if s.redecided:
                log.info("crawl: %d page(s) refused under other settings queued again", s.redecided)
            frontier.add(self.seeds, 0)
            try:
                async with Fetcher(self.fetch_config()) as fetcher:
                    await self._loop(fetcher)
                    self.summary.bytes = fetcher.bytes_downloaded
            finally:
                self.writer.flush(final=True)
                counts = frontier.counts()
                s = self.summary
                s.pages_total, s.pairs_total = counts.get("pages", 0), counts.get("pairs", 0)
                s.queued = frontier.queued(self.cfg.max_depth)
                s.deeper = counts.get("queued", 0) - s.queued
                s.elapsed = time.monotonic() - t0
        return self.summary

    async def _loop(self, fetcher: Fetcher) -> None:
        assert self.frontier is not None
        done_before = self.frontier.processed()
        total = max(0, self.cfg.max_pages - done_before)
        pending: set[asyncio.Task] = set()
        t0 = time.monotonic()
        with Progress("crawl", total=total, unit="pages", enabled=self.progress) as bar:
            try:
                await self._run_pending(fetcher, bar, pending, done_before, t0)
            finally:  # interrupted (Ctrl-C, a bug): stop the pages in flight; they are queued again next run
                for t in pending:
                    t.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)

    async def _run_pending(self, fetcher: Fetcher, bar: Progress, pending: set[asyncio.Task], done_before: int,
                           t0: float) -> None:
        cfg, frontier = self.cfg, self.frontier
        assert frontier is not None and self.writer is not None
        while True:
            room = min(cfg.concurrency - len(pending), cfg.max_pages - done_before - self.summary.pages - len(pending))
            for claim in frontier.claim(room, cfg.max_depth, take=self._take, window=CLAIM_WINDOW):
                pending.add(asyncio.ensure_future(self._process(fetcher, claim)))
            if not pending:
                reached = done_before + self.summary.pages >= cfg.max_pages
                self.summary.stop_reason = "max_pages reached" if reached else "frontier exhausted"
                self.summary.crawl_seconds = time.monotonic() - t0
                return
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.difference_update(done)
            for t in done:
                t.result()
                bar.update(1, pairs=self.summary.pairs, errors=self.summary.errors)
            self.writer.flush()

    def _take(self, url: str) -> bool:
        """Claim ``url`` now? Not while its host already has 2 x per-host-concurrency pages in flight."""
        host = host_of(url)
        n = self._inflight.get(host, 0)
        if n >= 2 * self.cfg.per_host_concurrency:
            return False
        self._inflight[host] = n + 1
        return True

    async def _process(self, fetcher: Fetcher, claim: Claim) -> None:
        try:
            await self._process_one(fetcher, claim)
        finally:
            host = host_of(claim.url)
            self._inflight[host] -= 1

    async def _process_one(self, fetcher: Fetcher, claim: Claim) -> None:
        now = time.time()
        res = await fetcher.fetch(claim.url, accept=self._accept, follow=self.scope.follow)
        final = normalize_url(res.final_url) or res.final_url
        headers = res.headers or {}
        page = {"url": claim.url, "final_url": final, "http_status": res.status, "depth": claim.depth,
                "content_type": _header(headers, "content-type"), "fetched_at": now}
        pairs: list[dict] = []
        links: list[str] = []
        if res.ok:
            try:
                status = self._parse(res, final, page, pairs, links)
            except PageTooComplex as e:  # nested or built up past the parse budget: refused like an oversize body
                pairs.clear()
                links.clear()
                status, page["error_message"] = PageStatus.TOO_LARGE, f"crawl: {e}"
            except Exception as e:  # noqa: BLE001 - a page the parser chokes on is data, not a crash
                log.warning("crawl: cannot parse %s: %s", final, e)
                pairs.clear()
                links.clear()
                status, page["error_message"] = PageStatus.FETCH_ERROR, f"crawl: parse error: {type(e).__name__}: {e}"
        else:
            status = _KIND_STATUS.get(res.error_kind or "", PageStatus.FETCH_ERROR)
            page["error_message"] = f"crawl: {res.error}"
        page["status"] = status.value
        ok = status in (PageStatus.OK, PageStatus.META_NOAI, PageStatus.TDM_RESERVED)
        assert self.frontier is not None
        done = self.frontier.complete(claim, page, pairs, links, ok=ok, final_url=final if res.ok else None,
                                      retryable=res.retryable, refused=REFUSAL_STATUSES.get(status.value))
        failpoint("crawl.page")
        s = self.summary
        s.pages += 1
        s.pairs += done.new_pairs
        s.errors += status in ERROR_STATUSES
        s.by_status[status.value] = s.by_status.get(status.value, 0) + 1
        if self.writer is not None:
            self.writer.added(pages=1, pairs=done.new_pairs)

    def _parse(self, res: FetchResult, final: str, page: dict, pairs: list[dict], links: list[str]) -> PageStatus:
        body = res.body or b""
        page["bytes"] = len(body)
        ctype = page["content_type"]
        if not ctype and not _HTML_SNIFF.search(body[:2048]):
            page["error_message"] = "crawl: no content type and the body does not look like HTML"
            return PageStatus.NOT_HTML
        p = extract_page(body, final, ctype, ua_token=self.token)
        tags = [v for k, v in (res.headers or {}).items() if k.lower() == "x-robots-tag"]
        tag_noai = robots_tag_disallows(tags, self.token, (*NOAI_DIRECTIVES, "none")) if tags else None
        tag_nofollow = robots_tag_disallows(tags, self.token, ("nofollow", "none")) if tags else None
        language = p.language or _content_language(res.headers)
        page.update(charset=p.charset, title=p.title, language=language)
        noai = p.noai_reason or tag_noai
        if not (p.nofollow or tag_nofollow):
            links.extend(u for u in p.links if self.scope.wanted(u))
        page["n_links"] = len(links)
        page["n_pairs"] = len(p.pairs) + p.n_withheld
        if noai:
            page["error_message"] = f"crawl: pairs withheld ({noai}; {page['n_pairs']} pairs)"
            if noai == "tdm-reservation":
                policy = f", policy {p.tdm_policy}" if p.tdm_policy else ""
                page["error_message"] = (f"crawl: TDM rights reserved (<meta name=tdm-reservation content=1>{policy}); "
                                         f"{page['n_pairs']} pairs withheld")
                return PageStatus.TDM_RESERVED
            return PageStatus.META_NOAI
        now = page["fetched_at"]
        for c in p.pairs:
            pairs.append({"key": sample_key(c.url, c.caption), "url": c.url, "caption": c.caption, "page_url": final,
                          "caption_source": c.caption_source, "alt": c.alt, "figcaption": c.figcaption,
                          "title": c.title, "page_title": p.title, "page_language": language,
                          "img_width_attr": c.width, "img_height_attr": c.height, "found_at": now,
                          "page_license": p.license})
        return PageStatus.OK


def _header(headers: dict[str, str] | None, name: str) -> str | None:
    """A response header by case-insensitive name (FetchResult.headers keeps the server's spelling)."""
    for k, v in (headers or {}).items():
        if k.lower() == name:
            return v
    return None


def _content_language(headers: dict[str, str] | None) -> str | None:
    return normalize_language(_header(headers, "content-language"))


def crawl(config: CrawlConfig, out_dir: str | Path, progress: bool = True) -> CrawlSummary:
    """Run (or continue) the crawl of ``config`` into ``out_dir``; see the module doc."""
    crawler = Crawler(config, out_dir, progress=progress)
    summary = asyncio.run(crawler.run())
    log.info("crawl: %d pages (%.1f/s), %d new pairs, %d errors; %s", summary.pages, summary.pages_per_s,
             summary.pairs, summary.errors, summary.stop_reason)
    return summary
