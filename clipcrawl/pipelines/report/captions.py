"""Caption length (characters) and word count distributions, measured with pyarrow.compute.

Words are whitespace-separated tokens (``utf8_split_whitespace``, as Python's ``str.split()``).
Files are read one at a time (``caption`` and ``status`` columns only) in a small thread pool
(pyarrow releases the GIL); per-file exact value counts are summed, so the histograms and the
quantiles (linear interpolation, as pandas and DuckDB's quantile_cont) are exact.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from clipcrawl.schemas.status import Status

CHAR_BIN, CHAR_MAX = 10, 300
WORD_MAX = 40
_CAP = 100_000  # longer captions count as this many characters in the exact counts


def _measure(path: str, fs=None) -> tuple[np.ndarray, ...] | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from clipcrawl.base.storage import fs_and_path

    if fs is not None:
        path = fs_and_path(path)[1]
    pf = pq.ParquetFile(path, filesystem=fs)
    names = set(pf.schema_arrow.names)
    if "caption" not in names:
        return None
    t = pf.read(columns=["caption", "status"] if "status" in names else ["caption"])
    cap = t.column("caption")
    valid = pc.is_valid(cap).to_numpy(zero_copy_only=False)
    chars = np.minimum(pc.fill_null(pc.utf8_length(cap), 0).to_numpy(zero_copy_only=False), _CAP)
    words = np.minimum(pc.fill_null(pc.list_value_length(pc.utf8_split_whitespace(cap)), 0)
                       .to_numpy(zero_copy_only=False), _CAP)
    if "status" in names:
        kept = pc.fill_null(pc.equal(t.column("status"), Status.SUCCESS.value), False).to_numpy(zero_copy_only=False)
    else:
        kept = np.ones(len(chars), dtype=bool)
    out = []
    for values in (chars, words):
        out.append(np.bincount(values[valid], minlength=1))
        out.append(np.bincount(values[valid & kept], minlength=1))
    out.append(np.array([int((~valid).sum())]))
    return tuple(out)


def _add(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    if a is None:
        return b.astype(np.int64)
    n = max(len(a), len(b))
    return np.pad(a, (0, n - len(a))) + np.pad(b, (0, n - len(b)))


def summary(counts: np.ndarray | None) -> dict[str, Any]:
    """n, mean, p5/median/p95 (linear interpolation), min, max of integer values given their counts."""
    if counts is None or not counts.sum():
        return {"n": 0, "mean": None, "p5": None, "median": None, "p95": None, "min": None, "max": None}
    n = int(counts.sum())
    values = np.arange(len(counts))
    cum = np.cumsum(counts)

    def at(rank: int) -> int:  # value of the rank-th smallest (0-based)
        return int(np.searchsorted(cum, rank, side="right"))

    def q(p: float) -> float:
        pos = p * (n - 1)
        lo, frac = int(np.floor(pos)), pos - np.floor(pos)
        return float(at(lo) + (at(lo + 1) - at(lo)) * frac) if frac else float(at(lo))

    nz = np.flatnonzero(counts)
    return {"n": n, "mean": float((values * counts).sum() / n), "p5": q(0.05), "median": q(0.5), "p95": q(0.95),
            "min": int(nz[0]), "max": int(nz[-1])}


def _binned(counts: np.ndarray | None, width: int, last: int) -> list[int]:
    """Counts per bin of ``width`` for values 0.., the last bin (index ``last``) open-ended."""
    out = [0] * (last + 1)
    if counts is None:
        return out
    for v in np.flatnonzero(counts):
        out[min(int(v) // width, last)] += int(counts[v])
    return out


def captions(files: list[str], threads: int | None = None, fs=None) -> dict[str, Any]:
    """Caption measures of the Parquet ``files`` (URLs on the fsspec filesystem ``fs``, default local)."""
    acc: list[np.ndarray | None] = [None] * 4
    missing = 0
    with ThreadPoolExecutor(max_workers=threads or 4) as ex:
        for res in ex.map(partial(_measure, fs=fs), files):
            if res is None:
                continue
            for i in range(4):
                acc[i] = _add(acc[i], res[i])
            missing += int(res[4][0])
    chars_all, chars_kept, words_all, words_kept = acc
    nb = CHAR_MAX // CHAR_BIN
    return {
        "missing": missing,
        "chars": {"edges": [i * CHAR_BIN for i in range(nb + 2)], "overflow_last": True,
                  "all": _binned(chars_all, CHAR_BIN, nb), "kept": _binned(chars_kept, CHAR_BIN, nb)},
        "words": {"edges": list(range(WORD_MAX + 2)), "overflow_last": True,
                  "all": _binned(words_all, 1, WORD_MAX), "kept": _binned(words_kept, 1, WORD_MAX)},
        "chars_summary": summary(chars_all),
        "words_summary": summary(words_all),
        "chars_summary_kept": summary(chars_kept),
    }
