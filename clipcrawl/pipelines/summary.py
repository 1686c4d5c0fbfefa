"""The closing summary of a run: the funnel, drops by reason, and where the files are."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.shardfiles import ShardRef, is_done
from clipcrawl.base.storage import read_parquet
from clipcrawl.pipelines.runstate import RunState
from clipcrawl.schemas.status import Status


def run_funnel(st: RunState) -> list[tuple[str, int]]:
    """(step, count) from pages to kept samples, from the run's recorded counts."""
    c = st.counts
    crawl = st.sources.get("crawl") or {}
    cc = st.sources.get("commoncrawl") or {}
    samples = sum(v for k, v in c.items() if k in {s.value for s in Status})
    not_fetched = c.get(Status.FILTERED_TEXT.value, 0)
    downloaded = samples - not_fetched - c.get(Status.FAILED_TO_DOWNLOAD.value, 0)
    decoded = downloaded - c.get(Status.FAILED_TO_RESIZE.value, 0)
    scored = decoded - c.get(Status.FAILED_TO_SCORE.value, 0)
    passed_clip = scored - c.get(Status.FILTERED_CLIP.value, 0)
    steps: list[tuple[str, int]] = []
    if crawl:
        steps.append(("pages crawled", int(crawl.get("pages", 0))))
    if cc:
        steps.append(("Common Crawl records", int(cc.get("records", 0) or 0)))
    steps += [
        ("pairs found", int(c.get("pairs_total", 0))),
        ("new pairs (this run)", int(c.get("pairs_new", 0))),
        ("passed caption rules", samples - not_fetched),
        ("downloaded", downloaded),
        ("decoded + resized", decoded),
        ("passed CLIP threshold", passed_clip),
        ("kept after dedup", int(c.get(Status.SUCCESS.value, 0))),
    ]
    return steps


def drop_reasons(ds: DatasetLayout, st: RunState, top: int = 12) -> list[tuple[str, str, int]]:
    """(status, reason, count) for dropped samples of the run's shards, most frequent first."""
    counter: Counter[tuple[str, str]] = Counter()
    for name in st.planned_shards:
        ref = ShardRef(ds.shards, name)
        if not is_done(ref):
            continue
        t = read_parquet(ref.parquet, ["status", "error_message"])
        for s, e in zip(t.column("status").to_pylist(), t.column("error_message").to_pylist()):
            if s != Status.SUCCESS.value:
                counter[(s, _short(e or ""))] += 1
    return [(s, e, n) for (s, e), n in counter.most_common(top)]


def _short(msg: str, width: int = 60) -> str:
    import re

    msg = re.sub(r"https?://\S+", "<url>", msg)
    msg = re.sub(r"\b[0-9a-f]{12,}\b", "<key>", msg)
    msg = re.sub(r"(?<!HTTP )(?<![\w.-])[-+]?\d+(\.\d+)?(?![\w.])", "<n>", msg)  # numbers, not HTTP codes
    return msg if len(msg) <= width else msg[: width - 1] + "…"


def print_run_summary(ds: DatasetLayout, st: RunState, console: Console | None = None, extra: dict[str, Any] | None = None
                      ) -> None:
    console = console or Console(stderr=False)
    funnel = Table(title=f"clipcrawl run {st.run}: {st.state}{' (failed)' if st.error else ''}", title_justify="left")
    funnel.add_column("step")
    funnel.add_column("count", justify="right")
    funnel.add_column("%", justify="right")
    steps = run_funnel(st)
    base = next((n for name, n in steps if name == "new pairs (this run)"), 0) or 1
    for name, n in steps:
        pct = f"{100 * n / base:.0f}" if name not in ("pages crawled", "pairs found", "Common Crawl records") else ""
        funnel.add_row(name, str(n), pct)
    console.print(funnel)
    reasons = drop_reasons(ds, st)
    if reasons:
        t = Table(title="dropped by reason", title_justify="left")
        t.add_column("status")
        t.add_column("reason")
        t.add_column("n", justify="right")
        for s, e, n in reasons:
            t.add_row(s, e, str(n))
        console.print(t)
    files = Table(title="files", title_justify="left", show_header=False)
    files.add_column("what")
    files.add_column("where")
    files.add_row("shards (tar + parquet + stats)", ds.shards)
    files.add_row("kept samples", ds.samples)
    files.add_row("run record", ds.run_file(st.run, "run.json"))
    for k, v in (extra or {}).items():
        files.add_row(k, str(v))
    console.print(files)
    secs = sum(st.timings.values())
    verdict = "FAILED" if st.error else "done"
    console.print(f"{verdict} in {secs:.1f}s (" + ", ".join(f"{k} {v:.1f}s" for k, v in st.timings.items()) + ")")
    if st.error:
        console.print(f"[bold red]{st.error}[/]", markup=True, highlight=False)
