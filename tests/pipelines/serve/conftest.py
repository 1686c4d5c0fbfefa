"""Fixtures of the serve tests: the inspect tests' demo dataset (crawled, scored by the shipped tiny CLIP
with embeddings saved, indexed), and a ``post``/``get`` helper over urllib."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.pipelines.inspect.conftest import demo_dataset, indexed_demo  # noqa: F401 - the same fixtures


def call(url: str, body=None, host: str | None = None, headers: dict | None = None, method: str | None = None,
         raw: bytes | None = None):
    """(status, headers, parsed JSON or text) of one request; HTTP errors are returned, not raised."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = dict(headers or {})
    if host:
        h["Host"] = host
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, hdrs, payload = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, payload = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(payload)
    except ValueError:
        return status, hdrs, payload.decode("utf-8", "replace")
