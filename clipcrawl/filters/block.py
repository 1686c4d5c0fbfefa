"""Blocklist stages (rules in :mod:`clipcrawl.crawler.blocklist`): status ``blocked``, the rule in the reason.

* :class:`BlockUrls` runs **before** the download: rows whose ``url`` (or ``page_url``) matches a URL or
  ``domain:`` rule are never requested.
* :class:`BlockHashes` runs **after** it: rows whose downloaded bytes' ``sha256`` (or an ``md5`` column,
  when the table has one) match a hash rule lose their image. The downloader's Fetcher also checks the
  hash rules on every body as it arrives (both digests), so ``md5:`` rules need no column there.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from clipcrawl.base.stage import Stage, mark, ok_mask, set_column
from clipcrawl.crawler.blocklist import Blocklist
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN


class _BlockStage(Stage):
    _transient = ("_list",)

    def __init__(self, paths: Sequence[str] = (), blocklist: Blocklist | None = None) -> None:
        self.paths = list(paths)
        self._list = blocklist

    def setup(self) -> None:
        if self._list is None:
            self._list = Blocklist.load(self.paths)

    @property
    def blocklist(self) -> Blocklist:
        if self._list is None:
            self.setup()
        assert self._list is not None
        return self._list


class BlockUrls(_BlockStage):
    """``url`` or ``page_url`` matched by a URL or ``domain:`` rule -> ``blocked`` (before any request)."""

    name = "blocklist"

    def process(self, table: pa.Table) -> pa.Table:
        bl = self.blocklist
        if not bl.has_url_rules or table.num_rows == 0:
            return table
        ok = ok_mask(table)
        urls = table.column("url").to_pylist()
        pages = table.column("page_url").to_pylist() if "page_url" in table.column_names else [None] * len(urls)
        reasons: list[str | None] = [None] * len(urls)
        for i, (u, p) in enumerate(zip(urls, pages)):
            if ok[i]:
                r = bl.match_url(u)
                if r is None and p:
                    r = bl.match_url(p)
                    r = f"page {r}" if r else None
                reasons[i] = r
        return mark(table, [r is not None for r in reasons], Status.BLOCKED, self.name, reasons)


class BlockHashes(_BlockStage):
    """Downloaded bytes whose ``sha256`` (or ``md5``) is listed -> ``blocked``; their image is dropped."""

    name = "blocklist"

    def process(self, table: pa.Table) -> pa.Table:
        bl = self.blocklist
        if not bl.has_hash_rules or table.num_rows == 0:
            return table
        n = table.num_rows
        sha = table.column("sha256").to_pylist() if "sha256" in table.column_names else [None] * n
        md5 = table.column("md5").to_pylist() if "md5" in table.column_names else [None] * n
        reasons = [bl.match_digest(s, m) for s, m in zip(sha, md5)]
        hit = [r is not None for r in reasons]
        out = mark(table, hit, Status.BLOCKED, self.name, reasons)
        if IMAGE_COLUMN in out.column_names and any(hit):
            images = out.column(IMAGE_COLUMN).to_pylist()
            status = out.column("status").to_pylist()
            images = [None if s == Status.BLOCKED.value else img for s, img in zip(status, images)]
            out = set_column(out, IMAGE_COLUMN, pa.array(images, pa.binary()))
        return out
