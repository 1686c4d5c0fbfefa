"""URL normalisation (the crawler's frontier key, and everyone's URL dedup) and registered domains.

:func:`normalize_url` maps the many spellings of one http(s) URL onto one string:

* resolved against ``base`` (relative and protocol-relative references, ``..`` segments);
* ASCII tab/newline removed and surrounding whitespace/control characters stripped (as browsers do);
* scheme and host lowercased, a non-ASCII host IDNA-encoded (UTS 46, then IDNA 2003 as a
  fallback), a trailing dot on the host removed, the default port (80/443) removed;
* the path's dot-segments resolved (RFC 3986 5.2.4), ``\\`` read as ``/`` before the query, an
  empty path made ``/``;
* percent-encoding normalised in path and query: escapes of unreserved characters decoded
  (``%7E`` -> ``~``), other escapes upper-cased (``%2f`` -> ``%2F``, never decoded), characters
  that must be escaped (spaces, non-ASCII as UTF-8, stray ``%``) encoded;
* the fragment dropped, an empty query (``?``) dropped, query parameters optionally sorted.

It returns ``None`` for anything that is not a usable http(s) URL (``mailto:``, ``javascript:``,
``data:``, no host, bad port, bad IDNA host).

:func:`registered_domain` uses tldextract's *bundled* public-suffix snapshot (never fetched).
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote

__all__ = ["normalize_url", "registered_domain", "host_of", "same_site"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_STRIP = "".join(chr(c) for c in range(0x21)) + "\x7f"  # C0 controls and space
_TABS_NL = re.compile(r"[\t\n\r]")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# characters that stay literal (RFC 3986 pchar / query, minus '%' which is handled separately)
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
# fast path: a component made only of these, with no '%', needs no work
_CLEAN_PATH = re.compile(r"^[A-Za-z0-9/:@!$&'()*+,;=._~-]*$")
_CLEAN_QUERY = re.compile(r"^[A-Za-z0-9/:@!$&'()*+,;=._~?-]*$")
_HOST_OK = re.compile(r"^[a-z0-9._-]+$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def _fix_escape(m: re.Match[str]) -> str:
    ch = chr(int(m.group(1), 16))
    return ch if ch in _UNRESERVED else "%" + m.group(1).upper()


def _norm_component(s: str, safe: str, clean: re.Pattern[str]) -> str:
    if clean.match(s):
        return s
    out = []
    pos = 0
    for m in _ESCAPE.finditer(s):
        out.append(quote(s[pos : m.start()], safe=safe))  # also escapes stray '%'
        out.append(_fix_escape(m))
        pos = m.end()
    out.append(quote(s[pos:], safe=safe))
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4."""
    if "." not in path:
        return path
    segs = path.split("/")
    out: list[str] = []
    for seg in segs[1:] if path.startswith("/") else segs:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    if segs[-1] in (".", ".."):
        out.append("")  # "/a/b/.." -> "/a/"
    return "/" + "/".join(out)


@functools.lru_cache(maxsize=4096)
def _norm_host(host: str) -> str | None:
    host = host.rstrip(".").lower()
    if not host:
        return None
    if host.isascii():
        if host.startswith("["):
            return host if host.endswith("]") else None
        if "%" in host:
            return None
        return host if _HOST_OK.match(host) else None
    try:
        import idna

        return idna.encode(host, uts46=True).decode("ascii")
    except Exception:  # noqa: BLE001 - try the permissive IDNA 2003 codec next
        try:
            return host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None


