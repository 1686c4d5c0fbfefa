"""Spawning's ``ai.txt``: an origin's robots-style rules for AI training, by path and by media type.

``https://site/ai.txt`` has robots.txt syntax (``User-Agent``, ``Allow``, ``Disallow``; ``*`` and ``$``)::

    User-Agent: *
    Disallow: *.jpg
    Disallow: /portfolio/
    Allow: /press/

Media types are expressed as file-extension patterns (``*.jpg``, ``*.png`` ...): they are matched against the
URL's path case-insensitively (an image ``/A.JPG`` is refused by ``Disallow: *.jpg``), before the request; a URL
whose path has no extension (``/img?id=3``) is matched again once its response's ``Content-Type`` is known, with
that type's extensions (``image/jpeg``: ``.jpg``, ``.jpeg``), before its body is used. Groups are chosen by our
user-agent token as robots.txt's are (protego; the most specific rule wins, ``Allow`` on a tie).

:class:`AiTxtCache` fetches the file once per origin (concurrent callers share one fetch) and keeps it like
robots.txt and tdmrep.json: a missing file (4xx) or an unreadable one means no rules; a 5xx or a network failure
means no rules for ``error_ttl`` (the verdicts carry its cause). A refused image is never requested.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from yarl import URL

from clipcrawl.crawler.netguard import BlockedAddressError
from clipcrawl.crawler.origins import OriginCache

AI_TXT_PATH = "/ai.txt"
MAX_AI_TXT_BYTES = 512 * 1024


@dataclass(frozen=True)
class AiTxtVerdict:
    allowed: bool
    reason: str | None = None
    unreachable: str | None = None


@dataclass
class _Entry:
    parser: object | None  # protego.Protego, None: no rules
    expires: float
    error: str | None = None


def parse_ai_txt(body: bytes | str) -> object | None:
    """The parsed rules (a protego parser), or None when the file has no Allow/Disallow line."""
    from protego import Protego

    text = body[:MAX_AI_TXT_BYTES].decode("utf-8", "replace") if isinstance(body, bytes) else body
    if not any(line.split(":", 1)[0].strip().lower() in ("allow", "disallow") for line in text.splitlines()):
        return None
    try:
        return Protego.parse(text)
    except Exception:  # noqa: BLE001 - an unparseable file means no rules from it
        return None


def disallows(parser: object, url: str | URL, ua_token: str) -> bool:
    """True when ``parser``'s rules refuse ``url`` for ``ua_token`` (path as is, or lowercased: extensions)."""
    u = url if isinstance(url, URL) else URL(url)
    if not parser.can_fetch(str(u), ua_token):  # type: ignore[attr-defined]
        return True
    lower = u.with_path(u.path.lower()) if u.path != u.path.lower() else None
    return lower is not None and not parser.can_fetch(str(lower), ua_token)  # type: ignore[attr-defined]


def _extensions(mime: str) -> list[str]:
    import mimetypes

    exts = mimetypes.guess_all_extensions(mime, strict=False)
    extra = {"image/jpeg": [".jpg", ".jpeg"], "image/webp": [".webp"], "image/avif": [".avif"]}.get(mime, [])
    return list(dict.fromkeys([*extra, *exts]))


AiTxtFetch = Callable[[str], Awaitable[tuple[int | None, bytes]]]


class AiTxtCache:
    """Per-origin ``/ai.txt`` rules."""

    def __init__(self, fetch: AiTxtFetch, ua_token: str, ttl: float = 24 * 3600, error_ttl: float = 600) -> None:
        self._fetch = fetch
        self.ua_token = ua_token
        self.ttl, self.error_ttl = ttl, error_ttl
        self._cache: OriginCache[_Entry] = OriginCache(self._load)
        self.fetches = 0  # ai.txt requests made (tests assert "once per origin")

    async def check(self, url: str | URL) -> AiTxtVerdict:
        try:
            u = url if isinstance(url, URL) else URL(url)
            origin = str(u.origin())
        except (ValueError, TypeError):
            return AiTxtVerdict(True)  # the fetch itself reports an invalid URL
        if u.raw_path == AI_TXT_PATH:
            return AiTxtVerdict(True)
        entry = await self._cache.get(origin)
        if entry.parser is not None and disallows(entry.parser, u, self.ua_token):
            return AiTxtVerdict(False, f"disallowed for AI training by {origin}{AI_TXT_PATH} (Spawning ai.txt)")
        return AiTxtVerdict(True, None, entry.error and f"ai.txt unreachable: {entry.error}")

    async def check_media(self, url: str | URL, content_type: str | None) -> AiTxtVerdict:
        """For a URL whose path has no extension: its rules applied to the path + each extension of
        ``content_type`` (the origin's rules are cached by :meth:`check`, which ran first)."""
        try:
            u = url if isinstance(url, URL) else URL(url)
            origin = str(u.origin())
        except (ValueError, TypeError):
            return AiTxtVerdict(True)
        last = u.path.rsplit("/", 1)[-1]
        mime = (content_type or "").split(";", 1)[0].strip().lower()
        if "." in last or not mime:
            return AiTxtVerdict(True)
        entry = await self._cache.get(origin)
        if entry.parser is None:
            return AiTxtVerdict(True)
        for ext in _extensions(mime):
            if disallows(entry.parser, u.with_path(u.path + ext), self.ua_token):
                return AiTxtVerdict(False, f"disallowed for AI training by {origin}{AI_TXT_PATH} (Spawning ai.txt, "
                                           f"{mime} as *{ext})")
        return AiTxtVerdict(True)

    async def _load(self, origin: str) -> _Entry:
        self.fetches += 1
        now = time.monotonic()
        try:
            status, body = await self._fetch(origin + AI_TXT_PATH)
        except BlockedAddressError as e:
            return _Entry(None, now + self.error_ttl, str(e))
        except Exception as e:  # noqa: BLE001 - an unreachable file means no rules from it, for a while
            return _Entry(None, now + self.error_ttl, str(e) or type(e).__name__)
        if status is None or status >= 500:
            return _Entry(None, now + self.error_ttl, f"HTTP {status}" if status else "network error")
        if status >= 400 or not body.strip():
            return _Entry(None, now + self.ttl)
        return _Entry(parse_ai_txt(body), now + self.ttl)
