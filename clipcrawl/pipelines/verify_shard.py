"""One shard's invariants, for ``clipcrawl verify`` (:mod:`clipcrawl.pipelines.verify` does the dataset).

A finished shard ``NNNNN`` must hold: a readable Parquet whose statuses come from the closed set and
whose non-success rows carry an ``error_message``; keys unique within it; a ``_stats.json`` whose
counters agree with the Parquet; and exactly the success rows as samples -- in the tar
(``<key>.<img>``, ``<key>.txt``, ``<key>.json``, consecutive, the JSON and text agreeing with the
row), in the ``NNNNN/`` folder (output_format files) or in the image column (output_format parquet).
The tar is read by headers (seeking over image data); only the small ``.json``/``.txt`` members are
read. When the shard is published, ``samples/NNNNN.parquet`` must equal its success rows.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.shardfiles import IMAGE_EXTS, ShardRef, split_member
from clipcrawl.base.storage import fs_and_path, read_json, read_parquet
from clipcrawl.schemas.status import SAMPLE_STATUSES, Status

SUCCESS = Status.SUCCESS.value
#: how many example keys a finding names
EXAMPLES = 3
#: what a sample of a shard holds besides its image
TEXT_EXTS = ("txt", "json")


@dataclass(frozen=True)
class Finding:
    """One broken invariant. ``severity``: ``error`` fails verify; ``note`` is reported only (a state
    that a rerun resolves, e.g. finished shards an interrupted run has not published yet)."""

    code: str
    path: str
    message: str
    severity: str = "error"

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message, "severity": self.severity}


@dataclass
class ShardResult:
    ref: ShardRef
    rows: int = 0
    successes: int = 0
    keys: list[str] = field(default_factory=list)  # every row's key
    success_keys: set[str] = field(default_factory=set)
    tar_samples: int | None = None  # samples (keys) in the tar; None: no readable tar
    tar_bytes: int | None = None
    findings: list[Finding] = field(default_factory=list)

    def add(self, code: str, path: str, message: str, severity: str = "error") -> None:
        self.findings.append(Finding(code, path, message, severity))


def examples(keys: Iterable[str]) -> str:
    ks = sorted(keys)
    more = f" (+{len(ks) - EXAMPLES} more)" if len(ks) > EXAMPLES else ""
    return ", ".join(ks[:EXAMPLES]) + more


def check_shard(ref: ShardRef, published_run: int | None = None, samples_file: str | None = None) -> ShardResult:
    """Every invariant of one finished shard; ``samples_file``/``published_run``: the shard is in the
    manifest (as that run) and ``samples_file`` must equal its success rows."""
    res = ShardResult(ref)
    try:
        table = read_parquet(ref.parquet)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a finding, never a crash
        res.add("parquet-unreadable", ref.parquet, f"cannot read: {type(e).__name__}: {e}")
        return res
    missing = [c for c in ("key", "status") if c not in table.column_names]
    if missing:
        res.add("parquet-columns", ref.parquet, f"no {', '.join(missing)} column")
        return res
    _check_rows(res, table)
    _check_stats(res, table)
    _check_scores(res, table)
    rows = _success_rows(table)
    fs, tar = fs_and_path(ref.tar)
    if fs.exists(tar):
        _check_tar(res, rows)
    elif fs.isdir(fs_and_path(ref.path(""))[1]):
        _check_folder(res, rows)
    else:
        _check_column(res, table)
    if samples_file is not None:
        _check_samples(res, table, published_run, samples_file)
    return res


# ------------------------------------------------------------------ rows and stats
def _check_rows(res: ShardResult, table: pa.Table) -> None:
    ref = res.ref
    keys = table.column("key").to_pylist()
    statuses = table.column("status").to_pylist()
    errors = (table.column("error_message").to_pylist() if "error_message" in table.column_names
              else [None] * table.num_rows)
    dup_of = (table.column("duplicate_of").to_pylist() if "duplicate_of" in table.column_names
              else [None] * table.num_rows)
    # an input row repeating an earlier (url, caption) keeps its key and says so: status duplicate,
    # duplicate_of its own key (clipcrawl download accounts for every input row, as img2dataset does)
    own = [k for k, s, d in zip(keys, statuses, dup_of) if not (s == Status.DUPLICATE.value and d == k)]
    res.rows, res.keys = table.num_rows, own
    res.success_keys = {k for k, s in zip(keys, statuses) if s == SUCCESS}
    res.successes = sum(s == SUCCESS for s in statuses)
    if None in keys or "" in keys:
        res.add("key-missing", ref.parquet, f"{sum(not k for k in keys)} rows without a key")
    dups = [k for k, n in Counter(own).items() if n > 1 and k]
    if dups:
        res.add("duplicate-key", ref.parquet, f"{len(dups)} keys appear more than once in the shard: "
                f"{examples(dups)}")
    bad = Counter(s for s in statuses if s not in SAMPLE_STATUSES)
    if bad:
        res.add("bad-status", ref.parquet, "statuses outside the closed set: " +
                ", ".join(f"{s!r} ({n} rows)" for s, n in sorted(bad.items(), key=str)))
    silent = [k for k, s, e in zip(keys, statuses, errors) if s != SUCCESS and not e]
    if silent:
        res.add("no-error-message", ref.parquet, f"{len(silent)} non-success rows without an error_message: "
                f"{examples(map(str, silent))}")


def _check_scores(res: ShardResult, table: pa.Table) -> None:
    """Every further scorer's score names its model (clip_similarity_<n> -> clip_model_<n>; external
    scores in clip_similarity may lack clip_model) and every CLIP score lies in its range (cosines in
    [-1, 1], clip_sigmoid* in [0, 1])."""
    import numpy as np

    from clipcrawl.schemas.tables import clip_score_columns

    pairs = clip_score_columns(table.column_names)
    keys = np.asarray(table.column("key").to_pylist(), dtype=object)
    for score, model in pairs.items():
        has = np.asarray(table.column(score).is_valid().to_numpy(zero_copy_only=False), bool)
        named = (np.asarray(table.column(model).is_valid().to_numpy(zero_copy_only=False), bool)
                 if model in table.column_names else np.zeros(table.num_rows, bool))
        if (has & ~named).any():
            res.add("score-model-missing", res.ref.parquet, f"{int((has & ~named).sum())} rows have {score} but no "
                    f"{model} naming the model that scored them: {examples(map(str, keys[has & ~named]))}")
    for col in table.column_names:
        lo = 0.0 if col.startswith("clip_sigmoid") else -1.0
        if not (col in pairs or col.startswith(("clip_sigmoid", "clip_similarity"))) or not pa.types.is_floating(table.schema.field(col).type):
            continue
        v = table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isnan(v) & ((v < lo - 1e-3) | (v > 1 + 1e-3))
        if bad.any():
            res.add("score-range", res.ref.parquet, f"{int(bad.sum())} rows have {col} outside [{lo:g}, 1]: "
                    f"{examples(map(str, keys[bad]))}")


def _check_stats(res: ShardResult, table: pa.Table) -> None:
    ref = res.ref
    try:
        stats = read_json(ref.stats)
    except Exception as e:  # noqa: BLE001
        res.add("stats-unreadable", ref.stats, f"cannot read: {type(e).__name__}: {e}")
        return
    if not isinstance(stats, dict):
        res.add("stats-unreadable", ref.stats, "not a JSON object")
        return
    counts = Counter(table.column("status").to_pylist())
    truth = {"count": table.num_rows, "successes": counts.get(SUCCESS, 0),
             **{s: counts.get(s, 0) for s in SAMPLE_STATUSES if s != SUCCESS}}
    # only the counters the file has: img2dataset's stats have count/successes/failed_to_* only
    wrong = [f"{k} {stats[k]!r} (Parquet: {v})" for k, v in truth.items() if k in stats and stats[k] != v]
    if "count" not in stats:
        wrong.append("no 'count'")
    status_dict = stats.get("status_dict")
    if isinstance(status_dict, dict) and status_dict.get(SUCCESS, 0) != truth["successes"] \
            and (status_dict or truth["successes"]):
        wrong.append(f"status_dict success {status_dict.get(SUCCESS, 0)} (Parquet: {truth['successes']})")
    if wrong:
        res.add("stats-mismatch", ref.stats, "disagrees with the Parquet: " + "; ".join(wrong))


def _success_rows(table: pa.Table) -> dict[str, dict[str, Any]]:
    """key -> {caption, status} of the success rows."""
    ok = table.filter(pc.equal(table.column("status"), SUCCESS))
    has_caption = "caption" in ok.column_names  # img2dataset writes <key>.txt only with a caption column
    caps = ok.column("caption").to_pylist() if has_caption else [None] * ok.num_rows
    return {k: {"caption": c, "txt": has_caption} for k, c in zip(ok.column("key").to_pylist(), caps)}


# ------------------------------------------------------------------ samples: tar, folder, image column
def _compare_members(res: ShardResult, path: str, members: dict[str, dict[str, Any]],
                     rows: dict[str, dict[str, Any]]) -> list[str]:
    """Membership checks common to tars and folders; returns the keys whose JSON/text to read."""
    extra = set(members) - set(rows)
    if extra:
        res.add("extra-sample", path, f"{len(extra)} samples that are not success rows of the Parquet: "
                f"{examples(extra)}")
    lost = set(rows) - set(members)
    if lost:
        res.add("missing-sample", path, f"{len(lost)} success rows of the Parquet have no sample: {examples(lost)}")
    incomplete, odd = [], []
    for key in set(rows) & set(members):
        exts = members[key]
        imgs = [e for e in exts if e in IMAGE_EXTS]
        need = TEXT_EXTS if rows[key].get("txt", True) else tuple(e for e in TEXT_EXTS if e != "txt")
        if len(imgs) != 1 or any(e not in exts for e in need):
            incomplete.append(key)
        if any(e not in IMAGE_EXTS and e not in TEXT_EXTS for e in exts):
            odd.append(key)
    if incomplete:
        res.add("incomplete-sample", path, f"{len(incomplete)} samples lack exactly one image + .json (+ .txt with a caption column): "
                f"{examples(f'{k} ({sorted(members[k])})' for k in incomplete)}")
    if odd:
        res.add("unexpected-member", path, f"{len(odd)} samples have members besides image/txt/json: "
                f"{examples(f'{k} ({sorted(members[k])})' for k in odd)}")
    return sorted(set(rows) & set(members))


def _check_meta(res: ShardResult, path: str, key: str, row: dict[str, Any], raw_json: bytes | None,
                raw_txt: bytes | None, bad: list[str]) -> None:
    if raw_json is not None:
        try:
            meta = json.loads(raw_json)
        except ValueError:
            bad.append(f"{key} (json unreadable)")
            return
        if not isinstance(meta, dict):
            bad.append(f"{key} (json not an object)")
            return
        diffs = [c for c, want in (("key", key), ("caption", row["caption"]), ("status", SUCCESS))
                 if c in meta and meta[c] != want] + [c for c in ("key", "status") if c not in meta]
        if diffs:
            bad.append(f"{key} (json {'/'.join(diffs)})")
    if raw_txt is not None and raw_txt.decode("utf-8", "replace") != (row["caption"] or ""):
        bad.append(f"{key} (txt differs from caption)")


def _check_tar(res: ShardResult, rows: dict[str, dict[str, Any]]) -> None:
    url = res.ref.tar
    fs, path = fs_and_path(url)
    members: dict[str, dict[str, tuple[int, int]]] = {}
    scattered, doubled, bad = set(), set(), []
    try:
        size = fs.size(path)
        res.tar_bytes = size
        with fs.open(path, "rb") as f:
            with tarfile.open(fileobj=f, mode="r:") as tar:
                last = None
                for m in tar:
                    if not m.isfile():
                        continue
                    key, ext = split_member(m.name)
                    if key != last and key in members:
                        scattered.add(key)
                    last = key
                    got = members.setdefault(key, {})
                    if ext in got:
                        doubled.add(key)
                    got[ext] = (m.offset_data, m.size)
                    if m.offset_data + m.size > size:
                        raise tarfile.ReadError(f"member {m.name} ends at byte {m.offset_data + m.size} "
                                                f"past the end of the file ({size})")
                end = tar.offset
            f.seek(end)
            tail = f.read(1024)
            if len(tail) < 1024 or tail.strip(b"\0"):
                raise tarfile.ReadError(f"no end-of-archive marker at byte {end} of {size}: truncated or corrupt")
            for key in _compare_members(res, url, members, rows):
                raw = {}
                for ext in TEXT_EXTS:
                    if ext in members[key]:
                        off, n = members[key][ext]
                        f.seek(off)
                        raw[ext] = f.read(n)
                _check_meta(res, url, key, rows[key], raw.get("json"), raw.get("txt"), bad)
    except (tarfile.TarError, OSError, EOFError) as e:
        res.add("tar-unreadable", url, f"not readable to the end: {type(e).__name__}: {e}")
        return
    res.tar_samples = len(members)
    if scattered:
        res.add("tar-order", url, f"members of {len(scattered)} keys are not consecutive (webdataset splits "
                f"them into several samples): {examples(scattered)}")
    if doubled:
        res.add("tar-duplicate-member", url, f"{len(doubled)} keys have a member twice: {examples(doubled)}")
    if bad:
        res.add("sample-metadata", url, f"{len(bad)} samples disagree with their Parquet row: {examples(bad)}")


def _check_folder(res: ShardResult, rows: dict[str, dict[str, Any]]) -> None:
    """output_format files: ``NNNNN/<key>.<img|txt|json>``."""
    url = res.ref.path("")
    fs, folder = fs_and_path(url)
    members: dict[str, dict[str, str]] = {}
    for f in fs.ls(folder, detail=False):
        key, ext = split_member(f)
        members.setdefault(key, {})[ext] = f
    bad: list[str] = []
    for key in _compare_members(res, url, members, rows):
        raw = {ext: fs.cat_file(members[key][ext]) for ext in TEXT_EXTS if ext in members[key]}
        _check_meta(res, url, key, rows[key], raw.get("json"), raw.get("txt"), bad)
    if bad:
        res.add("sample-metadata", url, f"{len(bad)} samples disagree with their Parquet row: {examples(bad)}")


def _check_column(res: ShardResult, table: pa.Table) -> None:
    """output_format parquet: the image bytes in a binary column named after the format."""
    col = next((e for e in IMAGE_EXTS if e in table.column_names
                and table.schema.field(e).type in (pa.binary(), pa.large_binary())), None)
    if col is None:
        if res.successes:
            res.add("missing-sample", res.ref.tar, f"no tar, no {res.ref.name}/ folder and no image column "
                    f"for {res.successes} success rows")
        return
    has = pc.is_valid(table.column(col)).to_pylist()
    keys, statuses = res.keys, table.column("status").to_pylist()
    lost = [k for k, s, h in zip(keys, statuses, has) if s == SUCCESS and not h]
    extra = [k for k, s, h in zip(keys, statuses, has) if s != SUCCESS and h]
    if lost:
        res.add("missing-sample", res.ref.parquet, f"{len(lost)} success rows have no image in column "
                f"{col!r}: {examples(lost)}")
    if extra:
        res.add("extra-sample", res.ref.parquet, f"{len(extra)} non-success rows still hold an image in column "
                f"{col!r}: {examples(extra)}")


# ------------------------------------------------------------------ samples/NNNNN.parquet
def _check_samples(res: ShardResult, table: pa.Table, run: int | None, url: str) -> None:
    from clipcrawl.pipelines.manifest import kept_rows

    try:
        got = read_parquet(url)
    except FileNotFoundError:
        res.add("samples-missing", url, f"shard {res.ref.name} is published but its samples file is missing")
        return
    except Exception as e:  # noqa: BLE001
        res.add("samples-unreadable", url, f"cannot read: {type(e).__name__}: {e}")
        return
    want = kept_rows(table, res.ref.name, run)
    if got.equals(want):
        return
    if got.schema.remove_metadata() == want.schema.remove_metadata() and got.equals(want, check_metadata=False):
        return
    gk, wk = got.column("key").to_pylist() if "key" in got.column_names else [], want.column("key").to_pylist()
    if gk != wk:
        extra, lost = set(gk) - set(wk), set(wk) - set(gk)
        detail = (f"{len(gk)} rows, the shard has {len(wk)} success rows" +
                  (f"; not success in the shard: {examples(extra)}" if extra else "") +
                  (f"; missing: {examples(lost)}" if lost else ""))
    else:
        diff = [c for c in want.column_names if c not in got.column_names or not got.column(c).equals(want.column(c))]
        detail = f"same keys, columns differ: {', '.join(diff) or 'schema'}"
    res.add("samples-stale", url, f"out of date with shards/{res.ref.name}.parquet: {detail}")