def normalize_url(url: str, base: str | None = None, sort_query: bool = False) -> str | None:
    """The canonical form of an http(s) URL (see the module doc), or None if it is not one."""
    if not url:
        return None
    url = url.strip(_STRIP)
    if "\t" in url or "\n" in url or "\r" in url:
        url = _TABS_NL.sub("", url)
    if "\\" in url:  # browsers read "\" as "/" before the query in http(s) URLs
        cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
        url = url[:cut].replace("\\", "/") + url[cut:]
    if base is not None:
        url = _join(url, base)
        if url is None:
            return None
    return _normalize_abs(url, sort_query)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_ABS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(?:\?([^#]*))?")


@functools.lru_cache(maxsize=1024)
def _split_base(base: str) -> tuple[str, str, str, str] | None:
    m = _ABS.match(base)
    if m is None:
        return None
    return m.group(1).lower(), m.group(2), m.group(3) or "/", m.group(4) or ""


def _join(ref: str, base: str) -> str | None:
    """RFC 3986 reference resolution (dot segments are removed later, by the normaliser)."""
    if _SCHEME.match(ref):
        return ref
    b = _split_base(base)
    if b is None:
        return None
    scheme, netloc, path, query = b
    if ref.startswith("//"):
        return f"{scheme}:{ref}"
    if ref.startswith("/"):
        return f"{scheme}://{netloc}{ref}"
    if not ref or ref.startswith("#"):
        return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
    if ref.startswith("?"):
        return f"{scheme}://{netloc}{path}{ref}"
    return f"{scheme}://{netloc}{path[: path.rfind('/') + 1] or '/'}{ref}"


@functools.lru_cache(maxsize=65536)  # sites repeat their navigation links on every page
def _normalize_abs(url: str, sort_query: bool) -> str | None:
    m = _ABS.match(url)
    if m is None:
        return None
    scheme = m.group(1).lower()
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port is None:
        return None
    userinfo, _, hostport = m.group(2).rpartition("@")
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        host += "]"
        if rest and not rest.startswith(":"):
            return None
        port_s = rest[1:]
    else:
        host, _, port_s = hostport.partition(":")
    nhost = _norm_host(host)
    if nhost is None:
        return None
    if port_s:
        if not port_s.isdigit() or int(port_s) > 65535:
            return None
        if int(port_s) != default_port:
            nhost = f"{nhost}:{int(port_s)}"
    path = m.group(3)
    path = _remove_dot_segments(_norm_component(path, _PATH_SAFE, _CLEAN_PATH)) if path else "/"
    query = m.group(4)
    if query:
        query = _norm_component(query, _QUERY_SAFE, _CLEAN_QUERY)
        if sort_query:
            query = "&".join(sorted(p for p in query.split("&") if p))
    return f"{scheme}://{userinfo + '@' if userinfo else ''}{nhost}{path}" + (f"?{query}" if query else "")


@functools.lru_cache(maxsize=1)
def _extractor():
    import tldextract

    # suffix_list_urls=() and no cache dir: the snapshot bundled with tldextract, never the network.
    # Private suffixes (github.io, blogspot.com) count: a.github.io and b.github.io are two sites.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)


@functools.lru_cache(maxsize=65536)
def registered_domain(host: str) -> str:
    """``"www.bbc.co.uk"`` -> ``"bbc.co.uk"``. IP addresses, ``localhost`` and hosts under no
    known public suffix come back as the (lowercased) host itself; a port is ignored."""
    host = (host or "").strip().lower().rstrip(".")
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if not host:
        return ""
    if "." not in host or _IPV4.match(host):  # localhost, IPv4: no need to load the suffix list
        return host
    r = _extractor()(host)
    if r.ipv4 or r.ipv6:
        return host
    top = getattr(r, "top_domain_under_public_suffix", None)
    if top is None:  # tldextract < 5.3
        top = f"{r.domain}.{r.suffix}" if r.domain and r.suffix else ""
    return top or host


def host_of(url: str) -> str:
    """The lowercased host of a normalised URL (no port, no userinfo)."""
    rest = url.split("://", 1)[-1]
    netloc = rest.split("/", 1)[0].rpartition("@")[2]
    if netloc.startswith("["):
        return netloc.split("]", 1)[0] + "]"
    return netloc.rsplit(":", 1)[0].lower()


def same_site(host: str, domains: frozenset[str] | set[str]) -> bool:
    """True when ``host`` is one of ``domains`` or a subdomain of one."""
    host = host.lower()
    if host in domains:
        return True
    return registered_domain(host) in domains or any(host.endswith("." + d) for d in domains)
