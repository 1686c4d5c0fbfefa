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

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.pipelines import shards as sh
from clipcrawl.pipelines.failpoints import failpoint
from clipcrawl.pipelines.lock import RunLock
from clipcrawl.pipelines.progress import Progress
from clipcrawl.schemas.config import RunConfig, dump_config
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import PAIRS, conform

log = logging.getLogger("clipcrawl.run")


@dataclass
class RunState:
    run: int
    state: str = "collect"  # collect | plan | process | publish | done | failed
    started: float = field(default_factory=time.time)
    finished: float | None = None
    config_sha256: str = ""
    sources: dict[str, Any] = field(default_factory=dict)
    planned_shards: list[str] = field(default_factory=list)
    published_shards: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None


class Dataset:
    """Paths of one dataset directory (local or fsspec URL)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def p(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @property
    def shards(self) -> str:
        return self.p("shards")

    def run_dir(self, run: int) -> str:
        return self.p("runs", f"{run:04d}")

    def runs(self) -> list[int]:
        fs, path = sh.fs_and_path(self.p("runs"))
        if not fs.isdir(path):
            return []
        return sorted(int(x.rstrip("/").rsplit("/", 1)[-1]) for x in fs.ls(path, detail=False)
                      if x.rstrip("/").rsplit("/", 1)[-1].isdigit())

    def load_state(self, run: int) -> RunState | None:
        fs, path = sh.fs_and_path(self.p("runs", f"{run:04d}", "run.json"))
        if not fs.exists(path):
            return None
        return RunState(**sh.read_json(self.p("runs", f"{run:04d}", "run.json")))

    def save_state(self, st: RunState) -> None:
        sh.write_json(asdict(st), self.p("runs", f"{st.run:04d}", "run.json"))


def config_sha256(cfg: RunConfig) -> str:
    return hashlib.sha256(dump_config(cfg).encode()).hexdigest()


# ------------------------------------------------------------------ collect
def collect(cfg: RunConfig, ds: Dataset, st: RunState) -> list[str]:
    """Run every configured source; return the folders holding their pairs Parquet files."""
    folders = []
    src = cfg.sources
    if src.crawl is not None:
        from clipcrawl.crawler.crawl import crawl

        summary = crawl(src.crawl, ds.p("crawl"))
        st.sources["crawl"] = _plain(summary)
        folders.append(ds.p("crawl", "pairs"))
    if src.commoncrawl is not None:
        from clipcrawl.crawler.commoncrawl import read_commoncrawl

        summary = read_commoncrawl(src.commoncrawl, ds.p("commoncrawl"))
        st.sources["commoncrawl"] = _plain(summary)
        folders.append(ds.p("commoncrawl", "pairs"))
    if src.urls is not None:
        from clipcrawl.pipelines.inputs import read_url_list

        table = read_url_list(src.urls)
        sh.write_parquet(conform(table, PAIRS), ds.p("urls", "pairs", "00000.parquet"))
        st.sources["urls"] = {"rows": table.num_rows}
        folders.append(ds.p("urls", "pairs"))
    return folders


def _plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj if isinstance(obj, (int, float, str, bool, type(None), list)) else str(obj)


def _read_pairs(folder: str) -> pa.Table:
    fs, path = sh.fs_and_path(folder)
    if not fs.isdir(path):
        return PAIRS.empty_table()
    files = sorted(f for f in fs.ls(path, detail=False) if f.endswith(".parquet") and "/." not in f)
    tables = [conform(sh.read_parquet(f if "://" not in folder else f"{folder.split('://')[0]}://{f}"), PAIRS,
                      keep_extra=False) for f in files]
    return pa.concat_tables(tables) if tables else PAIRS.empty_table()


# ------------------------------------------------------------------ plan
def planned_keys(ds: Dataset, before_run: int) -> set[str]:
    keys: set[str] = set()
    for run in ds.runs():
        if run >= before_run:
            continue
        for ref in sh.list_shards(ds.p("runs", f"{run:04d}", "plan"), done_only=False):
            keys.update(sh.read_parquet(ref.parquet, ["key"]).column("key").to_pylist())
    return keys


def plan(cfg: RunConfig, ds: Dataset, st: RunState, folders: list[str]) -> list[sh.ShardRef]:
    pairs = pa.concat_tables([_read_pairs(f) for f in folders]) if folders else PAIRS.empty_table()
    seen = planned_keys(ds, st.run)
    keys = pairs.column("key").to_pylist()
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in seen and k not in first:
            first[k] = i
    new = pairs.take(pa.array(sorted(first.values(), key=lambda i: keys[i]), pa.int64()))
    n = cfg.output.samples_per_shard
    start = sh.next_shard_id(ds.shards)
    refs = []
    plan_dir = ds.p("runs", f"{st.run:04d}", "plan")
    for j in range(0, new.num_rows, n):
        ref = sh.ShardRef.of(plan_dir, start + j // n)
        sh.write_parquet(new.slice(j, n), ref.parquet)
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


def count_statuses(tables: list[pa.Table]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tables:
        if t.num_rows == 0:
            continue
        vc = pc.value_counts(t.column("status"))
        for item in vc.to_pylist():
            out[item["values"]] = out.get(item["values"], 0) + item["counts"]
    return out


# ------------------------------------------------------------------ stages
def phase_a_stages(cfg: RunConfig) -> list:
    """Caption rules (before any download), fetch + resize, CLIP score, then the threshold."""
    from clipcrawl.filters.text import FilterCaptions
    from clipcrawl.pipelines.download import FetchImages

    stages = [FilterCaptions(cfg.filters.text), FetchImages(cfg.download)]
    if cfg.filters.clip.enabled:
        from clipcrawl.filters.clip.score import ApplyClipThreshold, ScoreClip

        stages += [ScoreClip(cfg.filters.clip), ApplyClipThreshold(cfg.filters.clip.threshold)]
    return stages


def needs_embeddings(cfg: RunConfig) -> bool:
    """Embeddings are kept on disk when asked for, or when semantic dedup must find them next run."""
    return cfg.filters.clip.enabled and (cfg.filters.clip.save_embeddings
                                         or (cfg.dedup.enabled and cfg.dedup.semantic))


class PhaseA:
    """Planned pairs -> scored samples in a work file (Arrow IPC, with images and embeddings)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.stages = phase_a_stages(cfg)

    def __call__(self, job: tuple[str, str, int, str]) -> str:
        plan_parquet, work_url, run, shard = job
        from clipcrawl.pipelines.failpoints import failpoint
        from clipcrawl.pipelines.stage import ok_mask

        table = initial_samples(sh.read_parquet(plan_parquet), run, shard)
        for stage in self.stages:
            hook = "on_progress" if hasattr(stage, "on_progress") else ("progress" if hasattr(stage, "progress") else None)
            with Progress(f"{stage.name} {shard}", total=int(ok_mask(table).sum()), unit="img",
                          enabled=hook is not None) as bar:
                if hook:
                    setattr(stage, hook, bar.update if hook == "on_progress" else bar)
                table = stage(table)
            failpoint(f"stage.{stage.name}")
        write_ipc(table, work_url)
        return work_url

    def close(self) -> None:
        for s in self.stages:
            s.teardown()


