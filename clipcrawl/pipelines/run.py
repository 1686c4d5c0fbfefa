"""``clipcrawl run CONFIG.yaml``: sources -> download -> rules -> CLIP -> dedup -> write, incrementally.

A run is numbered (``runs/NNNN/``) and moves through states recorded in ``run.json``:

1. **collect** - each configured source adds pairs under the dataset (the crawl frontier continues
   where the last run stopped; Common Crawl inputs already read are skipped).
2. **plan** - pairs whose key no earlier run planned, sorted by key, cut into shards of
   ``samples_per_shard`` with ids after the last published shard. The plan is written once,
   atomically, so a resumed run processes exactly the same shards.
3. **process** - per shard, phase A (parallel-safe: caption rules, fetch + resize, CLIP score,
   threshold) writes a work file; phase B (in shard order: dedup against everything published,
   embeddings, shard files with the stats file last, dedup index commit) publishes it.
4. **publish** - samples.parquet and manifest.json are updated; ``run.json`` says ``done``.

Killed at any point, the next invocation resumes the unfinished run and ends with the same keys
and statuses as an uninterrupted run. A lock keeps overlapping (cron) runs apart.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.failpoints import failpoint
from clipcrawl.base.progress import Progress
from clipcrawl.base.shardfiles import ShardRef, is_done
from clipcrawl.base.storage import atomic_open, configure_storage, fs_and_path, read_parquet
from clipcrawl.pipelines.lock import RunLock
from clipcrawl.pipelines.phases import PhaseA, PhaseB
from clipcrawl.pipelines.plan import collect, plan
from clipcrawl.pipelines.runstate import Dataset, RunState, config_sha256
from clipcrawl.schemas.config import RunConfig, dump_config

__all__ = ["Dataset", "RunState", "clean_temp", "count_statuses", "process", "run"]

log = logging.getLogger("clipcrawl.run")


def count_statuses(tables: list[pa.Table]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tables:
        if t.num_rows == 0:
            continue
        vc = pc.value_counts(t.column("status"))
        for item in vc.to_pylist():
            out[item["values"]] = out.get(item["values"], 0) + item["counts"]
    return out


# ------------------------------------------------------------------ the run
def _start_or_resume(cfg: RunConfig, ds: Dataset) -> RunState:
    runs = ds.runs()
    last = ds.load_state(runs[-1]) if runs else None
    sha = config_sha256(cfg)
    if last is not None and last.state not in ("done",):
        if last.config_sha256 and last.config_sha256 != sha:
            log.warning("run %d did not finish; resuming it with its plan although the config changed", last.run)
        log.info("resuming run %d (stopped at '%s')", last.run, last.state)
        last.error = None
        return last
    st = RunState(run=(runs[-1] + 1) if runs else 1, config_sha256=sha)
    text = dump_config(cfg)
    with atomic_open(ds.p("runs", f"{st.run:04d}", "config.yaml"), "w") as f:
        f.write(text)
    with atomic_open(ds.p("config.yaml"), "w") as f:  # the latest resolved config, next to the output
        f.write(text)
    ds.save_state(st)
    return st


def run(cfg: RunConfig) -> RunState:
    """One incremental, resumable run of ``cfg`` (holds the dataset lock; see the module doc)."""
    from clipcrawl.pipelines import dataset as dset
    from clipcrawl.pipelines.engine import make_engine

    ds = Dataset(cfg.dataset)
    configure_storage(cfg.dataset, cfg.output.storage_options)
    if "://" not in ds.root:
        import os

        os.makedirs(ds.root, exist_ok=True)
    with RunLock(ds.root):
        clean_temp(ds)
        st = _start_or_resume(cfg, ds)
        try:
            t0 = time.time()
            if st.state == "collect":
                folders = collect(cfg, ds, st)
                st.timings["collect"] = time.time() - t0
                st.sources["folders"] = folders
                st.state = "plan"
                ds.save_state(st)
            if st.state == "plan":
                t1 = time.time()
                plan(cfg, ds, st, st.sources.get("folders", []))
                st.timings["plan"] = time.time() - t1
                failpoint("run.planned")
                st.state = "process"
                ds.save_state(st)
            if st.state == "process":
                t1 = time.time()
                process(cfg, ds, st, make_engine(cfg.engine, **_engine_kw(cfg)))
                st.timings["process"] = st.timings.get("process", 0.0) + time.time() - t1
                st.state = "publish"
                ds.save_state(st)
            if st.state == "publish":
                refs = [ShardRef(ds.shards, n) for n in st.planned_shards]
                st.counts.update(count_statuses([read_parquet(r.parquet, ["status"]) for r in refs]))
                st.finished = time.time()
                dset.publish(ds.root, st.run, refs, {"counts": st.counts, "timings": st.timings,
                                                      "config_sha256": st.config_sha256})
                st.state = "done"
                ds.save_state(st)
        except BaseException as e:
            st.error = f"{type(e).__name__}: {e}"
            if not isinstance(e, KeyboardInterrupt):
                ds.save_state(st)
            raise
    return st


def _engine_kw(cfg: RunConfig) -> dict[str, Any]:
    if cfg.engine != "ray":
        return {}
    return {"address": cfg.ray_address, "actors": cfg.ray_actors, "node_ip": cfg.ray_node_ip}


def process(cfg: RunConfig, ds: Dataset, st: RunState, engine: Any) -> None:
    plan_dir = ds.p("runs", f"{st.run:04d}", "plan")
    work_dir = ds.p("runs", f"{st.run:04d}", "work")
    todo, jobs = [], []
    for name in st.planned_shards:
        ref = ShardRef(ds.shards, name)
        if is_done(ref):
            _rm(f"{work_dir}/{name}.arrow")
            continue
        todo.append(ref)
        work = f"{work_dir}/{name}.arrow"
        if not _exists(work):
            jobs.append((ShardRef(plan_dir, name).parquet, work, st.run, name))
    if not todo:
        return
    phase_b = PhaseB(cfg, ds)
    log.info("run %d: %d shards to process (%d already scored)", st.run, len(todo), len(todo) - len(jobs))
    ready = iter(engine.map_ordered(PhaseA(cfg), jobs))
    pending = {j[1] for j in jobs}
    with Progress("shards", total=len(todo), unit="shard") as bar:
        for ref in todo:
            work = f"{work_dir}/{ref.name}.arrow"
            if work in pending:
                got = next(ready)
                assert got == work, f"engine returned {got}, expected {work}"
            stats = phase_b(work, ref)
            st.published_shards.append(ref.name)
            ds.save_state(st)
            bar.update(1, kept=stats["successes"], last=f"{ref.name}:{stats['successes']}/{stats['count']}")
    if phase_b.dedup is not None:
        phase_b.dedup.teardown()


def _exists(url: str) -> bool:
    fs, path = fs_and_path(url)
    return fs.exists(path)


def _rm(url: str) -> None:
    fs, path = fs_and_path(url)
    if fs.exists(path):
        fs.rm(path)


def clean_temp(ds: Dataset) -> int:
    """Remove temp files a killed run left behind (``.NAME.tmp-XXXX``; readers never see them)."""
    if "://" in ds.root:
        return 0  # object stores publish whole objects: nothing partial is left
    import glob
    import os

    n = 0
    for pattern in (".*.tmp-*", "*/.*.tmp-*", "*/*/.*.tmp-*", "*/*/*/.*.tmp-*"):
        for path in glob.glob(os.path.join(ds.root, pattern)):
            if os.path.isfile(path):
                os.remove(path)
                n += 1
    if n:
        log.info("removed %d temp files left by an interrupted run", n)
    return n
