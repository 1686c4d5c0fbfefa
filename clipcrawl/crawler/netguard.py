"""Refuse private, loopback, link-local, multicast and reserved addresses (SSRF guard).

The check runs after DNS resolution, inside the resolver aiohttp uses to connect, so a
hostname that resolves to 10.0.0.1 (or flips to it: DNS rebinding) is refused at connect time;
literal-IP URLs, which aiohttp never sends to a resolver, are checked by :func:`check_url`.
The fetcher follows redirects itself and calls :func:`check_url` on every hop.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from yarl import URL

ALLOWED_SCHEMES = frozenset({"http", "https"})


class BlockedAddressError(OSError):
    """A host resolved only to addresses the guard refuses."""


def blocked_message(reason: object) -> str:
    """``"blocked: <reason>"`` with the prefix exactly once, however many layers (resolver,
    robots.txt fetch, page fetch) pass the refusal along."""
    text = str(reason)
    while text.startswith("blocked: "):
        text = text[len("blocked: "):]
    return f"blocked: {text}"


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_networks(cidrs: tuple[str, ...] | list[str]) -> Networks:
    """``["127.0.0.0/8", "10.1.0.0/16"]`` -> network objects (an allowlist of exceptions)."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def address_allowed(ip: str, allowed_networks: Networks = ()) -> bool:
    """True for globally routable unicast addresses, or addresses inside ``allowed_networks``."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr in net for net in allowed_networks):
        return True
    return bool(
        addr.is_global
        and not (
            addr.is_private
            or addr.is_loopback
            or addr.is_link_local
            or addr.is_multicast
            or addr.is_reserved
            or addr.is_unspecified
        )
    )


def check_url(url: str | URL, allow_private: bool = False, allowed_networks: Networks = ()) -> str | None:
    """Reason to refuse ``url`` before connecting, or None. Checks scheme and literal IPs."""
    u = url if isinstance(url, URL) else URL(url)
    if u.scheme.lower() not in ALLOWED_SCHEMES:
        return f"unsupported scheme {u.scheme!r} (only http/https)"
    host = u.raw_host
    if not host:
        return "URL has no host"
    if not allow_private:
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None  # a name: the resolver checks what it resolves to
        if not address_allowed(host.strip("[]"), allowed_networks):
            return f"address {host} is not public (private, loopback, link-local, multicast or reserved)"
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops non-public addresses unless ``allow_private``."""

    def __init__(self, allow_private: bool = False, resolver: AbstractResolver | None = None,
                 allowed_networks: Networks = ()) -> None:
        self.allow_private = allow_private
        self.allowed_networks = allowed_networks
        self._resolver = resolver or DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        infos = await self._resolver.resolve(host, port, family)
        if self.allow_private:
            return infos
        good = [i for i in infos if address_allowed(i["host"], self.allowed_networks)]
        if not good:
            bad = ", ".join(sorted({i["host"] for i in infos}))
            raise BlockedAddressError(f"{host} resolves to non-public address {bad}")
        return good

    async def close(self) -> None:
        await self._resolver.close()
