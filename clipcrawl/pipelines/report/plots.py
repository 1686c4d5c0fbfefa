"""Matplotlib figures of the aggregate, as inline ``data:image/png;base64`` URIs.

Uses ``matplotlib.figure.Figure`` with the Agg canvas directly (no pyplot state, no display).
Each function takes a section of :func:`..aggregate.aggregate`'s dict and returns None when
there is nothing to plot.
"""

from __future__ import annotations

import base64
import io
from typing import Any

KEPT, ALL, DROP, OTHER = "#2a9d8f", "#b8c4cc", "#e76f51", "#8d99ae"


def _fig(w: float = 6.4, h: float = 3.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=96, layout="constrained")
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    return fig, ax


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _hbar(labels: list[str], values: list[float], title: str, color: str = KEPT,
          second: list[float] | None = None, second_label: str = "kept", first_label: str = "all") -> str:
    fig, ax = _fig(6.4, max(1.6, 0.26 * len(labels) + 0.8))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=ALL if second is not None else color, label=first_label)
    if second is not None:
        ax.barh(y, second, color=color, label=second_label, height=0.5)
        ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.set_yticks(y, [lab if len(lab) <= 42 else lab[:41] + "…" for lab in labels], fontsize=8)
    ax.set_title(title, fontsize=10, loc="left")
    return _uri(fig)


def funnel(steps: list[dict[str, Any]]) -> str | None:
    if not steps:
        return None
    fig, ax = _fig(6.4, 0.34 * len(steps) + 0.9)
    y = list(range(len(steps)))[::-1]
    counts = [s["count"] for s in steps]
    colors = [OTHER if s.get("pct") is None else KEPT for s in steps]
    ax.barh(y, counts, color=colors)
    for yi, s in zip(y, steps):
        label = f" {s['count']:,}" + (f" ({s['pct']:.1f}%)" if s.get("pct") is not None else "")
        ax.text(s["count"], yi, label, va="center", fontsize=8)
    ax.set_yticks(y, [s["step"] for s in steps], fontsize=8)
    ax.set_xlim(0, max(counts + [1]) * 1.3)
    ax.set_title("Funnel", fontsize=10, loc="left")
    return _uri(fig)


def causes(rows: list[dict[str, Any]], top: int = 15) -> str | None:
    rows = rows[:top]
    if not rows:
        return None
    return _hbar([f"{r['status']}: {r['cause']}" for r in rows], [r["count"] for r in rows],
                 "Drops by cause", color=DROP)


def domains(dom: dict[str, Any]) -> str | None:
    top = dom.get("top") or []
    if not top:
        return None
    return _hbar([d["domain"] for d in top], [d["pairs"] for d in top], "Top domains (pairs / kept)",
                 second=[d["kept"] for d in top], first_label="pairs")


def languages(lang: dict[str, Any]) -> str | None:
    top = lang.get("top") or []
    if not top:
        return None
    return _hbar([t["language"] for t in top], [t["count"] for t in top], "Page language",
                 second=[t["kept"] for t in top])


def _hist_ax(ax, h: dict[str, Any], title: str, xlabel: str, tick_labels: list[str] | None = None) -> None:
    n = len(h["all"])
    if tick_labels is not None:  # categorical bins (open-ended, uneven)
        x = list(range(n))
        ax.bar(x, h["all"], color=ALL, label="all", width=0.85)
        ax.bar(x, h["kept"], color=KEPT, label="kept", width=0.55)
        ax.set_xticks(x, tick_labels, fontsize=7, rotation=45, ha="right")
    else:
        edges = h["edges"]
        n = max((i + 1 for i, v in enumerate(h["all"]) if v), default=n)  # drop empty trailing bins
        widths = [edges[i + 1] - edges[i] for i in range(n)]
        ax.bar(edges[:n], h["all"][:n], width=widths, align="edge", color=ALL, label="all")
        ax.bar(edges[:n], h["kept"][:n], width=widths, align="edge", color=KEPT, label="kept")
    more = h.get("overflow_last") and n == len(h["all"])
    ax.set_xlabel(xlabel + (" (last bin: and more)" if more else ""), fontsize=8)
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False)


