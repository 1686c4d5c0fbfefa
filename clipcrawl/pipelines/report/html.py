"""The report as ONE self-contained HTML page: inline CSS, inline PNG plots, inline JPEG thumbnails.

Nothing in the page loads from the network: no scripts, fonts or stylesheets from elsewhere,
and sample URLs are shown as text, never as links or image sources.
"""

from __future__ import annotations

import html
from typing import Any

from clipcrawl.pipelines.report import plots

#: The page may load nothing: images are data: URIs, the style is inline, there are no scripts.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2731;background:#f6f7f9}
header{background:#264653;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.85;font-size:13px}
main{padding:8px 24px 40px;max-width:1400px}
section{background:#fff;border-radius:8px;margin:14px 0;padding:12px 16px;box-shadow:0 1px 2px #0001}
h2{font-size:16px;margin:4px 0 10px}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.row>div{flex:1 1 420px;min-width:0}
img.plot{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
th,td{padding:3px 10px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#6b7785;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.card{border:1px solid #e3e6ea;border-radius:6px;padding:6px;background:#fcfcfd;font-size:12px;overflow:hidden}
.card img,.card .noimg{width:160px;height:160px;object-fit:contain;display:block;margin:0 auto 4px;background:#eef0f2}
.card .noimg{display:flex;align-items:center;justify-content:center;color:#8d99ae;text-align:center}
.card .cap{font-weight:500;max-height:4.4em;overflow:hidden}
.card .url{color:#6b7785;word-break:break-all;max-height:3em;overflow:hidden}
.badge{display:inline-block;border-radius:3px;padding:0 4px;background:#e9ecef;font-size:11px}
.badge.success{background:#d8f3dc}.badge.filtered_clip{background:#fde2d9}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _num(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.3f}" if abs(x) < 10 else f"{x:,.1f}"
    return f"{x:,}" if isinstance(x, int) else _e(x)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x:.1f}%"


def table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f'<th class="{"n" if i in numeric else ""}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"n" if i in numeric else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plot(uri: str | None, alt: str) -> str:
    return f'<img class="plot" alt="{_e(alt)}" src="{uri}">' if uri else ""


def _section(title: str, *blocks: str, sid: str = "") -> str:
    inner = "".join(f"<div>{b}</div>" for b in blocks if b)
    if not inner:
        return ""
    return f'<section id="{_e(sid)}"><h2>{_e(title)}</h2><div class="row">{inner}</div></section>'


def _card(c: dict[str, Any]) -> str:
    if c.get("image"):
        img = f'<img alt="{_e(c["key"])}" src="{c["image"]}" title="{_e(c.get("image_from"))}">'
    else:
        img = '<div class="noimg">image not kept<br>(caption + URL only)</div>'
    score = c.get("clip_similarity")
    score_s = "–" if score is None else f"{score:.3f}"
    return (f'<div class="card">{img}<div class="cap">{_e(c.get("caption"))}</div>'
            f'<div><span class="badge {_e(c.get("status"))}">{_e(c.get("status"))}</span> clip {score_s} '
            f'<span class="muted">shard {_e(c.get("shard"))}</span></div>'
            f'<div class="url">{_e(c.get("url"))}</div></div>')


def _grid(title: str, cards: list[dict[str, Any]], note: str = "") -> str:
    if not cards:
        return ""
    inner = "".join(_card(c) for c in cards)
    return f'<section class="samples"><h2>{_e(title)}</h2><p class="muted">{_e(note)}</p>' \
           f'<div class="grid">{inner}</div></section>'


def _funnel_table(agg: dict[str, Any]) -> str:
    rows = [[_e(s["step"]), _num(s["count"]), _pct(s.get("pct")), _pct(s.get("pct_prev")),
             _num(s.get("dropped")) if s.get("dropped") is not None else "",
             _e(s.get("status") or s.get("note") or "")] for s in agg.get("funnel", [])]
    return table(["step", "count", "% of samples", "% of previous", "dropped", "status / note"], rows, {1, 2, 3, 4})


def _overview(agg: dict[str, Any]) -> str:
    ds, thr = agg.get("dataset", {}), agg.get("threshold")
    items = [("shard Parquet files", ds.get("sample_files")), ("shard tars", ds.get("tar_files")),
             ("dropped/ tars", ds.get("dropped_tars")), ("crawl page files", ds.get("page_files")),
             ("crawl pair files", ds.get("pair_files")), ("runs", ds.get("runs")),
             ("CLIP threshold", f"{thr:g} ({agg.get('threshold_source')})" if thr is not None else "unknown"),
             ("columns absent", ", ".join(agg.get("columns_missing") or []) or "none")]
    return table(["part", "value"], [[_e(k), _num(v) if not isinstance(v, str) else _e(v)] for k, v in items])


def render(agg: dict[str, Any], samples: dict[str, list[dict[str, Any]]] | None = None,
           title: str = "clipcrawl dataset report") -> str:
    """The full page as a string."""
    samples = samples or {}
    cap, img, clip, dom = (agg.get(k) or {} for k in ("captions", "images", "clip", "domains"))
    parts: list[str] = []
    bad = agg.get("unreadable") or []
    if bad:
        parts.append(_section("Unreadable files (left out of the numbers)", table(
            ["file", "error"], [[_e(u["file"]), _e(u["error"])] for u in bad]), sid="unreadable"))
    parts.append(_section("Funnel", _plot(plots.funnel(agg.get("funnel", [])), "funnel"), _funnel_table(agg),
                          sid="funnel"))
    causes = agg.get("causes") or []
    page_causes = (agg.get("pages") or {}).get("causes") or []
    parts.append(_section(
        "Errors and drops by cause", _plot(plots.causes(causes), "drops by cause"),
        table(["status", "cause (normalised)", "count", "%"],
              [[_e(c["status"]), _e(c["cause"]), _num(c["count"]), _pct(c["pct"])] for c in causes], {2, 3})
        if causes else "",
        table(["page status", "cause", "count"],
              [[_e(c["status"]), _e(c["cause"]), _num(c["count"])] for c in page_causes], {2}) if page_causes else "",
        sid="causes"))
    if dom.get("top"):
        parts.append(_section(
            f"Top domains ({dom['distinct']:,} distinct)", _plot(plots.domains(dom), "top domains"),
            table(["domain", "pairs", "kept", "kept %"],
                  [[_e(d["domain"]), _num(d["pairs"]), _num(d["kept"]), _pct(d["kept_pct"])] for d in dom["top"]],
                  {1, 2, 3}), sid="domains"))
    if cap:
        parts.append(_section("Captions", _plot(plots.histograms([
            (cap["chars"], "Caption length", "characters", None),
            (cap["words"], "Caption words", "words", None)]), "caption length"), sid="captions"))
    if (agg.get("languages") or {}).get("top"):
        parts.append(_section("Languages", _plot(plots.languages(agg["languages"]), "languages"), sid="languages"))
    if img.get("n"):
        parts.append(_section(f"Image sizes ({img['n']:,} downloaded)", _plot(plots.histograms([
            (img["width"], "Original width", "pixels", plots.bin_labels(img["width"]["edges"])),
            (img["height"], "Original height", "pixels", plots.bin_labels(img["height"]["edges"])),
            (img["aspect"], "Aspect ratio (w / h)", "ratio", plots.bin_labels(img["aspect"]["edges"], "{:.2g}")),
        ]), "image sizes"), sid="images"))
    if clip.get("hist"):
        s = clip["summary"]
        info = table(["", "value"], [[k, _num(v)] for k, v in (
            ("scored", s["n"]), ("mean", s["mean"]), ("median", s["median"]), ("p5", s["p5"]), ("p95", s["p95"]),
            ("threshold", clip.get("threshold")), ("below threshold", clip.get("below_threshold")),
            ("kept below threshold", clip.get("kept_below_threshold")))], {1})
        safety = agg.get("safety") or {}
        srows = [[_e(k), _num(r["n"]), _num(r["mean"]), _pct(r["above_0_5_pct"]), _num(r["kept_mean"]),
                  _pct(r["kept_above_0_5_pct"])] for k, r in safety.items() if r["n"]]
        parts.append(_section(
            "CLIP scores", _plot(plots.clip(clip), "clip similarity"), info,
            ("<p>punsafe / pwatermark: zero-shot CLIP prompt scores unless a trained head was configured "
             "(clip.unsafe_head / watermark_head); uncalibrated, never used to filter.</p>"
             + table(["score", "scored", "mean", "> 0.5", "kept mean", "kept > 0.5"], srows, {1, 2, 3, 4, 5}))
            if srows else "", sid="clip"))
    more = {k: d for k, d in (agg.get("clip_scores") or {}).items() if d["summary"]["n"]}
    if more:  # further CLIP models (filters.clip.models) and clip_sigmoid
        mrows = [[_e(k), _num(d["summary"]["n"]), _num(d["summary"]["mean"]), _num(d["summary"]["p5"]),
                  _num(d["summary"]["median"]), _num(d["summary"]["p95"]), _num(d["summary_kept"]["median"])]
                 for k, d in more.items()]
        parts.append(_section("More CLIP scores", "<p>clip_sigmoid: a SigLIP-style model's own pair probability; "
                              "clip_similarity_&lt;name&gt;: the cosine of a further scorer (clip_model_&lt;name&gt; "
                              "names it).</p>" + table(["score", "scored", "mean", "p5", "median", "p95", "kept median"],
                                                       mrows, {1, 2, 3, 4, 5, 6}), sid="clip-more"))
    sig = {k: v for k, v in (agg.get("signals") or {}).items() if k != "sources"}
    if sig:  # curation signals (clipcrawl.filters.signals) and what produced them
        rows_ = [[_e(k), _num(r["n"]), _num(r["mean"]), _num(r["median"]), _num(r["p95"]), _num(r["kept_mean"])]
                 for k, r in sig.items()]
        srcs = "".join(f"<li>{_e(x)}</li>" for x in agg["signals"].get("sources") or [])
        parts.append(_section(
            "Curation signals", _plot(plots.histograms([(r["hist"], r["title"], k, None) for k, r in sig.items()]),
                                      "curation signals"),
            table(["signal", "computed", "mean", "median", "p95", "kept mean"], rows_, {1, 2, 3, 4, 5}),
            f"<p>Produced by:</p><ul>{srcs}</ul>" if srcs else "", sid="signals"))
    if agg.get("dedup"):
        parts.append(_section("Duplicates", _plot(plots.dedup(agg["dedup"]), "duplicates"), sid="dedup"))
    prov = agg.get("provenance")
    if prov:
        prow = ([[_e(f"refused: {k}"), _num(v)] for k, v in prov["refused"].items()]
                + [[_e("kept, AI-generated (IPTC/C2PA)"), _num(prov["ai_generated_kept"])],
                   [_e("kept, with a C2PA manifest"), _num(prov["c2pa_kept"])]]
                + [[_e(f"kept, licence {k}"), _num(v)] for k, v in prov["licences_kept"].items()])
        parts.append(_section("Consent and provenance", table(["what", "count"], prow, {1}), sid="provenance"))
    tp = agg.get("throughput")
    if tp:
        rows = [[k, _num(tp.get(k))] for k in ("shards", "count", "successes", "bytes", "start", "end",
                                               "wall_seconds", "active_seconds", "busy_seconds", "samples_per_s", "kept_per_s",
                                               "shard_rate_median")]
        parts.append(_section("Throughput", _plot(plots.timeline(tp), "throughput"), table(["", "value"], rows, {1}),
                              sid="throughput"))
    runs = agg.get("runs") or []
    if runs:
        rrows = [[_e(r["run"]), _e(r.get("start")), _e(r.get("end")), _num(r.get("duration")),
                  _e(r.get("published")), _num(r.get("samples")), _num(r.get("kept")),
                  _e(r.get("status") or r.get("state") or "")] for r in runs]
        parts.append(_section("History across runs", _plot(plots.runs(runs), "runs"),
                              table(["run", "start (UTC)", "end (UTC)", "seconds", "published", "samples", "kept",
                                     "state"], rrows, {3, 5, 6}), sid="runs"))
    man = agg.get("manifest")
    if man and (man.get("fields") or man.get("lists")):
        blocks = [table(["field", "value"], [[_e(k), _e(v)] for k, v in (man.get("fields") or {}).items()])]
        for name, entries in (man.get("lists") or {}).items():
            keys = list(dict.fromkeys(k for e in entries for k in e))[:8]
            blocks.append(f"<b>{_e(name)}</b>" + table(keys, [[_e(e.get(k)) for k in keys] for e in entries]))
        parts.append(_section("manifest.json", *blocks, sid="manifest"))
    parts.append(_grid("Random kept samples", samples.get("random_kept", []),
                       "Thumbnails read from a few shard tars."))
    parts.append(_grid("Lowest-scoring kept samples", samples.get("lowest_kept", [])))
    parts.append(_grid("Highest-scoring samples dropped by CLIP", samples.get("top_dropped_clip", []),
                       "Shard tars hold kept samples only; images of dropped samples come from dropped/NNNNN.tar "
                       "when a writer kept them, otherwise the card shows caption and URL."))
    sub = _e(agg.get("dataset", {}).get("root", ""))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f"<body><header><h1>{_e(title)}</h1><p>{sub}</p></header><main>"
            f"{_section('Overview', _overview(agg), sid='overview')}{''.join(parts)}</main></body></html>")
