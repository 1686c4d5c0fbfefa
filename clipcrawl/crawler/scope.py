"""What a crawl may fetch: seeds, allowed domains, deny patterns, obvious non-HTML links.

* Seeds come from the config and its seeds file (one URL per line, ``#`` comments), normalised.
* Allowed domains default to the seeds' registered domains (``www.bbc.co.uk`` -> ``bbc.co.uk``;
  an IP address or ``localhost`` stands for itself); a host is in scope when it is an allowed
  domain or a subdomain of one. Seeds are always fetched, even outside the allowed domains.
* A URL matching any deny pattern (Python regex, ``re.search``) is never queued.
* Links whose last path segment ends in a known non-HTML extension (:data:`SKIP_EXTENSIONS`) are
  never queued: they would be refused as not HTML after costing a request.
"""

from __future__ import annotations

import re
from pathlib import Path

from clipcrawl.crawler.urls import host_of, normalize_url, registered_domain, same_site
from clipcrawl.schemas.config import ConfigError, CrawlConfig

_EXTS = ("jpg jpeg png gif webp avif bmp tif tiff svg ico pdf zip gz tgz bz2 xz 7z rar tar mp3 mp4 m4a m4v mov avi "
         "wmv webm mkv ogg ogv wav flac css js json xml rss atom woff woff2 ttf otf eot exe dmg iso apk bin doc docx "
         "xls xlsx ppt pptx odt ods csv")
SKIP_EXTENSIONS = frozenset(_EXTS.split())


def read_seeds(config: CrawlConfig) -> list[str]:
    """The config's seeds plus its seeds file, normalised and unique, in order."""
    raw = list(config.seeds)
    if config.seeds_file is not None:
        for i, line in enumerate(Path(config.seeds_file).read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                if not line.lower().startswith(("http://", "https://")):
                    raise ConfigError(f"{config.seeds_file}:{i}: {line!r} is not an http(s) URL")
                raw.append(line)
    out = []
    for s in raw:
        u = normalize_url(s)
        if u is None:
            raise ConfigError(f"seed {s!r} is not a usable http(s) URL (fix: check its host and port)")
        out.append(u)
    if not out:
        raise ConfigError(f"{config.seeds_file}: no seed URLs in the file (fix: one http(s) URL per line)")
    return list(dict.fromkeys(out))


def normalize_domain(d: str) -> str:
    """An allowed-domain entry -> its normalised host (``*.Example.com.`` -> ``example.com``)."""
    d = d.strip().lower().removeprefix("*.").strip(".")
    u = normalize_url(f"http://{d}/") if d and "/" not in d else None
    if u is None:
        raise ConfigError(f"allowed domain {d!r} is not a host name (fix: e.g. example.com)")
    return host_of(u)


class CrawlScope:
    def __init__(self, config: CrawlConfig, seeds: list[str]) -> None:
        domains = config.allowed_domains or [registered_domain(host_of(s)) for s in seeds]
        self.allowed = frozenset(normalize_domain(d) for d in domains)
        try:
            self.deny = [re.compile(p) for p in config.deny_patterns]
        except re.error as e:
            raise ConfigError(f"deny pattern {e.pattern!r}: {e} (fix: use a valid Python regex)") from None
        self._host_ok: dict[str, bool] = {}

    def host_allowed(self, host: str) -> bool:
        ok = self._host_ok.get(host)
        if ok is None:
            ok = self._host_ok[host] = same_site(host, self.allowed)
        return ok

    def wanted(self, url: str) -> bool:
        """May the normalised ``url`` be queued?"""
        if not self.host_allowed(host_of(url)):
            return False
        last = url.split("://", 1)[1].split("?", 1)[0].rsplit("/", 1)[-1]
        if "." in last and last.rsplit(".", 1)[1].lower() in SKIP_EXTENSIONS:
            return False
        return not any(p.search(url) for p in self.deny)

    def follow(self, url: str) -> str | None:
        """The Fetcher's redirect hook: a reason not to follow a redirect to ``url``, or None."""
        u = normalize_url(url)
        if u is None or not self.host_allowed(host_of(u)):
            return f"redirect leaves the allowed domains: {url}"
        return None