def histograms(panels: list[tuple[dict[str, Any], str, str, list[str] | None]]) -> str | None:
    """One figure, one panel per ``(hist, title, xlabel, tick_labels)``: bars of all rows, kept over them.

    A hist has ``edges`` and ``all``/``kept`` counts per bin; ``tick_labels`` makes bins categorical.
    """
    panels = [p for p in panels if p[0] and sum(p[0].get("all") or [])]
    if not panels:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.3 * len(panels), 3.0), dpi=96, layout="constrained")
    for i, (h, title, xlabel, ticks) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
        _hist_ax(ax, h, title, xlabel, ticks)
    return _uri(fig)


def bin_labels(edges: list[float], fmt: str = "{:g}") -> list[str]:
    out = []
    for i in range(len(edges) - 1):
        lo, hi = edges[i], edges[i + 1]
        if i == len(edges) - 2:
            out.append("≥" + fmt.format(lo))
        elif i == 0 and lo == 0:
            out.append("<" + fmt.format(hi))
        else:
            out.append(fmt.format(lo) + "–" + fmt.format(hi))
    return out


def clip(c: dict[str, Any]) -> str | None:
    h = c.get("hist")
    if not h:
        return None
    fig, ax = _fig()
    edges = h["edges"]
    n = len(edges) - 1
    w = edges[1] - edges[0]
    bottom = [0] * n
    for name, color in (("kept", KEPT), ("filtered_clip", DROP), ("other", OTHER)):
        vals = h[name]
        if sum(vals):
            ax.bar(edges[:n], vals, width=w, align="edge", bottom=bottom, color=color, label=name)
            bottom = [b + v for b, v in zip(bottom, vals)]
    thr = c.get("threshold")
    if thr is not None:
        ax.axvline(thr, color="black", linestyle="--", linewidth=1.2, label=f"threshold {thr:g}")
    ax.set_xlabel("clip_similarity", fontsize=8)
    ax.set_title("CLIP similarity", fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False)
    return _uri(fig)


def dedup(d: dict[str, int]) -> str | None:
    if not d:
        return None
    return _hbar(list(d), list(d.values()), "Duplicates by method", color=OTHER)


def timeline(t: dict[str, Any] | None) -> str | None:
    if not t or len(t.get("timeline") or []) < 1:
        return None
    from datetime import datetime, timezone

    pts = t["timeline"]
    xs = [datetime.fromtimestamp(p[0], tz=timezone.utc) for p in pts]
    fig, ax = _fig()
    ax.step(xs, [p[1] for p in pts], where="post", color=OTHER, label="samples")
    ax.step(xs, [p[2] for p in pts], where="post", color=KEPT, label="kept")
    ax.plot(xs, [p[1] for p in pts], "o", color=OTHER, markersize=2)
    ax.set_ylabel("cumulative (shard ends)", fontsize=8)
    ax.set_title("Throughput over time (UTC)", fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False)
    fig.autofmt_xdate()
    return _uri(fig)


def runs(rows: list[dict[str, Any]]) -> str | None:
    rows = [r for r in rows if r.get("statuses")]
    if not rows:
        return None
    fig, ax = _fig(6.4, 2.8)
    statuses = sorted({s for r in rows for s in r["statuses"]}, key=lambda s: (s != "success", s))
    x = list(range(len(rows)))
    bottom = [0] * len(rows)
    palette = [KEPT, DROP, OTHER, "#f4a261", "#e9c46a", "#264653", "#a8dadc", "#6d597a"]
    for i, s in enumerate(statuses):
        vals = [r["statuses"].get(s, 0) for r in rows]
        ax.bar(x, vals, bottom=bottom, color=palette[i % len(palette)], label=s)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(x, [f"run {r['run']}" for r in rows], fontsize=8)
    ax.set_title("Samples per run by status", fontsize=10, loc="left")
    ax.legend(fontsize=7, frameon=False, ncol=2)
    return _uri(fig)