def write_ipc(table: pa.Table, url: str) -> None:
    import pyarrow.ipc as ipc

    with sh.atomic_open(url) as f, ipc.new_file(f, table.schema) as w:
        w.write_table(table)


def read_ipc(url: str) -> pa.Table:
    import pyarrow.ipc as ipc

    fs, path = sh.fs_and_path(url)
    with fs.open(path, "rb") as f:
        return ipc.open_file(pa.BufferReader(f.read())).read_all()


class PhaseB:
    """In shard order: dedup against everything published, then embeddings, shard files, index."""

    def __init__(self, cfg: RunConfig, ds: Dataset) -> None:
        self.cfg, self.ds = cfg, ds
        self.dedup = None
        if cfg.dedup.enabled:
            from clipcrawl.filters.dedup import MarkDuplicates

            self.dedup = MarkDuplicates(cfg.dedup, ds.root, cfg.filters.clip)

    def __call__(self, work_url: str, ref: sh.ShardRef) -> dict[str, Any]:
        table = read_ipc(work_url)
        if self.dedup is not None:
            table = self.dedup(table)
        if needs_embeddings(self.cfg) and "image_embedding" in table.column_names:
            from clipcrawl.filters.clip.embeddings import write_embeddings

            write_embeddings(table, self.ds.p("embeddings"), ref.name, ref.name)
        ext = {"jpg": "jpg", "png": "png", "webp": "webp"}[self.cfg.download.encode_format]
        stats = sh.write_shard(ref, table, output_format=self.cfg.output.output_format, image_ext=ext)
        if self.dedup is not None:
            self.dedup.commit()
        fs, path = sh.fs_and_path(work_url)
        fs.rm(path)
        return stats


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
    with sh.atomic_open(ds.p("runs", f"{st.run:04d}", "config.yaml"), "w") as f:
        f.write(text)
    with sh.atomic_open(ds.p("config.yaml"), "w") as f:  # the latest resolved config, next to the output
        f.write(text)
    ds.save_state(st)
    return st


def run(cfg: RunConfig) -> RunState:
    """One incremental, resumable run of ``cfg`` (holds the dataset lock; see the module doc)."""
    from clipcrawl.pipelines import dataset as dset
    from clipcrawl.pipelines.engine import make_engine

    ds = Dataset(cfg.dataset)
    sh.configure_storage(cfg.dataset, cfg.output.storage_options)
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
                refs = [sh.ShardRef(ds.shards, n) for n in st.planned_shards]
                st.counts.update(count_statuses([sh.read_parquet(r.parquet, ["status"]) for r in refs]))
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
        ref = sh.ShardRef(ds.shards, name)
        if sh.is_done(ref):
            _rm(f"{work_dir}/{name}.arrow")
            continue
        todo.append(ref)
        work = f"{work_dir}/{name}.arrow"
        if not _exists(work):
            jobs.append((sh.ShardRef(plan_dir, name).parquet, work, st.run, name))
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
    fs, path = sh.fs_and_path(url)
    return fs.exists(path)


def _rm(url: str) -> None:
    fs, path = sh.fs_and_path(url)
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
