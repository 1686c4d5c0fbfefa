"""``clipcrawl verify``: prove that a dataset on disk is what the project promises.

Works on a dataset (``shards/``, ``samples/``, ``manifest.json``, ``embeddings/``) or a plain shard
folder (``clipcrawl download`` / img2dataset output), local or any fsspec URL. Per shard
(:func:`clipcrawl.pipelines.verify_shard.check_shard`): Parquet, statuses, stats, the samples in
the tar / folder / image column, ``samples/NNNNN.parquet``. Across the dataset: keys unique;
``manifest.json`` shard list, per-shard counts, run entries and totals; ``shards/sizes.json`` against
the tars; the embeddings (clip-retrieval layout) against the metadata and the success rows; the kNN index
(``clipcrawl index``) holds exactly the kept samples' vectors (a vector of a row that is not success
now, or a kept row with an indexed embedding part but no vector, is a stale index: the statuses
changed after indexing; rerun ``clipcrawl index``); no temp file of an unfinished write
(``.NAME.tmp-XXXXXXXX``) visible.

Findings name the file. Errors fail the check; notes (finished shards an interrupted run has not
published yet, shards without stats) are states the next run resolves.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.shardfiles import STATS_SUFFIX, ShardRef, list_shards
from clipcrawl.base.storage import fs_and_path, is_local, read_json
from clipcrawl.pipelines.verify_shard import Finding, ShardResult, check_shard, examples
from clipcrawl.schemas.config import ConfigError

#: temp names of :func:`clipcrawl.base.storage.atomic_open` (``.NAME.tmp-XXXXXXXX``) and of the
#: files output format's folder (``NNNNN.tmp-XXXXXXXX``)
TEMP_RE = re.compile(r"^(\..+|\d+)\.tmp-[0-9a-f]{8}$")


@dataclass
class VerifyReport:
    root: str
    kind: str  # "dataset" or "plain" (a folder of shards)
    shards: int = 0
    rows: int = 0
    samples: int = 0  # success rows
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def clean(self) -> bool:
        return not self.errors

    def add(self, code: str, path: str, message: str, severity: str = "error") -> None:
        self.findings.append(Finding(code, path, message, severity))

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "kind": self.kind, "clean": self.clean, "shards": self.shards,
                "rows": self.rows, "samples": self.samples, "seconds": round(self.seconds, 3),
                "findings": [f.to_dict() for f in self.findings]}

    def summary(self) -> str:
        head = "clean" if self.clean else f"{len(self.errors)} finding(s)"
        return (f"{self.root}: {head}: {self.shards} shards, {self.rows:,} rows, {self.samples:,} samples "
                f"verified in {self.seconds:.2f}s")


def verify(path: str | os.PathLike[str], workers: int = 8) -> VerifyReport:
    """Check every invariant of the dataset or shard folder at ``path``.

    Raises :class:`ConfigError` when ``path`` is neither (missing, empty, not a folder of shards).
    """
    t0 = time.monotonic()
    root = os.fspath(path).rstrip("/")
    layout = _layout(root)
    rep = VerifyReport(root, "plain" if layout.plain else "dataset")
    manifest = _manifest(layout, rep)
    refs = list_shards(layout.shards)
    _unfinished(layout, refs, rep)
    listed = manifest.get("shards", {}) if manifest else {}

    def one(ref: ShardRef) -> ShardResult:
        entry = listed.get(ref.name)
        if entry is None:
            return check_shard(ref)
        return check_shard(ref, entry.get("run") if isinstance(entry, dict) else None,
                           layout.samples_file(ref.name))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(one, refs))
    for r in results:
        rep.findings.extend(r.findings)
        rep.rows += r.rows
        rep.samples += r.successes
    rep.shards = len(results)
    _unique_keys(results, rep)
    by_name = {r.ref.name: r for r in results}
    if manifest is not None:
        _check_manifest(layout, manifest, by_name, rep)
    _check_sizes(layout, manifest, by_name, rep)
    emb_keys = _check_embeddings(layout, results, rep) if not layout.plain else None
    _check_index(layout, results, emb_keys, rep)
    _temp_files(layout, rep)
    rep.seconds = time.monotonic() - t0
    return rep


# ------------------------------------------------------------------ what is at path
def _layout(root: str) -> DatasetLayout:
    fs, p = fs_and_path(root)
    if not fs.isdir(p):
        raise ConfigError(f"{root}: not a folder (fix: point at a dataset or a folder of NNNNN shards)")
    layout = DatasetLayout.of(root)
    if layout.plain and list_shards(root, done_only=False):
        return layout
    if not layout.plain and (fs.isdir(f"{p}/shards") or fs.exists(f"{p}/manifest.json")):
        return layout
    raise ConfigError(f"{root}: not a dataset (no shards/, no manifest.json) nor a folder of NNNNN.parquet "
                      "shards (fix: point at the folder `clipcrawl run`/`download` wrote)")


def _manifest(layout: DatasetLayout, rep: VerifyReport) -> dict[str, Any] | None:
    if layout.plain:
        return None
    fs, p = fs_and_path(layout.manifest)
    if not fs.exists(p):
        if list_shards(layout.shards):
            rep.add("manifest-missing", layout.manifest, "no manifest: the shards are not published "
                    "(a run was interrupted before its first publish: rerun it)", "note")
        return None
    try:
        data = read_json(layout.manifest)
    except Exception as e:  # noqa: BLE001
        rep.add("manifest-unreadable", layout.manifest, f"cannot read: {type(e).__name__}: {e}")
        return None
    if not isinstance(data, dict) or data.get("format") != "clipcrawl-dataset" \
            or not isinstance(data.get("shards"), dict) or not isinstance(data.get("runs"), list):
        rep.add("manifest-unreadable", layout.manifest, "not a clipcrawl manifest (format, shards, runs)")
        return None
    return data


def _unfinished(layout: DatasetLayout, refs: list[ShardRef], rep: VerifyReport) -> None:
    """Shards with a Parquet but no stats: a run still writing them, or interrupted."""
    done = {r.name for r in refs}
    pending = [r.name for r in list_shards(layout.shards, done_only=False) if r.name not in done]
    if pending:
        rep.add("shard-unfinished", layout.shards, f"{len(pending)} shards have no {STATS_SUFFIX} (not done; "
                f"a rerun finishes them): {examples(pending)}", "note")


def _unique_keys(results: list[ShardResult], rep: VerifyReport) -> None:
    seen: dict[str, str] = {}
    dups: dict[str, list[str]] = {}
    for r in results:
        for k in set(r.keys):
            if k in seen:
                dups.setdefault(k, [seen[k]]).append(r.ref.name)
            else:
                seen[k] = r.ref.name
    if dups:
        pairs = Counter(tuple(v) for v in dups.values())
        where = "; ".join(f"shards {'+'.join(s)}: {n}" for s, n in sorted(pairs.items())[:5])
        rep.add("duplicate-key", results[0].ref.root, f"{len(dups)} keys appear in more than one shard "
                f"({where}): {examples(dups)}")


# ------------------------------------------------------------------ manifest and sizes.json
def _check_manifest(layout: DatasetLayout, manifest: dict[str, Any], by_name: dict[str, ShardResult],
                    rep: VerifyReport) -> None:
    url = layout.manifest
    shards: dict[str, Any] = manifest["shards"]
    bad = []
    for name, entry in shards.items():
        r = by_name.get(name)
        if r is None:
            rep.add("manifest-shard-missing", url, f"lists shard {name} but {layout.shards}/{name}{STATS_SUFFIX} "
                    "does not exist")
            continue
        if not isinstance(entry, dict):
            bad.append(f"{name}: entry is not an object")
            continue
        for k, truth in (("samples_total", r.rows), ("samples_kept", r.successes)):
            if entry.get(k) != truth:
                bad.append(f"{name}: {k} {entry.get(k)!r} (Parquet: {truth})")
        if r.tar_bytes is not None and entry.get("tar_bytes") not in (None, r.tar_bytes):
            bad.append(f"{name}: tar_bytes {entry.get('tar_bytes')!r} (tar: {r.tar_bytes})")
    for run in manifest["runs"]:
        names = run.get("shards", []) if isinstance(run, dict) else []
        unknown = [n for n in names if n not in shards]
        if unknown:
            bad.append(f"run {run.get('run')}: shards {examples(unknown)} not in the shard list")
        mine = [shards[n] for n in names if isinstance(shards.get(n), dict)]
        for n in names:
            if isinstance(shards.get(n), dict) and shards[n].get("run") != run.get("run"):
                bad.append(f"shard {n}: run {shards[n].get('run')!r}, listed by run {run.get('run')!r}")
        for k in ("samples_total", "samples_kept"):
            if k in run and run[k] != sum(s.get(k, 0) for s in mine):
                bad.append(f"run {run.get('run')}: {k} {run[k]!r} (its shards: {sum(s.get(k, 0) for s in mine)})")
    entries = [s for s in shards.values() if isinstance(s, dict)]
    totals = manifest.get("totals", {})
    truth = {"runs": len(manifest["runs"]), "shards": len(shards),
             "samples_total": sum(s.get("samples_total", 0) for s in entries),
             "samples_kept": sum(s.get("samples_kept", 0) for s in entries)}
    bad += [f"totals.{k} {totals.get(k)!r} ({v})" for k, v in truth.items() if totals.get(k) != v]
    if bad:
        rep.add("manifest-mismatch", url, f"{len(bad)} disagreements: " + "; ".join(bad[:8]) +
                (f" (+{len(bad) - 8} more)" if len(bad) > 8 else ""))
    unpublished = sorted(set(by_name) - set(shards), key=int)
    if unpublished:
        rep.add("shard-unpublished", layout.shards, f"{len(unpublished)} finished shards are not in the manifest "
                f"(an interrupted run publishes them when rerun): {examples(unpublished)}", "note")
    fs, sp = fs_and_path(layout.samples)
    if fs.isdir(sp):
        stray = [n for n in (f.rsplit("/", 1)[-1] for f in fs.ls(sp, detail=False))
                 if n.endswith(".parquet") and n[:-8].isdigit() and n[:-8] not in shards]
        if stray:
            known = [n for n in stray if n[:-8] in by_name]
            rep.add("samples-unlisted", layout.samples, f"{len(stray)} samples files of shards the manifest does "
                    f"not list: {examples(stray)}", "note" if len(known) == len(stray) else "error")


def _check_sizes(layout: DatasetLayout, manifest: dict[str, Any] | None, by_name: dict[str, ShardResult],
                 rep: VerifyReport) -> None:
    url = layout.sizes
    fs, p = fs_and_path(url)
    if not fs.exists(p):
        if manifest and manifest["shards"] and any(r.tar_samples is not None for r in by_name.values()):
            rep.add("sizes-missing", url, "missing: open_clip_train needs --train-num-samples without it")
        return
    try:
        sizes = read_json(url)
        assert isinstance(sizes, dict)
    except Exception as e:  # noqa: BLE001
        rep.add("sizes-unreadable", url, f"cannot read: {type(e).__name__}: {e}")
        return
    bad = []
    for tar, n in sizes.items():
        r = by_name.get(tar.removesuffix(".tar"))
        if r is None:
            bad.append(f"{tar}: no such finished shard")
        elif r.tar_samples is not None and n != r.tar_samples:
            bad.append(f"{tar}: {n!r} (tar: {r.tar_samples} samples)")
    listed = manifest["shards"] if manifest else {}
    lost = [f"{n}.tar" for n in listed if n in by_name and by_name[n].tar_samples is not None
            and f"{n}.tar" not in sizes]
    if lost:
        bad.append(f"no entry for {examples(lost)}")
    if bad:
        rep.add("sizes-mismatch", url, "disagrees with the tars: " + "; ".join(bad[:8]) +
                (f" (+{len(bad) - 8} more)" if len(bad) > 8 else ""))


# ------------------------------------------------------------------ embeddings, temp files
def _check_embeddings(layout: DatasetLayout, results: list[ShardResult],
                      rep: VerifyReport) -> dict[str, list[str]] | None:
    """Check ``embeddings/``; returns each part's keys (None: no readable embeddings folder)."""
    from clipcrawl.base.storage import read_parquet
    from clipcrawl.pipelines.manifest import check_embeddings

    url = layout.embeddings
    fs, p = fs_and_path(url)
    if not fs.isdir(p):
        return None
    try:
        emb = check_embeddings(url)
    except Exception as e:  # noqa: BLE001
        rep.add("embeddings-mismatch", url, f"{type(e).__name__}: {e}")
        return None
    part_keys: dict[str, list[str]] = {}
    success = set().union(*(r.success_keys for r in results)) if results else set()
    every = {k for r in results for k in r.keys}
    seen: Counter[str] = Counter()
    for part in emb.parts:
        meta = f"{url}/metadata/metadata_{part}.parquet"
        try:
            keys = read_parquet(meta, ["key"]).column("key").to_pylist()
        except Exception as e:  # noqa: BLE001
            rep.add("embeddings-mismatch", meta, f"no key column: {type(e).__name__}: {e}")
            continue
        part_keys[part] = keys
        seen.update(keys)
        unknown = [k for k in keys if k not in success and k not in every]
        if unknown:
            rep.add("embeddings-unknown-key", meta, f"{len(unknown)} rows whose key is no row of the dataset: "
                    f"{examples(map(str, unknown))}")
        dropped = [k for k in keys if k not in success and k in every]
        if dropped:  # a later decision (dataset-wide cut, dedup) dropped them; kept so a re-cut needs no rescoring
            rep.add("embeddings-dropped-key", meta, f"{len(dropped)} rows of samples a later pass dropped: "
                    f"{examples(map(str, dropped))}", severity="note")
    dups = [k for k, n in seen.items() if n > 1]
    if dups:
        rep.add("embeddings-duplicate-key", url, f"{len(dups)} keys have more than one embedding: {examples(dups)}")
    return part_keys


