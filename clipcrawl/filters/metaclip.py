"""MetaCLIP balancing (Xu et al. 2023, "Demystifying CLIP Data", arXiv:2309.16671).

1. **Match**: a caption matches an entry when the entry is a substring of the lowercased,
   whitespace-collapsed caption (MetaCLIP's ``substr_matching``; plain substrings, so "cat"
   also matches "category", as there). Entries: one per line of a user file, or the small list
   shipped in ``clipcrawl/assets/metaclip/`` (provenance in its PROVENANCE.md). With
   ``pyahocorasick`` installed, matching uses an Aho-Corasick automaton (needed for MetaCLIP's
   500k entries); otherwise a loop over entries.
2. **Count** matches per entry over the whole dataset (rows still ``success``).
3. **Sample**: keep a pair with probability ``min(1, t / count of its rarest matched entry)``;
   pairs that match nothing are dropped (MetaCLIP) unless ``keep_unmatched``. The uniform draw
   of a pair is a hash of ``(seed, key)``, so the kept set does not depend on shard order or
   count: the same seed gives the same dataset.

Dropped rows get ``filtered_balance`` with ``"balance: <reason>"``. :func:`apply_balance`
returns the tables and a report: per entry, matches before and after. It first undoes its own
earlier decisions (``filtered_balance`` rows go back to ``success``), so it can be re-applied
with another ``t`` or entry list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa

from clipcrawl.base.stage import mark, ok_mask, set_column
from clipcrawl.schemas.components import BalanceConfig
from clipcrawl.schemas.status import Status

STAGE = "balance"


def load_entries(path: str | None = None) -> list[str]:
    """Entries of ``path`` (one per line; blank lines and ``#`` comments skipped), or the shipped list."""
    if path is None:
        text = resources.files("clipcrawl.assets").joinpath("metaclip/entries.txt").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    out: dict[str, None] = {}
    for line in text.splitlines():
        e = " ".join(line.lower().split())
        if e and not e.startswith("#"):
            out[e] = None
    return list(out)


class Matcher:
    """Entry ids whose text occurs in a caption."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.entries = list(entries)
        try:
            import ahocorasick

            self._auto = ahocorasick.Automaton()
            for i, e in enumerate(self.entries):
                self._auto.add_word(e, i)
            self._auto.make_automaton()
        except ImportError:
            self._auto = None

    def match(self, caption: str | None) -> list[int]:
        if not caption:
            return []
        text = " ".join(caption.lower().split())
        if self._auto is not None:
            return sorted({i for _, i in self._auto.iter(text)})
        return [i for i, e in enumerate(self.entries) if e in text]


def reset_balance(table: pa.Table) -> pa.Table:
    """Undo an earlier balancing: ``filtered_balance`` rows go back to ``success``."""
    if table.num_rows == 0 or Status.FILTERED_BALANCE.value not in table.column("status").to_pylist():
        return table
    st = table.column("status").to_pylist()
    em = table.column("error_message").to_pylist()
    for i, s in enumerate(st):
        if s == Status.FILTERED_BALANCE.value:
            st[i], em[i] = Status.SUCCESS.value, None
    table = set_column(table, "status", pa.array(st, pa.string()))
    return set_column(table, "error_message", pa.array(em, pa.string()))


def _uniform(seed: int, key: str) -> float:
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


@dataclass
class BalanceReport:
    entries: list[str]
    before: np.ndarray  # matches per entry before balancing
    after: np.ndarray
    t: int
    rows_before: int = 0
    rows_after: int = 0
    unmatched: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def top(self, n: int = 20) -> list[tuple[str, int, int]]:
        order = np.argsort(-self.before, kind="stable")[:n]
        return [(self.entries[i], int(self.before[i]), int(self.after[i])) for i in order if self.before[i]]


def apply_balance(tables: Sequence[pa.Table], cfg: BalanceConfig,
                  entries: Sequence[str] | None = None) -> tuple[list[pa.Table], BalanceReport]:
    """Balance a whole dataset (one table per shard); see the module doc."""
    matcher = Matcher(entries if entries is not None else load_entries(cfg.entries))
    tables = [reset_balance(t) for t in tables]
    n_e = len(matcher.entries)
    matches: list[list[list[int]]] = []
    before = np.zeros(n_e, dtype=np.int64)
    for t in tables:
        ok = ok_mask(t)
        caps = t.column("caption").to_pylist() if t.num_rows else []
        m = [matcher.match(c) if keep else [] for c, keep in zip(caps, ok)]
        for ids in m:
            before[ids] += 1
        matches.append(m)
    report = BalanceReport(matcher.entries, before, np.zeros(n_e, dtype=np.int64), cfg.t)
    out = []
    for t, m in zip(tables, matches):
        ok = ok_mask(t)
        keys = t.column("key").to_pylist() if t.num_rows else []
        reasons: list[str | None] = []
        for key, ids, keep in zip(keys, m, ok):
            r = None
            if keep:
                report.rows_before += 1
                if not ids:
                    report.unmatched += 1
                    r = None if cfg.keep_unmatched else "caption matches no metadata entry"
                else:
                    rare = min(ids, key=lambda i: before[i])
                    p = min(1.0, cfg.t / before[rare])
                    if _uniform(cfg.seed, key) >= p:
                        r = f"sampled out: rarest entry {matcher.entries[rare]!r} has {before[rare]} matches, p={p:.4g}"
                    else:
                        report.after[ids] += 1
                if r is None:
                    report.rows_after += 1
                else:
                    k = r.split(":")[0]
                    report.dropped[k] = report.dropped.get(k, 0) + 1
            reasons.append(r)
        drop = np.array([r is not None for r in reasons], dtype=bool)
        out.append(mark(t, drop, Status.FILTERED_BALANCE, STAGE, reasons) if t.num_rows else t)
    return out, report
