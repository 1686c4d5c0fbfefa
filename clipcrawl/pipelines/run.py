"""``clipcrawl run CONFIG.yaml``: sources -> download -> rules -> CLIP -> dedup -> write, incrementally.

A run is numbered (``runs/NNNN/``) and moves through states recorded in ``run.json``:

1. **collect** - each configured source adds pairs under the dataset (the crawl frontier continues
   where the last run stopped; Common Crawl inputs already read are skipped).
2. **plan** - pairs whose key no earlier run planned, sorted by key, cut into shards of
   ``samples_per_shard`` with ids after the last published shard. The plan is written once,
   atomically, so a resumed run processes exactly the same shards.
3. **process** - the planned shards go through the shard loop (:mod:`clipcrawl.pipelines.passes.process`):
   on any worker caption rules, fetch + resize, CLIP score, threshold (to a work file); on the driver in
   shard order dedup against everything published, embeddings, shard files (stats last), index commit.
4. **publish** - ``samples/`` and ``manifest.json`` are updated; ``run.json`` says ``done``.

A run that collected nothing from any source (no pair in the dataset's sources and no error-free page
or record this run, e.g. every seed refused) ends ``done`` with ``run.json``'s ``error`` saying why
(:func:`nothing_collected`, the refusals counted); ``clipcrawl run`` prints it and exits 1. An incremental
run that finds nothing *new* (every pair planned by earlier runs) is not a failure.

Killed at any point, the next invocation resumes the unfinished run and ends with the same keys
and statuses as an uninterrupted run. A lock keeps overlapping (cron) runs apart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.failpoints import failpoint
from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.shardfiles import ShardRef, is_done
from clipcrawl.base.storage import (
    atomic_open,
    configure_storage,
    exists,
    read_parquet,
    remove,
)
from clipcrawl.pipelines.lock import hold_dataset
from clipcrawl.pipelines.passes.process import PlannedShard, ProcessPlanned
from clipcrawl.pipelines.plan import collect, plan
from clipcrawl.pipelines.runstate import RunState, config_sha256, load_state, save_state
from clipcrawl.pipelines.shardloop import failure_lines, run_pass
from clipcrawl.schemas.config import RunConfig, dump_config

__all__ = ["RunState", "count_statuses", "nothing_collected", "process", "run"]

log = logging.getLogger("clipcrawl.run")


def count_statuses(tables: Iterable[pa.Table]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tables:
        if t.num_rows == 0:
            continue
        vc = pc.value_counts(t.column("status"))
        for item in vc.to_pylist():
            out[item["values"]] = out.get(item["values"], 0) + item["counts"]
    return out


#: refusals a setting can lift, and the setting
_REFUSAL_FIX = {"blocked_address": "sources.crawl.allow_private_networks / allowed_networks",
                "robots_disallowed": "the site's robots.txt (sources.crawl.respect_robots)",
                "blocked": "the blocklists", "off_domain": "sources.crawl.allowed_domains",
                "tdm_reserved": "the site's TDMRep reservation"}


def nothing_collected(st: RunState) -> str | None:
    """Why the run's sources gave no pair at all, or None when they gave some (or a page/record was read
    without error: a site without images is not a failure)."""
    if st.counts.get("pairs_total", 0) > 0:
        return None
    parts = []
    crawl = st.sources.get("crawl")
    if crawl is not None:
        by = {k: int(v) for k, v in (crawl.get("by_status") or {}).items()}
        if by.get("ok", 0):
            return None
        if by:
            counted = ", ".join(f"{k} {n}" for k, n in sorted(by.items(), key=lambda kv: (-kv[1], kv[0])))
            fixes = "; ".join(f"{k}: {_REFUSAL_FIX[k]}" for k in by if k in _REFUSAL_FIX)
            parts.append(f"crawl: {sum(by.values())} page(s), none usable ({counted})"
                         + (f" - check {fixes}" if fixes else "") + "; the refusals are listed in the crawl's pages/")
        else:
            parts.append(f"crawl: no page fetched ({crawl.get('stop_reason') or 'nothing queued'}; "
                         f"{crawl.get('pages_total', 0)} page(s) processed by earlier runs gave no pair)")
    cc = st.sources.get("commoncrawl")
    if cc is not None:
        if int(cc.get("records", 0) or 0) and not cc.get("errors"):
            return None
        errs = cc.get("errors") or []
        parts.append(f"commoncrawl: {cc.get('records', 0)} record(s), no pair"
                     + (f"; {len(errs)} input(s) failed, first: {errs[0]}" if errs else ""))
    urls = st.sources.get("urls")
    if urls is not None:
        bad = urls.get("unusable_lines", 0)
        parts.append(f"urls: {urls.get('rows', 0)} row(s), no usable URL"
                     + (f" ({bad} unusable line(s), first: {urls.get('unusable_examples', [''])[0]})" if bad else ""))
    return "nothing collected from any source: " + ("; ".join(parts) or "no source configured")


# ------------------------------------------------------------------ the run
def _start_or_resume(cfg: RunConfig, ds: DatasetLayout) -> RunState:
    runs = ds.runs()
    last = load_state(ds, runs[-1]) if runs else None
    sha = config_sha256(cfg)
    if last is not None and last.state not in ("done",):
        if last.config_sha256 and last.config_sha256 != sha:
            log.warning("run %d did not finish; resuming it with its plan although the config changed", last.run)
        log.info("resuming run %d (stopped at '%s')", last.run, last.state)
        last.error = None
        return last
    st = RunState(run=(runs[-1] + 1) if runs else 1, config_sha256=sha)
    text = dump_config(cfg)
    with atomic_open(ds.run_file(st.run, "config.yaml"), "w") as f:
        f.write(text)
    with atomic_open(ds.config, "w") as f:  # the latest resolved config, next to the output
        f.write(text)
    save_state(ds, st)
    return st


def run(cfg: RunConfig) -> RunState:
    """One incremental, resumable run of ``cfg`` (holds the dataset lock; see the module doc)."""
    from clipcrawl.pipelines import manifest as dset
    from clipcrawl.pipelines.engine import make_engine

    ds = DatasetLayout(cfg.dataset)
    configure_storage(cfg.dataset, cfg.output.storage_options)
    if not ds.remote:
        import os

        os.makedirs(ds.root, exist_ok=True)
    with hold_dataset(ds.root, create=True):  # before anything is listed; the manifest checked, temp files removed
        st = _start_or_resume(cfg, ds)
        try:
            t0 = time.time()
            if st.state == "collect":
                folders = collect(cfg, ds, st)
                st.timings["collect"] = time.time() - t0
                st.sources["folders"] = folders
                st.state = "plan"
                save_state(ds, st)
            if st.state == "plan":
                t1 = time.time()
                plan(cfg, ds, st, st.sources.get("folders", []))
                st.timings["plan"] = time.time() - t1
                failpoint("run.planned")
                st.state = "process"
                save_state(ds, st)
            if st.state == "process":
                t1 = time.time()
                process(cfg, ds, st, make_engine(cfg.engine, **_engine_kw(cfg)))
                st.timings["process"] = st.timings.get("process", 0.0) + time.time() - t1
                st.state = "publish"
                save_state(ds, st)
            if st.state == "publish":
                refs = [ShardRef(ds.shards, n) for n in st.planned_shards]
                st.counts.update(count_statuses(read_parquet(r.parquet, ["status"]) for r in refs))  # one at a time
                st.finished = time.time()
                dset.publish(ds.root, st.run, refs, {"counts": st.counts, "timings": st.timings,
                                                      "config_sha256": st.config_sha256})
                st.state = "done"
                st.error = nothing_collected(st)
                save_state(ds, st)
        except BaseException as e:
            st.error = f"{type(e).__name__}: {e}"
            if not isinstance(e, KeyboardInterrupt):
                save_state(ds, st)
            raise
    return st


def _engine_kw(cfg: RunConfig) -> dict[str, Any]:
    if cfg.engine != "ray":
        return {}
    return {"address": cfg.ray_address, "actors": cfg.ray_actors, "node_ip": cfg.ray_node_ip,
            "gpus_per_actor": cfg.ray_gpus_per_actor}


def process(cfg: RunConfig, ds: DatasetLayout, st: RunState, engine: Any) -> None:
    """The planned shards not yet written, through the shard loop (work files of an earlier attempt are
    not fetched again)."""
    jobs = []
    for name in st.planned_shards:
        work = f"{ds.work_dir(st.run)}/{name}.arrow"
        if is_done(ShardRef(ds.shards, name)):
            remove(work)
            continue
        jobs.append(PlannedShard(name, ShardRef(ds.plan_dir(st.run), name).parquet, work, exists(work)))
    if not jobs:
        return
    log.info("run %d: %d shards to process (%d already scored)", st.run, len(jobs), sum(j.scored for j in jobs))
    p = ProcessPlanned(cfg, ds, st)
    try:
        failures = run_pass(p, jobs, engine)
    finally:
        if p.dedup is not None:
            p.dedup.teardown()
    if failures:
        raise RuntimeError("planned shards could not be read: " + "; ".join(failure_lines(failures)))
