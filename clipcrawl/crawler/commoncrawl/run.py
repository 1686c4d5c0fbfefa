"""``read_commoncrawl``: expand the inputs, skip finished ones, read the rest in worker processes.

Output (``out_dir`` is a local folder or an fsspec URL)::

    out_dir/pairs/NNNNN.parquet        PAIRS schema, source "commoncrawl"
    out_dir/state/<input>.<hash>.json  one FileReport per input: done | failed | running

A rerun skips inputs whose state says ``done`` (read with the same or a larger ``max_records``),
deletes the chunks of unfinished or failed inputs and reads those again.

Inputs are read by a process pool here, or by a ``runner`` the caller gives (the Ray engine's shard
loop: :mod:`clipcrawl.pipelines.passes.commoncrawl`), which calls :func:`read_input` per input: the
same planning, state files and summary either way.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import fsspec

from clipcrawl.base.progress import Progress, log
from clipcrawl.base.storage import fs_and_path, read_json
from clipcrawl.base.workers import ignore_sigint, quiet_context
from clipcrawl.crawler.commoncrawl.process import FileReport, ReadOptions, process_file, state_name
from clipcrawl.schemas.config import CommonCrawlConfig, ConfigError

_GLOB = set("*?[")
_ARCHIVE = re.compile(r"\.(?:warc|wat|arc)(?:\.gz)?$", re.IGNORECASE)


@dataclass
class CommonCrawlSummary:
    inputs: int = 0  # input files after glob expansion
    already_done: int = 0  # skipped: finished by an earlier run
    done: int = 0
    failed: int = 0  # read partly or not at all (see errors)
    unusable: int = 0  # failed without a single record read
    records: int = 0
    pages: int = 0
    noai_pages: int = 0
    pairs: int = 0
    truncated_records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # "<input>: <message>"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """False only when there was something to read and nothing could be read."""
        ran = self.done + self.failed
        return self.already_done > 0 or ran == 0 or self.unusable < ran

    def add(self, rep: FileReport) -> None:
        self.records += rep.records
        self.pages += rep.pages
        self.noai_pages += rep.noai_pages
        self.pairs += rep.pairs
        self.truncated_records += rep.truncated_records
        for src, dst in ((rep.skipped, self.skipped), (rep.dropped, self.dropped)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
        if rep.status == "done":
            self.done += 1
        else:
            self.failed += 1
            self.unusable += rep.records == 0
            self.errors.append(f"{rep.input}: {rep.error}")


def expand_inputs(paths: list[str], fs_kwargs: dict[str, Any] | None = None) -> list[str]:
    """Globs expanded (sorted, any fsspec filesystem), local folders expanded to the .warc/.wat/.arc(.gz)
    files under them, duplicates removed, order kept."""
    out: dict[str, None] = {}
    for p in paths:
        if not any(c in _GLOB for c in p):
            fs, stripped = fsspec.core.url_to_fs(p, **(fs_kwargs or {}))
            if "://" not in p and fs.isdir(stripped):  # a local folder: its archive files
                found = sorted(f for f in fs.find(stripped) if _ARCHIVE.search(f.rsplit("/", 1)[-1]))
                if not found:
                    raise ConfigError(f"Common Crawl input folder {p!r} holds no .warc/.wat/.arc files")
                out.update(dict.fromkeys(found))
            else:
                out[p] = None
            continue
        fs, _ = fsspec.core.url_to_fs(p, **(fs_kwargs or {}))
        matches = sorted(fs.glob(p if "://" not in p else fs._strip_protocol(p)))
        if not matches:
            raise ConfigError(f"Common Crawl input {p!r} matches no file (fix: check the glob)")
        for m in matches:
            out[m if "://" not in p else fs.unstrip_protocol(m)] = None
    return list(out)


def _previous(out_dir: str, path: str) -> dict[str, Any] | None:
    url = f"{out_dir}/state/{state_name(path)}.json"
    fs, p = fs_and_path(url)
    if not fs.exists(p):
        return None
    try:
        return read_json(url)
    except (ValueError, OSError):
        return None


def _is_finished(prev: dict[str, Any] | None, max_records: int | None) -> bool:
    if not prev or prev.get("status") != "done":
        return False
    if not prev.get("limited"):
        return True
    was = prev.get("max_records")
    return max_records is not None and was is not None and max_records <= was


def _remove_chunks(out_dir: str, names: list[str]) -> None:
    for name in names:
        fs, p = fs_and_path(f"{out_dir}/pairs/{name}.parquet")
        if fs.exists(p):
            fs.rm(p)


def _next_chunk_id(out_dir: str) -> int:
    fs, p = fs_and_path(f"{out_dir}/pairs")
    if not fs.isdir(p):
        return 0
    ids = [int(b[:-8]) for b in (f.rsplit("/", 1)[-1] for f in fs.ls(p, detail=False))
           if b.endswith(".parquet") and b[:-8].isdigit()]
    return max(ids) + 1 if ids else 0


# ------------------------------------------------------------------ workers
_W: dict[str, Any] = {}


def _init_worker(counter: Any, queue: Any) -> None:
    ignore_sigint()  # Ctrl-C is the parent's: it stops and shuts the pool down
    _W["counter"], _W["queue"] = counter, queue


def _alloc_shared() -> int:
    c = _W["counter"]
    with c.get_lock():
        v = c.value
        c.value += 1
    return v


def _work(path: str, opts: ReadOptions, out_dir: str) -> FileReport:
    q = _W["queue"]
    return process_file(path, opts, out_dir, _alloc_shared, lambda r, p: q.put((path, r, p)))


def read_input(path: str, opts: ReadOptions, out_dir: str, alloc: Callable[[], int],
               report: Callable[[int, int], None] | None = None) -> FileReport:
    """Read one input to its end, first removing the chunks of an unfinished earlier attempt (a worker
    killed mid-file): safe to call again for the same input. ``alloc`` gives unique chunk ids."""
    prev = _previous(out_dir, path)
    if prev and prev.get("status") != "done":
        _remove_chunks(out_dir, list(prev.get("chunks") or []))
    return process_file(path, opts, out_dir, alloc, report)


#: ``runner(todo, opts, out_dir, first_chunk_id, finished)``: reads every input of ``todo`` (each with
#: :func:`read_input`, chunk ids unique from ``first_chunk_id``) and calls ``finished`` per input, in order
Runner = Callable[[list[str], ReadOptions, str, int, Callable[[FileReport], None]], None]


def read_commoncrawl(
    config: CommonCrawlConfig,
    out_dir: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: bool = True,
    on_file: Callable[[FileReport], None] | None = None,
    runner: Runner | None = None,
) -> CommonCrawlSummary:
    """Read every input of ``config`` into ``out_dir`` (see the module doc); returns the totals."""
    t0 = time.monotonic()
    out = os.fspath(out_dir).rstrip("/")
    opts = ReadOptions(format=config.format, max_records=config.max_records, pairs_per_file=config.pairs_per_file,
                       max_html_bytes=config.max_html_bytes, fs_kwargs=dict(config.storage_options),
                       blocklists=tuple(config.blocklists))
    inputs = expand_inputs(list(config.paths), opts.fs_kwargs)
    summary = CommonCrawlSummary(inputs=len(inputs))
    todo = []
    for path in inputs:
        prev = _previous(out, path)
        if _is_finished(prev, opts.max_records):
            summary.already_done += 1
            continue
        if prev:
            _remove_chunks(out, list(prev.get("chunks") or []))
        todo.append(path)
    if summary.already_done:
        log.info("commoncrawl: %d of %d inputs already read, skipped", summary.already_done, len(inputs))
    n_workers = max(1, min(workers or config.workers or (os.cpu_count() or 1), len(todo) or 1))
    first_id = _next_chunk_id(out)
    bar = Progress("commoncrawl", total=None, unit="rec", enabled=progress and bool(todo) and runner is None)

    def finished(rep: FileReport) -> None:
        summary.add(rep)
        done = summary.done + summary.failed
        bar.update(0, files=f"{done}/{len(todo)}", pairs=summary.pairs, failed=summary.failed)
        if rep.status != "done":
            log.warning("commoncrawl: %s: %s", rep.input, rep.error)
        if on_file is not None:
            on_file(rep)

    if runner is not None:
        if todo:
            runner(todo, opts, out, first_id, finished)
    elif n_workers == 1:
        ids = iter(range(first_id, 1 << 62))
        with bar:
            for path in todo:
                live = [summary.pairs]

                def tick(records: int, pairs: int, live: list[int] = live) -> None:
                    live[0] += pairs
                    bar.update(records, pairs=live[0])

                finished(process_file(path, opts, out, lambda: next(ids), tick))
    else:
        _run_pool(todo, opts, out, n_workers, first_id, bar, finished, lambda: summary.pairs)
    summary.seconds = round(time.monotonic() - t0, 3)
    return summary


def _run_pool(todo: list[str], opts: ReadOptions, out: str, n_workers: int, first_id: int, bar: Progress,
              finished: Callable[[FileReport], None], summary_pairs: Callable[[], int]) -> None:
    """Workers are started (first submit) before the bar, whose refresh thread would make fork unsafe."""
    ctx = _mp_context()
    if ctx.get_start_method() == "fork":
        _warm_up(opts)
    counter, queue = ctx.Value("q", first_id), ctx.Queue()
    shown: Counter[str] = Counter()  # records shown on the bar, per input
    live_pairs: Counter[str] = Counter()  # pairs of inputs still being read
    reported: set[str] = set()  # inputs whose final report arrived (late progress messages ignored)

    def drain() -> None:
        while True:
            try:
                path, records, pairs = queue.get_nowait()
            except queue_mod.Empty:
                return
            if path not in reported:
                shown[path] += records
                live_pairs[path] += pairs
                bar.update(records, pairs=summary_pairs() + sum(live_pairs.values()))

    with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(counter, queue)) as pool:
        futures = {pool.submit(_work, path, opts, out): path for path in todo}
        with bar:
            pending = set(futures)
            while pending:
                finished_now, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                drain()
                for fut in finished_now:
                    path = futures[fut]
                    try:
                        rep = fut.result()
                    except Exception as e:  # noqa: BLE001 - a crashed worker fails its input only
                        rep = FileReport(input=path, status="failed", error=f"worker crashed: {e!r}"[:500])
                    drain()
                    reported.add(path)
                    live_pairs.pop(path, None)
                    bar.update(max(0, rep.records - shown.pop(path, 0)))
                    finished(rep)


def _warm_up(opts: ReadOptions) -> None:
    """Do the lazy imports (pyarrow.parquet pulls pandas, the extractor its parsers) once, before
    forking: otherwise every worker spends ~2 s on them with its first input."""
    import io

    import pyarrow.parquet as pq

    from clipcrawl.schemas.tables import PAIRS

    pq.write_table(PAIRS.empty_table(), io.BytesIO())
    if opts.format != "wat":
        from clipcrawl.crawler.extract import extract_page

        extract_page(b"<html lang=en><title>t</title><img src=a.jpg alt=a></html>", "http://example.com/")


def _mp_context() -> Any:
    """fork where it is safe (Linux, no other thread alive: workers start before the bar's
    refresh thread), else spawn (which re-imports everything in each worker, ~seconds)."""
    if "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return quiet_context("fork")
    return quiet_context("spawn")
