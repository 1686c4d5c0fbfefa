"""The report as rich tables that read well in 80 columns."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

_BARS = " ▁▂▃▄▅▆▇█"


def _n(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.3f}" if abs(x) < 10 else f"{x:,.1f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _p(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}%"


def spark(values: list[int]) -> str:
    top = max(values) if values else 0
    if not top:
        return ""
    return "".join(_BARS[min(8, round(8 * v / top)) if v else 0] for v in values)


def _table(title: str, *cols: tuple[str, str]) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
              expand=False)
    for name, justify in cols:
        t.add_column(name, justify=justify, overflow="ellipsis", no_wrap=justify == "right")
    return t


def _funnel(agg: dict[str, Any]) -> Table:
    t = _table("Funnel", ("step", "left"), ("count", "right"), ("%", "right"), ("dropped", "right"),
               ("note", "left"))
    for s in agg.get("funnel", []):
        dropped = f"{s['dropped']:,}" if s.get("dropped") is not None else ""
        t.add_row(s["step"], _n(s["count"]), _p(s.get("pct")), dropped, s.get("note") or s.get("status") or "")
    return t


def _causes(agg: dict[str, Any], limit: int = 15) -> Table:
    t = _table("Drops and errors by cause", ("status", "left"), ("cause", "left"), ("count", "right"),
               ("%", "right"))
    for c in agg.get("causes", [])[:limit]:
        t.add_row(c["status"], c["cause"], _n(c["count"]), _p(c["pct"]))
    return t


def _domains(agg: dict[str, Any], limit: int = 10) -> Table:
    d = agg.get("domains") or {}
    t = _table(f"Top domains ({_n(d.get('distinct'))} distinct)", ("domain", "left"), ("pairs", "right"),
               ("kept", "right"), ("kept %", "right"))
    for r in (d.get("top") or [])[:limit]:
        t.add_row(r["domain"], _n(r["pairs"]), _n(r["kept"]), _p(r["kept_pct"]))
    return t


def _distributions(agg: dict[str, Any]) -> Table:
    t = _table("Distributions (all rows)", ("measure", "left"), ("n", "right"), ("p5", "right"),
               ("median", "right"), ("p95", "right"), ("mean", "right"))
    cap, img, clip = agg.get("captions") or {}, agg.get("images") or {}, agg.get("clip") or {}
    for name, s in (("caption chars", cap.get("chars_summary")), ("caption words", cap.get("words_summary")),
                    ("original width", img.get("width_summary")), ("original height", img.get("height_summary")),
                    ("clip_similarity", clip.get("summary")), ("clip (kept)", clip.get("summary_kept"))):
        if s and s.get("n"):
            t.add_row(name, _n(s["n"]), _n(s["p5"]), _n(s["median"]), _n(s["p95"]), _n(s["mean"]))
    for name, d in (agg.get("clip_scores") or {}).items():  # further models, clip_sigmoid
        for label, s in ((name, d.get("summary")), (f"{name} (kept)", d.get("summary_kept"))):
            if s and s.get("n"):
                t.add_row(label, _n(s["n"]), _n(s["p5"]), _n(s["median"]), _n(s["p95"]), _n(s["mean"]))
    return t


def _languages(agg: dict[str, Any], limit: int = 8) -> Table:
    t = _table("Languages", ("language", "left"), ("count", "right"), ("kept", "right"))
    for r in ((agg.get("languages") or {}).get("top") or [])[:limit]:
        t.add_row(r["language"], _n(r["count"]), _n(r["kept"]))
    return t


def _scores(agg: dict[str, Any]) -> Table:
    t = _table("Scores (zero-shot unless a head is set; never filter)", ("score", "left"), ("scored", "right"), ("mean", "right"), (">0.5", "right"),
               ("kept >0.5", "right"))
    for name, r in (agg.get("safety") or {}).items():
        if r["n"]:
            t.add_row(name, _n(r["n"]), _n(r["mean"]), _p(r["above_0_5_pct"]), _p(r["kept_above_0_5_pct"]))
    return t


def _small_dict(title: str, d: dict[str, int], head: str) -> Table:
    t = _table(title, (head, "left"), ("count", "right"))
    for k, v in d.items():
        t.add_row(k, _n(v))
    return t


def _curation(c: dict[str, Any]) -> Table:
    t = _table("Curation rules" + (f": {c['preset'][0]}" if c.get("preset") else ""), ("rule", "left"),
               ("dropped", "right"))
    for line in (c.get("preset") or [])[1:]:
        t.add_row(line.strip(), "")
    for rule, n in (c.get("drops_by_rule") or {}).items():
        t.add_row(rule, _n(n))
    for entry, before, after in (c.get("balance_entries") or [])[:8]:
        t.add_row(f"entry {entry!r}: {_n(before)} -> {_n(after)}", "")
    return t


def _runs(agg: dict[str, Any]) -> Table:
    t = _table("Runs", ("run", "left"), ("start (UTC)", "left"), ("seconds", "right"), ("samples", "right"),
               ("kept", "right"), ("state", "left"))
    for r in agg.get("runs") or []:
        t.add_row(r["run"], r.get("start") or r.get("published") or "", _n(r.get("duration")), _n(r.get("samples")), _n(r.get("kept")),
                  str(r.get("status") or r.get("state") or ""))
    return t


def _samples(title: str, cards: list[dict[str, Any]], limit: int = 5) -> Table:
    t = _table(title, ("clip", "right"), ("caption", "left"))
    for c in cards[:limit]:
        score = c.get("clip_similarity")
        t.add_row("–" if score is None else f"{score:.3f}", (c.get("caption") or "").replace("\n", " "))
    return t


def render(agg: dict[str, Any], samples: dict[str, list[dict[str, Any]]] | None = None,
           console: Console | None = None) -> None:
    """Print the report to ``console`` (default: stdout, at most 100 columns wide)."""
    if console is None:
        console = Console()
        console.width = min(console.width, 100)
    ds = agg.get("dataset", {})
    console.print(f"[bold]clipcrawl stats[/bold] {escape(str(ds.get('root', '')))}", overflow="fold")
    for u in agg.get("unreadable") or []:  # named first: the numbers below leave these files out
        console.print(f"[bold yellow]warning:[/bold yellow] unreadable: {escape(u['file'])}: {escape(u['error'])}",
                      soft_wrap=True)  # one line (the terminal wraps it): the path stays whole
    thr = agg.get("threshold")
    src = agg.get("threshold_source")
    console.print(f"CLIP threshold: {thr if thr is not None else 'unknown (pass --threshold)'}"
                  + (f"  [dim]from {src}[/dim]" if src else ""), overflow="fold")
    console.print(_funnel(agg))
    if agg.get("causes"):
        console.print(_causes(agg))
    if agg.get("pages") and agg["pages"].get("causes"):
        t = _table("Page errors", ("status", "left"), ("cause", "left"), ("count", "right"))
        for c in agg["pages"]["causes"][:10]:
            t.add_row(c["status"], c["cause"], _n(c["count"]))
        console.print(t)
    if (agg.get("domains") or {}).get("top"):
        console.print(_domains(agg))
    if agg.get("captions"):
        console.print(_distributions(agg))
        ch = agg["captions"]["chars"]
        console.print(f"caption chars 0..{ch['edges'][-2]}+  {spark(ch['all'])}", overflow="fold")
    h = (agg.get("clip") or {}).get("hist")
    if h:
        lo, hi = h["edges"][0], h["edges"][-1]
        all_ = [a + b + c for a, b, c in zip(h["kept"], h["filtered_clip"], h["other"])]
        console.print(f"clip {lo:.2f}..{hi:.2f}  {spark(all_)}", overflow="fold")
        if agg["clip"].get("below_threshold") is not None:
            console.print(f"below threshold: {agg['clip']['below_threshold']:,} "
                          f"(kept anyway: {agg['clip']['kept_below_threshold']:,})")
    if (agg.get("languages") or {}).get("top"):
        console.print(_languages(agg))
    if any(r["n"] for r in (agg.get("safety") or {}).values()):
        console.print(_scores(agg))
    sig = {k: v for k, v in (agg.get("signals") or {}).items() if k != "sources"}
    if sig:
        t = _table("Curation signals", ("signal", "left"), ("computed", "right"), ("mean", "right"),
                   ("median", "right"), ("p95", "right"), ("kept mean", "right"), ("distribution", "left"))
        for k, r in sig.items():
            t.add_row(k, _n(r["n"]), _n(r["mean"]), _n(r["median"]), _n(r["p95"]), _n(r["kept_mean"]),
                      spark(r["hist"]["all"]))
        console.print(t)
        for src in agg["signals"].get("sources") or []:
            console.print(f"signals from: {src}", overflow="fold")
    if agg.get("dedup"):
        console.print(_small_dict("Dedup", agg["dedup"], "method"))
    prov = agg.get("provenance")
    if prov:
        console.print(_small_dict("Consent and provenance", {
            **{f"refused: {k}": v for k, v in prov["refused"].items()},
            "kept, AI-generated (IPTC/C2PA)": prov["ai_generated_kept"], "kept, with a C2PA manifest": prov["c2pa_kept"],
            **{f"kept, licence {k}": v for k, v in prov["licences_kept"].items()}}, "what"))
    if agg.get("curation"):
        console.print(_curation(agg["curation"]))
    tp = agg.get("throughput")
    if tp:
        console.print(f"[bold]Throughput[/bold] {tp['shards']} shards, {_n(tp['count'])} samples in "
                      f"{_n(tp['active_seconds'])} s active ({_n(tp['wall_seconds'])} s wall): "
                      f"{_n(tp['samples_per_s'])} samples/s, "
                      f"{_n(tp['kept_per_s'])} kept/s (median shard {_n(tp['shard_rate_median'])}/s)")
    if agg.get("runs"):
        console.print(_runs(agg))
    if samples:
        if samples.get("lowest_kept"):
            console.print(_samples("Lowest-scoring kept", samples["lowest_kept"]))
        if samples.get("top_dropped_clip"):
            console.print(_samples("Highest-scoring dropped by CLIP", samples["top_dropped_clip"]))
