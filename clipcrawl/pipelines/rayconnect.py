"""Which Ray cluster a process is connected to, and whether that is the one an engine was told to use.

Ray allows one connection per process. When it already exists (the caller's own ``ray.init``, a
notebook, an earlier pass) and the engine was given another cluster's address, :func:`check_connected`
raises :class:`~clipcrawl.schemas.config.ConfigError` naming both, before any shard runs. It does not
shut the connection down and reconnect: the connection is the caller's and other code may be using it.
Running the pass on a cluster nobody named would put its actors on other machines, with other
resources, possibly without the dataset's shared storage.
"""

from __future__ import annotations

import socket
from typing import Any

from clipcrawl.schemas.config import ConfigError


def check_connected(ray: Any, want: str | None) -> None:
    """``ray`` is initialized (checked by the caller: ``get_runtime_context()`` on an uninitialized Ray
    starts a local one). Raise when ``want`` (``host:port``) is another cluster than the connected one."""
    if not want or want in ("auto", "local") or "://" in want:  # nothing to compare (ray:// is a client)
        return
    try:
        have = str(ray.get_runtime_context().gcs_address)
    except Exception:  # noqa: BLE001 -- e.g. a Ray client connection: no GCS address to compare with
        return
    if not same_address(want, have):
        raise ConfigError(f"engine 'ray' was given the cluster {want} but this process is already connected to "
                          f"the Ray cluster at {have} (fix: ray.shutdown() before this pass, or pass {have} or "
                          f"no address to use the connected cluster)")


def _split(addr: str) -> tuple[str, str]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]").lower(), port


def _canonical(addr: str) -> str:
    """As Ray spells an address it connects to (``localhost`` -> this node's IP)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(addr) or addr
    except Exception:  # noqa: BLE001 -- a private Ray helper: best effort, the address as given otherwise
        return addr


def _ips(host: str) -> set[str]:
    try:
        return {str(i[4][0]) for i in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


def same_address(a: str, b: str) -> bool:
    """Whether two ``host:port`` GCS addresses name the same cluster: the same port, and the same host as
    written, as Ray canonicalizes it, or resolving to a common IP."""
    (ha, pa), (hb, pb) = _split(a), _split(b)
    if pa != pb:
        return False
    return ha == hb or _split(_canonical(a)) == _split(_canonical(b)) or bool(_ips(ha) & _ips(hb))
