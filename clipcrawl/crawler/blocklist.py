"""Blocklists: URLs, domains and image hashes that are never taken (Re-LAION-style lists).

A blocklist file has one rule per line (blank lines and ``#`` comments ignored)::

    https://example.com/some/image.jpg     # this URL (compared after normalize_url)
    domain:example.com                     # this host and every subdomain (a.example.com, b.a.example.com)
    sha256:<64 hex digits>                 # downloaded bytes with this SHA-256
    md5:<32 hex digits>                    # downloaded bytes with this MD5

URL and domain rules are applied **before any request** (and to every redirect target); hash rules
right after the body is downloaded, before it is decoded. A match gives status ``blocked`` with the
rule and its ``file:line`` in the reason. Lists are plain text so that published hash lists (one
hex digest a line after a ``sha256:`` / ``md5:`` prefix) can be used as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clipcrawl.crawler.urls import normalize_url
from clipcrawl.schemas.configbase import ConfigError

_COMMENT = re.compile(r"(^|\s)#.*$")
_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "md5": re.compile(r"^[0-9a-f]{32}$")}


def _host(url: str) -> str:
    from yarl import URL

    try:
        return (URL(url).host or "").lower().rstrip(".")
    except (ValueError, TypeError):
        return ""


@dataclass
class Blocklist:
    """Rules of one or more files; ``rule -> "file:line"`` so a match can name where it came from."""

    urls: dict[str, str] = field(default_factory=dict)
    domains: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    md5: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> Blocklist:
        bl = cls()
        for p in paths:
            bl.add_file(p)
        return bl

    def add_file(self, path: str | Path) -> None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"blocklist {p}: cannot read it ({e.strerror or e}) (fix: pass an existing file)") from None
        for n, line in enumerate(text.splitlines(), 1):
            self.add_rule(line, f"{p.name}:{n}")

    def add_rule(self, line: str, where: str = "<rule>") -> None:
        rule = _COMMENT.sub("", line).strip()  # "#" starts a comment at the line start or after a space
        if not rule:
            return
        kind, sep, value = rule.partition(":")
        kind = kind.strip().lower()
        if sep and kind in _HEX:
            digest = value.strip().lower()
            if not _HEX[kind].match(digest):
                raise ConfigError(f"blocklist {where}: {rule!r} is not a {kind} hex digest "
                                  f"(fix: {kind}:<{64 if kind == 'sha256' else 32} hex digits>)")
            getattr(self, kind)[digest] = where
        elif sep and kind == "domain":
            host = value.strip().lower().rstrip(".").removeprefix("*.")
            if not host or "/" in host:
                raise ConfigError(f"blocklist {where}: {rule!r} is not a domain (fix: domain:example.com)")
            with contextlib.suppress(UnicodeError):
                host = host.encode("idna").decode("ascii")
            self.domains[host] = where
        else:
            url = normalize_url(rule)
            if url is None:
                raise ConfigError(f"blocklist {where}: {rule!r} is neither an http(s) URL nor domain:/sha256:/md5: "
                                  "(fix: one rule a line: URL, domain:example.com, sha256:<hex> or md5:<hex>)")
            self.urls[url] = where

    def __len__(self) -> int:
        return len(self.urls) + len(self.domains) + len(self.sha256) + len(self.md5)

    @property
    def has_url_rules(self) -> bool:
        return bool(self.urls or self.domains)

    @property
    def has_hash_rules(self) -> bool:
        return bool(self.sha256 or self.md5)

    # ------------------------------------------------------------ matching
    def match_url(self, url: str) -> str | None:
        """The reason ``url`` is blocked (URL or domain rule), or None. Checked before any request."""
        if not self.has_url_rules or not url:
            return None
        norm = normalize_url(url) or url
        where = self.urls.get(norm)
        if where is not None:
            return f"blocklist {where}: URL {norm}"
        if self.domains:
            host = _host(norm)
            parts = host.split(".")
            for i in range(len(parts)):
                d = ".".join(parts[i:])
                where = self.domains.get(d)
                if where is not None:
                    return f"blocklist {where}: domain:{d}"
        return None

    def match_digest(self, sha256: str | None = None, md5: str | None = None) -> str | None:
        if sha256 and (where := self.sha256.get(sha256.lower())) is not None:
            return f"blocklist {where}: sha256:{sha256.lower()}"
        if md5 and (where := self.md5.get(md5.lower())) is not None:
            return f"blocklist {where}: md5:{md5.lower()}"
        return None

    def match_body(self, body: bytes) -> str | None:
        """The reason the downloaded ``body`` is blocked (a hash rule), or None."""
        if not self.has_hash_rules:
            return None
        sha = hashlib.sha256(body).hexdigest() if self.sha256 else None
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest() if self.md5 else None
        return self.match_digest(sha, md5)
