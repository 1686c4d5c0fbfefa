"""``clipcrawl export DIR --format mds|litdata|hf|datacomp-uids --out OUT``: the kept samples of a dataset in
the formats of other loaders (MosaicML streaming, LitData, Hugging Face ``datasets``/Hub, DataComp).

The source is held shared (``hold_dataset(shared=True)``: a ``score``/``dedup`` rewriting it waits, or this
exits 3) from before anything is listed to the last write. Everything unusable (no such columns, no uids, a
missing writer library, an OUT holding something else) is exit 2 before the first write. The samples move
one input shard at a time (:mod:`.source`), so memory holds one shard's metadata and a few hundred images.

**Resume.** ``OUT/.clipcrawl-export.json`` records the format, the columns and a fingerprint of the source
shards. A rerun with the same record skips the parts already complete (hf, mds: one part per source shard,
each published atomically); with a different one (the source was rescored/deduplicated since, other
columns) it removes the earlier export's files and redoes them. Top-level indexes/cards are written last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from clipcrawl.base.failpoints import failpoint
from clipcrawl.base.progress import Progress, log
from clipcrawl.base.storage import atomic_open, exists, fs_and_path, is_local, read_json
from clipcrawl.schemas.config import ConfigError
from clipcrawl.schemas.export import FORMATS

STATE = ".clipcrawl-export.json"


@dataclass
class ExportResult:
    format: str
    out: str
    samples: int
    shards: int
    skipped_shards: int = 0  # complete from an earlier run
    missing_in_tar: int = 0
    columns: list[str] = field(default_factory=list)
    hub_commit: str | None = None


def _fingerprint(dataset: str, fmt: str, columns: list[str]) -> str:
    from clipcrawl.pipelines.inspect.index import shard_fingerprints

    data = json.dumps({"format": fmt, "columns": columns, "shards": shard_fingerprints(dataset)}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def _prepare_out(out: str, fmt: str, record: dict, sink) -> None:
    """Resume, redo or refuse: see the module doc. Exit 2 for an OUT that holds anything else."""
    if fmt == "datacomp-uids":
        return
    state = f"{out}/{STATE}"
    fs, path = fs_and_path(out)
    _remove_temp(out)
    if exists(state, fresh=True):
        try:
            old = read_json(state)
        except (OSError, ValueError):
            old = {}
        if old == record:
            return
        if old.get("format") != fmt:
            raise ConfigError(f"{out} holds a clipcrawl export in format {old.get('format')!r}: choose another --out")
        log.info("export: %s was exported from other inputs or columns: redoing it", out)
        sink.clear()
    elif fs.isdir(path) and [p for p in fs.ls(path, detail=False) if not p.rstrip("/").rsplit("/", 1)[-1].startswith(".lock")]:
        raise ConfigError(f"--out {out} is not empty and holds no clipcrawl export: choose an empty or new folder")
    with atomic_open(state, "w") as f:
        json.dump(record, f, indent=2)


def _remove_temp(out: str) -> None:
    """What a killed export left unpublished in a local OUT (``.NAME.tmp-XXXX`` files and folders)."""
    import os
    import shutil

    fs, path = fs_and_path(out)
    if not is_local(fs) or not os.path.isdir(path):
        return
    for sub in (path, os.path.join(path, "data")):
        if not os.path.isdir(sub):
            continue
        for name in os.listdir(sub):
            if name.startswith(".") and ".tmp-" in name:
                p = os.path.join(sub, name)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def export(dataset: str, fmt: str, out: str, columns: Sequence[str] | None = None, *,
           push_to_hub: str | None = None, private: bool = False, mds_python: str | None = None,
           chunk_mb: int = 64) -> ExportResult:
    """Write the kept samples of ``dataset`` to ``out`` in ``fmt`` (see the module doc)."""
    from clipcrawl.pipelines.lock import check_manifest, hold_dataset

    dataset, out = dataset.rstrip("/"), out.rstrip("/")
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if chunk_mb < 1:
        raise ConfigError(f"--chunk-mb must be >= 1, got {chunk_mb}")
    if push_to_hub and fmt != "hf":
        raise ConfigError("--push-to-hub goes with --format hf")
    src_fs, src_path = fs_and_path(dataset)
    if not src_fs.isdir(src_path):
        raise ConfigError(f"{dataset}: no such dataset folder")
    if fs_and_path(out)[1].startswith(src_path.rstrip("/") + "/") or fs_and_path(out)[1] == src_path:
        raise ConfigError(f"--out {out} is inside the dataset {dataset}: choose a folder outside it")
    with hold_dataset(dataset, shared=True):
        check_manifest(dataset)
        return _export(dataset, fmt, out, columns, push_to_hub, private, mds_python, chunk_mb)


def _export(dataset: str, fmt: str, out: str, columns: Sequence[str] | None, push_to_hub: str | None,
            private: bool, mds_python: str | None, chunk_mb: int) -> ExportResult:
    from clipcrawl.pipelines.export.source import plan_source

    plan = plan_source(dataset, columns)
    res = ExportResult(fmt, out, 0, len(plan.shards), columns=list(plan.columns))
    if fmt == "datacomp-uids":
        from clipcrawl.pipelines.export.datacomp import check_uids, uid_path, write_uids

        check_uids(plan, dataset)
        with Progress("export datacomp-uids", total=plan.total, unit="samples") as bar:
            res.samples = write_uids(plan, out, bar)
        res.out = uid_path(out)
        return res
    if fmt == "hf":
        from clipcrawl.pipelines.export.hf import HFSink

        sink = HFSink(out, plan)
    elif fmt == "mds":
        from clipcrawl.pipelines.export.mds import MDSSink

        sink = MDSSink(out, plan, mds_python, size_limit=f"{chunk_mb}mb")
    else:
        from clipcrawl.pipelines.export.lit import LitDataSink

        sink = LitDataSink(out, plan, chunk_bytes=f"{chunk_mb}MB")
    if push_to_hub:
        try:
            import huggingface_hub  # noqa: F401
        except ImportError:
            raise ConfigError("--push-to-hub needs huggingface_hub (pip install 'clipcrawl[export]')") from None
    sink.check()  # everything unusable is found before OUT is touched
    record = {"format": fmt, "source": dataset, "columns": plan.columns,
              "fingerprint": _fingerprint(dataset, fmt, plan.columns)}
    from clipcrawl.pipelines.lock import hold_dataset

    with hold_dataset(out, create=True, check=False):  # OUT: one export at a time
        _prepare_out(out, fmt, record, sink)
        sink.begin()
        _write(plan, sink, res)
    if push_to_hub:
        from clipcrawl.pipelines.export.hf import push_to_hub as push

        res.hub_commit = push(out, push_to_hub, private=private)
    return res


def _write(plan, sink, res: ExportResult) -> None:
    from clipcrawl.pipelines.export.source import iter_samples

    fmt = sink.name
    missing = [0]
    try:
        with Progress(f"export {fmt}", total=plan.total, unit="samples") as bar:
            for ref in plan.shards:
                if sink.done(ref):
                    res.skipped_shards += 1
                    bar.update(plan.kept.get(ref.name, 0))
                    continue

                def counted(it):
                    for s in it:
                        failpoint("export.sample")  # crash tests: a kill in the middle of a part
                        bar.update(1)
                        yield s

                sink.write(ref, counted(iter_samples(ref, plan.columns, missing)))
            sink.finish()
    except BaseException:
        sink.abort()
        raise
    res.samples = plan.total - missing[0]
    res.missing_in_tar = missing[0]
    if missing[0]:
        log.warning("export: %d kept rows had no image in their tar and were left out", missing[0])
