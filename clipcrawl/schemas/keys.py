"""Stable sample keys: the same (url, caption) gives the same key in every run and every tool.

The key is the tar ``__key__`` and the Parquet ``key``. It is 20 lowercase hex characters, so it
is always a safe tar member name (no separators, no dots, no ``..``) and webdataset groups
``<key>.jpg``/``<key>.txt``/``<key>.json`` correctly.
"""

from __future__ import annotations

import hashlib
import re

KEY_LENGTH = 20
_KEY_RE = re.compile(rf"^[0-9a-f]{{{KEY_LENGTH}}}$")


def sample_key(url: str, caption: str | None = None) -> str:
    """Key of an (image URL, caption) pair."""
    h = hashlib.blake2b(digest_size=KEY_LENGTH // 2)
    h.update(url.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update((caption or "").encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def is_valid_key(key: str) -> bool:
    return bool(_KEY_RE.match(key))


def shard_name(shard_id: int, digits: int = 5) -> str:
    """img2dataset's shard naming: zero-padded decimal (``00042``)."""
    return f"{shard_id:0{digits}d}"
