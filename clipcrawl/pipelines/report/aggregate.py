"""Every number of the stats report, computed from the Parquet files with DuckDB.

:func:`aggregate` returns a plain JSON-serialisable dict (``clipcrawl stats --json`` prints it);
the terminal and HTML renderers only format it. Run/throughput history is in
:mod:`.history`, sample grids in :mod:`.samples`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from clipcrawl.pipelines.report import distributions as dist
from clipcrawl.pipelines.report import history
from clipcrawl.pipelines.report.captions import captions
from clipcrawl.pipelines.report.check import readable_parquet
from clipcrawl.pipelines.report.layout import DatasetParts, clip_threshold
from clipcrawl.pipelines.report.sql import (
    NORMALISE_ERROR,
    connect,
    count_rows,
    files_sql,
    group_counts,
    host_of,
    load_samples,
    rows,
    scalar,
    score_columns,
)
from clipcrawl.schemas.status import Status

#: Drop statuses in pipeline order, with the name of the funnel step their survivors reach.
FUNNEL_STEPS: tuple[tuple[str, str], ...] = (
    (Status.BLOCKED.value, "not blocklisted"),
    (Status.FAILED_TO_DOWNLOAD.value, "downloaded"),
    (Status.FAILED_TO_RESIZE.value, "decoded + resized"),
    (Status.FILTERED_TEXT.value, "passed text rules"),
    (Status.FILTERED_IMAGE.value, "passed image rules"),
    (Status.FAILED_TO_SCORE.value, "scored by CLIP"),
    (Status.FILTERED_CLIP.value, "passed CLIP threshold"),
    (Status.DUPLICATE.value, "after dedup"),
    (Status.FILTERED_BALANCE.value, "after MetaCLIP balancing"),
)
_SHOWN_IF_ANY = (Status.FILTERED_TEXT, Status.BLOCKED, Status.FILTERED_IMAGE, Status.DUPLICATE, Status.FILTERED_BALANCE)
MAX_CAUSES = 12  # per status; the rest is summed into "(other causes)"
TOP_DOMAINS = 20


def _pct(n: int, base: int) -> float | None:
    return round(100.0 * n / base, 2) if base else None


def aggregate(parts: DatasetParts, threshold: float | None = None, threads: int | None = None) -> dict[str, Any]:
    """The report's numbers. ``threshold`` overrides the config's ``filters.clip.threshold``.

    Files that cannot be read are left out and listed in ``unreadable`` (``parts.unreadable``)."""
    thr_src = "--threshold" if threshold is not None else None
    if threshold is None:
        threshold, thr_src = clip_threshold(parts)
    con = connect(threads, parts.fs)
    have: set[str] = set()
    if parts.sample_files:
        have, bad = load_samples(con, list(parts.sample_files))
        for f, err in bad.items():
            parts.mark_unreadable(f, f"not a readable Parquet file ({err})")
    readable_parquet(con, parts, list(parts.page_files))
    readable_parquet(con, parts, list(parts.pair_files))
    if threshold is None and "error_message" in have:
        threshold, thr_src = _applied_threshold(con)
    out: dict[str, Any] = {"dataset": parts.describe(), "threshold": threshold, "threshold_source": thr_src}
    out["pages"] = _pages(con, parts)
    out["pairs"] = _pairs(con, parts)
    if parts.sample_files:
        out["columns_missing"] = sorted(
            c for c in ("clip_similarity", "punsafe", "pwatermark", "dedup_method", "page_language", "run")
            if c not in have
        )
        out["statuses"] = group_counts(con, "s", "status")
        out["funnel"] = _funnel(con, out)
        out["causes"] = _causes(con)
        out["domains"] = _domains(con)
        out["captions"] = captions(parts.sample_files, threads, parts.fs)
        out["languages"] = dist.languages(con)
        out["images"] = dist.images(con)
        out["clip"] = dist.clip(con, threshold)
        out["clip_scores"] = dist.scores(con, score_columns(have))
        out["safety"] = {name: dist.rate(con, name) for name in ("punsafe", "pwatermark")}
        from clipcrawl.pipelines.report.signals import signals

        out["signals"] = signals(con)  # text_area, caption_ocr_overlap, nsfw_score, aesthetic + their sources
        out["dedup"] = group_counts(con, "s", "coalesce(dedup_method, 'unknown')", f"status = '{Status.DUPLICATE}'")
        out["shards"] = {k: v for k, v in sorted(group_counts(con, "s", "shard").items())}
        out["by_run"] = _by_run(con)
        out["provenance"] = _provenance(con, have)
    else:
        out["funnel"] = _funnel(con, out)
    out["curation"] = _curation(parts)
    out["throughput"] = history.throughput(parts)
    out["runs"] = history.runs(parts, out.get("by_run", {}))
    out["manifest"] = history.manifest(parts)
    out["unreadable"] = parts.unreadable
    con.close()
    return out


def _curation(parts: DatasetParts) -> dict[str, Any] | None:
    """``curation.json`` of the last dataset-wide curation (clipcrawl.pipelines.passes.curate): preset, rules,
    drops per rule, MetaCLIP entry distribution before/after."""
    from clipcrawl.base.storage import exists, read_json

    for folder in dict.fromkeys(f for f in (parts.root, parts.shard_dir) if f is not None):
        url = f"{folder.rstrip('/')}/curation.json"
        if exists(url):
            try:
                data = read_json(url)
            except (OSError, ValueError):
                continue
            return data if isinstance(data, dict) else None
    return None


def _pages(con, parts: DatasetParts) -> dict[str, Any] | None:
    if not parts.page_files:
        return None
    src = files_sql(parts.page_files)
    by_status = group_counts(con, src, "status")
    causes = rows(con, f"""SELECT status, {NORMALISE_ERROR.format(col="m")} AS c, sum(n)
                           FROM (SELECT status, error_message AS m, count(*) AS n FROM {src}
                                 WHERE status <> 'ok' GROUP BY 1, 2)
                           GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 30""")
    return {
        "total": count_rows(con, parts.page_files),
        "by_status": by_status,
        "causes": [{"status": s, "cause": c or "(no message)", "count": int(n)} for s, c, n in causes],
    }


def _pairs(con, parts: DatasetParts) -> dict[str, Any] | None:
    if not parts.pair_files:
        return None
    src = files_sql(parts.pair_files)
    return {
        "total": count_rows(con, parts.pair_files),
        "by_caption_source": group_counts(con, src, "caption_source"),
    }


def _funnel(con, out: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    if out.get("pages"):
        ok = out["pages"]["by_status"].get("ok", 0)
        steps.append({"step": "pages crawled", "count": out["pages"]["total"], "pct": None, "note": f"{ok} ok"})
    if out.get("pairs"):
        steps.append({"step": "pairs found", "count": out["pairs"]["total"], "pct": None})
    if "statuses" not in out:  # no shard Parquet files
        return steps
    statuses: dict[str, int] = out["statuses"]
    total = sum(statuses.values())
    pairs = out["pairs"]["total"] if out.get("pairs") else None
    steps.append({"step": "samples", "count": total, "pct": 100.0,
                  "note": f"{_pct(total, pairs)}% of pairs" if pairs else None})
    order = list(FUNNEL_STEPS)
    # Text rules may run before the download: then no filtered_text row was ever fetched.
    n_text = statuses.get(Status.FILTERED_TEXT.value, 0)
    if n_text and not scalar(con, f"SELECT count(*) FROM s WHERE status = '{Status.FILTERED_TEXT}' AND fetched"):
        order.insert(0, order.pop([st for st, _ in order].index(Status.FILTERED_TEXT.value)))
    scored = scalar(con, "SELECT count(clip) FROM s")
    left = total
    for status, name in order:
        dropped = statuses.get(status, 0)
        if status in _SHOWN_IF_ANY and not dropped:
            continue
        if status in (Status.FAILED_TO_SCORE, Status.FILTERED_CLIP) and not (dropped or scored):
            continue
        prev = left
        left -= dropped
        steps.append({"step": name, "count": left, "pct": _pct(left, total), "dropped": dropped,
                      "status": status, "pct_prev": _pct(left, prev)})
    written = statuses.get(Status.SUCCESS.value, 0)
    other = total - sum(statuses.get(s, 0) for s, _ in FUNNEL_STEPS) - written
    steps.append({"step": "written", "count": written, "pct": _pct(written, total),
                  "note": f"{other} rows with unknown status" if other else None})
    return steps


def _applied_threshold(con) -> tuple[float | None, str | None]:
    """The threshold the rows record: ``clip_similarity x < T`` in the messages of ``filtered_clip`` rows
    (``clipcrawl score --threshold`` writes no config); the most common T when reruns left several."""
    got = rows(con, f"""SELECT t, count(*) AS n FROM (
                            SELECT regexp_extract(error_message, 'similarity [-+0-9.eE]+ < ([-+0-9.eE]+)', 1) AS t
                            FROM s WHERE status = '{Status.FILTERED_CLIP}')
                        WHERE t <> '' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""")
    for t, _ in got:
        try:
            return float(t), "filtered_clip rows"
        except ValueError:
            pass
    return None, None


def _causes(con) -> list[dict[str, Any]]:
    # normalise the distinct (status, message) pairs, not every row
    got = rows(con, f"""SELECT status, coalesce({NORMALISE_ERROR.format(col="m")}, '(no message)') AS cause, sum(n)
                        FROM (SELECT status, error_message AS m, count(*) AS n FROM s
                              WHERE status <> '{Status.SUCCESS}' GROUP BY 1, 2)
                        GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2""")
    total = scalar(con, "SELECT count(*) FROM s") or 1
    per: dict[str, list[tuple[str, int]]] = {}
    for status, cause, n in got:
        per.setdefault(status, []).append((cause, int(n)))
    out = []
    for status, items in per.items():
        keep, rest = items[:MAX_CAUSES], items[MAX_CAUSES:]
        if rest:
            keep.append((f"(other causes: {len(rest)})", sum(n for _, n in rest)))
        out += [{"status": status, "cause": c, "count": n, "pct": _pct(n, total)} for c, n in keep]
    return sorted(out, key=lambda r: -r["count"])


def _provenance(con, have: set[str]) -> dict[str, Any] | None:
    """Refusals by the image-level opt-outs (IPTC, C2PA, ai.txt, noml), AI-generated and licences of the kept
    (success) samples; None when the samples have no provenance columns (older datasets)."""
    from clipcrawl.filters.provenance import licence_breakdown, refusal_kind

    if "ai_generated" not in have:
        return None
    refused: dict[str, int] = {}
    for msg, n in rows(con, "SELECT error_message, count(*) FROM s WHERE status <> 'success' "
                            "AND error_message IS NOT NULL GROUP BY 1"):
        kind = refusal_kind(msg)
        if kind:
            refused[kind] = refused.get(kind, 0) + int(n)
    ok = f"status = '{Status.SUCCESS}'"
    lic = rows(con, f"SELECT license, count(*) FROM s WHERE {ok} GROUP BY 1") if "license" in have else []
    licences: dict[str, int] = {}
    for value, n in lic:
        for k, c in licence_breakdown([value]).items():
            licences[k] = licences.get(k, 0) + c * int(n)
    return {"refused": dict(sorted(refused.items(), key=lambda kv: -kv[1])),
            "ai_generated_kept": int(scalar(con, f"SELECT count(*) FROM s WHERE {ok} AND ai_generated") or 0),
            "c2pa_kept": int(scalar(con, f"SELECT count(*) FROM s WHERE {ok} AND c2pa_present") or 0)
            if "c2pa_present" in have else 0,
            "licences_kept": dict(sorted(licences.items(), key=lambda kv: -kv[1]))}


def _registered_domains(hosts: list[str]) -> dict[str, str]:
    """host -> registered domain (offline public-suffix snapshot); IPs and unknowns stay hosts."""
    try:
        import tldextract

        ex = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    except Exception:  # noqa: BLE001 - optional nicety; hosts are a fine fallback
        ex = None
    out = {}
    for h in hosts:
        d = ""
        if ex is not None and h:
            r = ex(h)
            d = getattr(r, "top_domain_under_public_suffix", None) or (f"{r.domain}.{r.suffix}" if r.suffix else "")
        out[h] = d or (h.removeprefix("www.") if h else "(no host)")
    return out


def _domains(con, max_lookups: int = 50_000) -> dict[str, Any]:
    got = rows(con, f"SELECT authority, count(*) AS n, count(*) FILTER (WHERE status = '{Status.SUCCESS}') "
                    "FROM s GROUP BY authority ORDER BY n DESC")
    hosts = [host_of(a) for a, _, _ in got]
    mapping = _registered_domains(list(dict.fromkeys(hosts[:max_lookups])))
    pairs: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    for h, (_, n, k) in zip(hosts, got):
        d = mapping.get(h) or (h or "(no host)").removeprefix("www.")
        pairs[d] += int(n)
        kept[d] += int(k)
    top = [{"domain": d, "pairs": n, "kept": kept[d], "kept_pct": _pct(kept[d], n)}
           for d, n in pairs.most_common(TOP_DOMAINS)]
    return {"distinct": len(pairs), "top": top}


def _by_run(con) -> dict[str, dict[str, int]]:
    got = rows(con, "SELECT run, status, count(*) FROM s GROUP BY 1, 2 ORDER BY 1, 2")
    out: dict[str, dict[str, int]] = {}
    for run, status, n in got:
        out.setdefault("unknown" if run is None else str(run), {})[status] = int(n)
    return out
