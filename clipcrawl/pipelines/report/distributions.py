"""Distributions for the stats report: languages, image sizes, CLIP and safety scores.

Each function runs GROUP BY queries over the ``s`` table (see :mod:`.sql`) and returns
histograms as ``{"edges", "all", "kept"}`` (bin edges; counts of all rows and of kept rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clipcrawl.pipelines.report.sql import clean, rows, scalar
from clipcrawl.schemas.status import Status

TOP_LANGUAGES = 15
SIZE_EDGES = [0, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192]
ASPECT_EDGES = [1 / 4, 1 / 3, 1 / 2, 2 / 3, 4 / 5, 0.95, 1.05, 5 / 4, 3 / 2, 2, 3, 4]


def _pct(n: int, base: int) -> float | None:
    return round(100.0 * n / base, 2) if base else None


def _summary(con, col: str, where: str = "TRUE") -> dict[str, Any]:
    r = con.execute(f"SELECT count({col}), avg({col}), quantile_cont({col}, [0.05, 0.5, 0.95]), min({col}), "
                    f"max({col}) FROM s WHERE {where}").fetchone()
    q = r[2] or [None, None, None]
    return {"n": int(r[0]), "mean": clean(r[1]), "p5": clean(q[0]), "median": clean(q[1]), "p95": clean(q[2]),
            "min": clean(r[3]), "max": clean(r[4])}


def languages(con) -> dict[str, Any]:
    got = rows(con, f"SELECT coalesce(lang, 'unknown'), count(*), count(*) FILTER (WHERE status = '{Status.SUCCESS}')"
                    " FROM s GROUP BY 1 ORDER BY 2 DESC")
    top = [{"language": lang, "count": int(n), "kept": int(k)} for lang, n, k in got[:TOP_LANGUAGES]]
    rest = got[TOP_LANGUAGES:]
    if rest:
        top.append({"language": f"(other: {len(rest)})", "count": sum(int(r[1]) for r in rest),
                    "kept": sum(int(r[2]) for r in rest)})
    return {"distinct": len(got), "top": top}


def _binned(values: list[tuple[float, int, int]], edges: list[float]) -> dict[str, Any]:
    """Bin grouped (value, count, kept) rows with ``edges`` (first/last bins are open-ended)."""
    if not values:
        return {"edges": edges, "all": [0] * (len(edges) - 1), "kept": [0] * (len(edges) - 1)}
    v = np.array([float(r[0]) for r in values])
    idx = np.clip(np.searchsorted(np.asarray(edges), v, side="right") - 1, 0, len(edges) - 2)
    all_ = np.bincount(idx, weights=[r[1] for r in values], minlength=len(edges) - 1)
    kept = np.bincount(idx, weights=[r[2] for r in values], minlength=len(edges) - 1)
    return {"edges": [clean(e) for e in edges], "all": [int(x) for x in all_], "kept": [int(x) for x in kept]}


def images(con) -> dict[str, Any]:
    k = f"count(*) FILTER (WHERE status = '{Status.SUCCESS}')"
    w = rows(con, f"SELECT ow, count(*), {k} FROM s WHERE ow IS NOT NULL GROUP BY ow")
    h = rows(con, f"SELECT oh, count(*), {k} FROM s WHERE oh IS NOT NULL GROUP BY oh")
    a = rows(con, f"SELECT round(ow / oh, 3), count(*), {k} FROM s WHERE ow > 0 AND oh > 0 GROUP BY 1")
    return {
        "n": scalar(con, "SELECT count(*) FROM s WHERE ow IS NOT NULL AND oh IS NOT NULL"),
        "width": _binned(w, SIZE_EDGES), "height": _binned(h, SIZE_EDGES),
        "aspect": _binned(a, [0.0, *ASPECT_EDGES]),
        "width_summary": _summary(con, "ow"), "height_summary": _summary(con, "oh"),
    }


def clip(con, threshold: float | None) -> dict[str, Any]:
    summ = _summary(con, "clip")
    out: dict[str, Any] = {"summary": summ, "threshold": threshold,
                           "summary_kept": _summary(con, "clip", f"status = '{Status.SUCCESS}'")}
    if not summ["n"]:
        return out
    lo, hi = float(summ["min"]), float(summ["max"])
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    width = max((hi - lo) / 50, 1e-3)
    edges = [lo + i * width for i in range(51)]
    got = rows(con, f"""SELECT round(clip, 4), count(*) FILTER (WHERE status = '{Status.SUCCESS}'),
                                count(*) FILTER (WHERE status = '{Status.FILTERED_CLIP}'),
                                count(*) FILTER (WHERE status NOT IN ('{Status.SUCCESS}', '{Status.FILTERED_CLIP}'))
                         FROM s WHERE clip IS NOT NULL GROUP BY 1""")
    series = {}
    for j, name in enumerate(("kept", "filtered_clip", "other")):
        series[name] = _binned([(r[0], r[j + 1], 0) for r in got], edges)["all"]
    out["hist"] = {"edges": [round(e, 5) for e in edges], **series}
    if threshold is not None:
        out["below_threshold"] = scalar(con, "SELECT count(*) FROM s WHERE clip < ?", [threshold])
        out["kept_below_threshold"] = scalar(
            con, f"SELECT count(*) FROM s WHERE clip < ? AND status = '{Status.SUCCESS}'", [threshold])
    return out


def scores(con, columns: list[str]) -> dict[str, Any]:
    """Further CLIP scores (clip_sigmoid, a second model's clip_similarity_<name> ...): summaries of
    all rows and of the kept ones, and a 20-bin histogram over the observed range."""
    out: dict[str, Any] = {}
    for col in columns:
        summ = _summary(con, col)
        d: dict[str, Any] = {"summary": summ, "summary_kept": _summary(con, col, f"status = '{Status.SUCCESS}'")}
        if summ["n"]:
            lo, hi = float(summ["min"]), float(summ["max"])
            width = max((hi - lo) / 20, 1e-3)
            edges = [lo + i * width for i in range(21)]
            got = rows(con, f"SELECT round({col}, 4), count(*), count(*) FILTER (WHERE status = '{Status.SUCCESS}') "
                            f"FROM s WHERE {col} IS NOT NULL GROUP BY 1")
            d["hist"] = _binned([(r[0], r[1], r[2]) for r in got], [round(e, 5) for e in edges])
        out[col] = d
    return out


def rate(con, col: str) -> dict[str, Any]:
    r = con.execute(f"""SELECT count({col}), avg({col}), count(*) FILTER (WHERE {col} > 0.5),
                               count({col}) FILTER (WHERE status = '{Status.SUCCESS}'),
                               avg({col}) FILTER (WHERE status = '{Status.SUCCESS}'),
                               count(*) FILTER (WHERE {col} > 0.5 AND status = '{Status.SUCCESS}') FROM s""").fetchone()
    n, mean, above, nk, mean_k, above_k = r
    return {"n": int(n), "mean": clean(mean), "above_0_5": int(above), "above_0_5_pct": _pct(above, n),
            "kept_n": int(nk), "kept_mean": clean(mean_k), "kept_above_0_5": int(above_k),
            "kept_above_0_5_pct": _pct(above_k, nk)}