def _check_index(layout: DatasetLayout, results: list[ShardResult], emb_keys: dict[str, list[str]] | None,
                 rep: VerifyReport) -> None:
    """``index/`` (``clipcrawl index``) against the current statuses: only kept samples are searchable.

    Its metadata (the key of every vector, in id order) is compared with the success rows of the
    shards: a vector of a row that is not success now, or a success row of an indexed embeddings
    part whose vector the index lacks, means the statuses changed after indexing (a re-cut, dedup or
    curate): a finding (search filters such rows at query time, but the index is out of date).
    Embedding parts not indexed yet (scored after the last ``clipcrawl index``) are a note."""
    from clipcrawl.base.storage import read_parquet
    from clipcrawl.pipelines.inspect.index import INDEX_DIR, STATE_FILE, read_state

    folder = layout.p(INDEX_DIR)
    state_url = f"{folder}/{STATE_FILE}"
    try:
        state = read_state(folder)
    except Exception as e:  # noqa: BLE001
        rep.add("index-unreadable", state_url, f"cannot read: {type(e).__name__}: {e}")
        return
    if state is None:
        return
    parts = [p for p in state.get("parts", []) if isinstance(p, dict) and "part" in p]
    indexed: dict[str, list[str]] = {}
    for p in parts:
        meta = f"{folder}/metadata/metadata_{p['part']}.parquet"
        try:
            indexed[p["part"]] = read_parquet(meta, ["key"]).column("key").to_pylist()
        except Exception as e:  # noqa: BLE001
            rep.add("index-unreadable", meta, f"cannot read the keys of the indexed vectors: {type(e).__name__}: "
                    f"{e} (rerun clipcrawl index)")
            return
    n = sum(len(k) for k in indexed.values())
    if n != state.get("ntotal"):
        rep.add("index-incomplete", state_url, f"ntotal {state.get('ntotal')!r}, its metadata has {n} rows "
                "(an interrupted write: rerun clipcrawl index)")
    success = set().union(*(r.success_keys for r in results)) if results else set()
    in_index = {k for keys in indexed.values() for k in keys}
    not_kept = sorted(k for k in in_index if k not in success)
    if not_kept:
        rep.add("index-stale", folder, f"{len(not_kept)} of {n} indexed vectors are of samples that are not "
                f"success now (statuses changed after clipcrawl index: a re-cut, dedup or curate; rerun "
                f"clipcrawl index): {examples(not_kept)}")
    if emb_keys is None:
        return
    lacking = sorted(k for part, keys in emb_keys.items() if part in indexed
                     for k in keys if k in success and k not in in_index)
    if lacking:
        rep.add("index-stale", folder, f"{len(lacking)} kept samples of indexed embedding parts have no vector "
                f"in the index (they became success after clipcrawl index; rerun it): {examples(lacking)}")
    behind = sorted(part for part, keys in emb_keys.items() if part not in indexed
                    and any(k in success for k in keys))
    if behind:
        rep.add("index-behind", folder, f"{len(behind)} embedding parts with kept samples are not indexed yet "
                f"(scored after clipcrawl index; rerun it to search them): {examples(behind)}", "note")


def _temp_files(layout: DatasetLayout, rep: VerifyReport) -> None:
    fs, p = fs_and_path(layout.root)
    if is_local(fs):
        found = [os.path.join(d, n) for d, dirs, files in os.walk(p) for n in (*dirs, *files) if TEMP_RE.match(n)]
    else:
        found = [f for f in fs.find(p, withdirs=True) if TEMP_RE.match(f.rstrip("/").rsplit("/", 1)[-1])]
    for f in sorted(found)[:20]:
        rep.add("temp-file", f, "temp file of an unfinished write is visible (an interrupted writer left it; "
                "delete it)")
    if len(found) > 20:
        rep.add("temp-file", layout.root, f"{len(found) - 20} more temp files")
