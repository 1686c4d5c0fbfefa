"""Collect pairs from the configured sources, then plan the run's shards (written once, atomically)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pyarrow as pa

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.shardfiles import ShardRef, list_shards, next_shard_id
from clipcrawl.base.storage import fs_and_path, read_parquet, write_parquet
from clipcrawl.pipelines.runstate import RunState
from clipcrawl.schemas.config import RunConfig
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import PAIRS, conform


# ------------------------------------------------------------------ collect
def collect(cfg: RunConfig, ds: DatasetLayout, st: RunState) -> list[str]:
    """Run every configured source; return the folders holding their pairs Parquet files."""
    folders = []
    src = cfg.sources
    if src.crawl is not None:
        st.sources["crawl"] = _plain(_crawl(src.crawl, ds))
        folders.append(f"{ds.source_dir('crawl')}/pairs")
    if src.commoncrawl is not None:
        from clipcrawl.crawler.commoncrawl import read_commoncrawl

        out = ds.source_dir("commoncrawl")
        if ds.remote:
            _migrate_source(ds, "commoncrawl")
        summary = read_commoncrawl(src.commoncrawl, out)
        st.sources["commoncrawl"] = _plain(summary)
        folders.append(f"{out}/pairs")
    if src.urls is not None:
        from clipcrawl.pipelines.inputs import read_url_list

        table = read_url_list(src.urls)
        st.sources["urls"] = {"rows": table.num_rows}
        if "error_message" in table.column_names:  # bad JSONL lines: no URL to plan; recorded in run.json
            import pyarrow.compute as pc

            bad = pc.is_valid(table.column("error_message"))
            messages = table.filter(bad).column("error_message").to_pylist()
            if messages:
                import logging

                logging.getLogger("clipcrawl.run").warning(
                    "urls: %d unusable input line(s), not planned (listed in run.json): %s", len(messages),
                    messages[0])
                st.sources["urls"]["unusable_lines"] = len(messages)
                st.sources["urls"]["unusable_examples"] = messages[:20]
                table = table.filter(pc.invert(bad))
        write_parquet(conform(table, PAIRS), ds.p("urls", "pairs", "00000.parquet"))
        folders.append(ds.p("urls", "pairs"))
    return folders


def _crawl(config: Any, ds: DatasetLayout) -> Any:
    """The crawl, in the dataset; for a remote dataset in a local working copy of its state, checked out
    first and checked in periodically and at the end (:mod:`clipcrawl.crawler.checkout`)."""
    from clipcrawl.crawler.crawl import crawl

    work = ds.source_workdir("crawl")
    if not ds.remote:
        return crawl(config, work)
    from clipcrawl.crawler.checkout import Checkin, checkout

    checkout(ds.source_dir("crawl"), work)
    with Checkin(work, ds.source_dir("crawl")):
        return crawl(config, work)


def _migrate_source(ds: DatasetLayout, name: str) -> None:
    """State a source kept in a local folder for a remote dataset (older versions): uploaded once."""
    import os

    old = ds.source_workdir(name)
    fs, path = fs_and_path(f"{ds.source_dir(name)}/state")
    if not os.path.isdir(f"{old}/state") or fs.isdir(path):
        return
    import logging

    logging.getLogger("clipcrawl.run").info("%s state of %s found in its old local place %s: moving it into "
                                            "the dataset", name, ds.root, old)
    root = fs_and_path(ds.source_dir(name))[1]
    for sub in ("pairs", "state"):  # pairs first: a state file says its chunks exist
        for f in sorted(os.listdir(f"{old}/{sub}")) if os.path.isdir(f"{old}/{sub}") else []:
            if not f.startswith("."):
                fs.put_file(f"{old}/{sub}/{f}", f"{root}/{sub}/{f}")


def _plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj if isinstance(obj, (int, float, str, bool, type(None), list)) else str(obj)


def _read_pairs(folder: str) -> pa.Table:
    fs, path = fs_and_path(folder)
    if not fs.isdir(path):
        return PAIRS.empty_table()
    files = sorted(f for f in fs.ls(path, detail=False) if f.endswith(".parquet") and "/." not in f)
    tables = [conform(read_parquet(f if "://" not in folder else f"{folder.split('://')[0]}://{f}"), PAIRS,
                      keep_extra=False) for f in files]
    return pa.concat_tables(tables) if tables else PAIRS.empty_table()


# ------------------------------------------------------------------ plan
def planned_keys(ds: DatasetLayout, before_run: int) -> pa.ChunkedArray:
    """Keys every earlier run planned (Arrow strings: bytes per key, not Python objects)."""
    chunks: list[pa.Array] = []
    for run in ds.runs():
        if run >= before_run:
            continue
        for ref in list_shards(ds.plan_dir(run), done_only=False):
            chunks += read_parquet(ref.parquet, ["key"]).column("key").cast(pa.string()).chunks
    return pa.chunked_array(chunks, pa.string())


def new_pairs(pairs: pa.Table, seen: pa.ChunkedArray) -> pa.Table:
    """The first row of each key no earlier run planned, sorted by key (in Arrow: no Python object per row)."""
    import numpy as np
    import pyarrow.compute as pc

    t = pa.table({"key": pairs.column("key").cast(pa.string()), "i": pa.array(np.arange(pairs.num_rows))})
    if len(seen):
        t = t.filter(pc.invert(pc.is_in(t.column("key"), value_set=seen.combine_chunks())))
    first = t.group_by("key", use_threads=False).aggregate([("i", "min")])
    first = first.sort_by([("key", "ascending")])  # UTF-8 byte order = code point order (Python's sort)
    return pairs.take(first.column("i_min"))


def plan(cfg: RunConfig, ds: DatasetLayout, st: RunState, folders: list[str]) -> list[ShardRef]:
    pairs = pa.concat_tables([_read_pairs(f) for f in folders]) if folders else PAIRS.empty_table()
    new = new_pairs(pairs, planned_keys(ds, st.run))
    n = cfg.output.samples_per_shard
    start = next_shard_id(ds.shards)
    refs = []
    plan_dir = ds.plan_dir(st.run)
    for j in range(0, new.num_rows, n):
        ref = ShardRef.of(plan_dir, start + j // n)
        write_parquet(new.slice(j, n), ref.parquet)
        refs.append(ref)
    st.planned_shards = [r.name for r in refs]
    st.counts["pairs_total"] = pairs.num_rows
    st.counts["pairs_new"] = new.num_rows
    return refs


# ------------------------------------------------------------------ process
def initial_samples(pairs: pa.Table, run: int, shard: str) -> pa.Table:
    """Pairs -> sample rows that start as ``success`` (nothing has failed yet)."""
    n = pairs.num_rows
    t = pairs
    for name, arr in (
        ("status", pa.array([Status.SUCCESS.value] * n, pa.string())),
        ("error_message", pa.nulls(n, pa.string())),
        ("shard", pa.array([shard] * n, pa.string())),
        ("run", pa.array([run] * n, pa.int32())),
    ):
        t = t.append_column(name, arr)
    return t
