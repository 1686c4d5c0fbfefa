"""The curation signals in the stats report: a distribution per signal column (all rows and kept ones) and
the files/packages that produced them (``signal_sources``, :mod:`clipcrawl.filters.signals`)."""

from __future__ import annotations

from typing import Any

from clipcrawl.pipelines.report.sql import clean, rows
from clipcrawl.schemas.status import Status

#: column -> (title, fixed histogram range or None for the column's min..max)
SIGNAL_COLUMNS: dict[str, tuple[str, tuple[float, float] | None]] = {
    "aesthetic": ("aesthetic (LAION predictor rating)", None),
    "text_area": ("text_area (fraction of the image)", (0.0, 1.0)),
    "caption_ocr_overlap": ("caption_ocr_overlap (caption words read in the image)", (0.0, 1.0)),
    "nsfw_score": ("nsfw_score (NudeNet, explicit classes)", (0.0, 1.0)),
}
BINS = 20


def select_columns(have: set[str]) -> str:
    """The report table's signal columns (NULL where the files have none)."""
    out = [f"CAST({c} AS DOUBLE) AS sig_{c}" if c in have else f"CAST(NULL AS DOUBLE) AS sig_{c}"
           for c in SIGNAL_COLUMNS]
    out.append("CAST(signal_sources AS VARCHAR) AS signal_sources" if "signal_sources" in have
               else "CAST(NULL AS VARCHAR) AS signal_sources")
    return ",\n        ".join(out)


def signals(con) -> dict[str, Any]:
    """{column: {n, mean, p5, median, p95, min, max, kept_n, kept_mean, hist}} for the computed ones, and
    ``sources``: the distinct ``signal_sources`` values."""
    out: dict[str, Any] = {}
    ok = f"status = '{Status.SUCCESS}'"
    for col, (title, fixed) in SIGNAL_COLUMNS.items():
        c = f"sig_{col}"
        r = con.execute(f"""SELECT count({c}), avg({c}), quantile_cont({c}, [0.05, 0.5, 0.95]), min({c}), max({c}),
                                   count({c}) FILTER (WHERE {ok}), avg({c}) FILTER (WHERE {ok}) FROM s""").fetchone()
        if not r[0]:
            continue
        q = r[2] or [None, None, None]
        lo, hi = fixed if fixed else (float(r[3]), float(r[4]))
        width = max((hi - lo) / BINS, 1e-6)
        edges = [lo + i * width for i in range(BINS + 1)]
        all_, kept = [0] * BINS, [0] * BINS
        for v, n_all, n_kept in rows(con, f"""SELECT least(greatest(floor(({c} - ?) / ?), 0), {BINS - 1}),
                                                     count(*), count(*) FILTER (WHERE {ok})
                                              FROM s WHERE {c} IS NOT NULL GROUP BY 1""", [lo, width]):
            all_[int(v)] += int(n_all)
            kept[int(v)] += int(n_kept)
        out[col] = {"title": title, "n": int(r[0]), "mean": clean(r[1]), "p5": clean(q[0]), "median": clean(q[1]),
                    "p95": clean(q[2]), "min": clean(r[3]), "max": clean(r[4]), "kept_n": int(r[5]),
                    "kept_mean": clean(r[6]),
                    "hist": {"edges": [round(e, 5) for e in edges], "all": all_, "kept": kept}}
    if out:
        out["sources"] = [s for (s,) in rows(con, "SELECT DISTINCT signal_sources FROM s "
                                                  "WHERE signal_sources IS NOT NULL ORDER BY 1")]
    return out
