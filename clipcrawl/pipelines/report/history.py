"""Throughput and history: shard ``NNNNN_stats.json`` times, ``runs/NNNN/run.json``, ``manifest.json``.

Side files are read leniently (they come from several writers and versions): unknown or
missing fields are skipped, never fatal. Sample counts per run come from the Parquet ``run``
column (passed in as ``by_run``), so they agree with the rest of the report.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from clipcrawl.pipelines.report.layout import DatasetParts, basename, read_side_json, read_side_jsons
from clipcrawl.pipelines.report.sql import clean

MAX_POINTS = 500  # timeline points kept (downsampled evenly)
_START_KEYS = ("started", "start_time", "started_at", "start", "begin", "created_at")
_END_KEYS = ("finished", "end_time", "finished_at", "ended_at", "end", "completed_at")


def to_unix(value: Any) -> float | None:
    """Unix seconds from a number or an ISO-8601 string; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        v = float(value)
        return v / 1000.0 if v > 1e11 else v  # milliseconds
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    return None


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _first(d: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for k in keys:
        if k in d:
            t = to_unix(d[k])
            if t is not None:
                return t
    return None


def _downsample(points: list[Any], n: int = MAX_POINTS) -> list[Any]:
    if len(points) <= n:
        return points
    step = (len(points) - 1) / (n - 1)
    return [points[round(i * step)] for i in range(n)]


def _active_seconds(intervals: list[tuple[float, float]]) -> float | None:
    """Length of the union of [start, end] intervals: time when at least one shard was being written."""
    if not intervals:
        return None
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return round(total + (cur_e - cur_s), 3)


def throughput(parts: DatasetParts) -> dict[str, Any] | None:
    """Samples/s (over the time any shard was in progress) and progress over time, from the shard stats."""
    shards = []
    for f, d in zip(parts.stats_files, read_side_jsons(parts.stats_files)):
        if not isinstance(d, dict):
            continue
        start, end = to_unix(d.get("start_time")), to_unix(d.get("end_time"))
        count = d.get("count") if isinstance(d.get("count"), int) else 0
        succ = d.get("successes") if isinstance(d.get("successes"), int) else 0
        dur = d.get("duration") if isinstance(d.get("duration"), (int, float)) else None
        if dur is None and start is not None and end is not None:
            dur = end - start
        shards.append({"shard": basename(f).removesuffix("_stats.json"), "start": start, "end": end, "count": count,
                       "successes": succ, "duration": dur,
                       "bytes": d.get("bytes_downloaded") if isinstance(d.get("bytes_downloaded"), int) else 0})
    if not shards:
        return None
    timed = sorted((s for s in shards if s["end"] is not None), key=lambda s: s["end"])
    starts = [s["start"] for s in shards if s["start"] is not None]
    t0 = min(starts) if starts else (timed[0]["end"] if timed else None)
    t1 = timed[-1]["end"] if timed else None
    wall = (t1 - t0) if (t0 is not None and t1 is not None) else None
    count = sum(s["count"] for s in shards)
    succ = sum(s["successes"] for s in shards)
    busy = sum(s["duration"] or 0.0 for s in shards)
    cum_n = cum_k = 0
    timeline = []
    for s in timed:
        cum_n += s["count"]
        cum_k += s["successes"]
        timeline.append([s["end"], cum_n, cum_k])
    rates = [s["count"] / s["duration"] for s in shards if s["duration"]]
    active = _active_seconds([(s["start"], s["end"]) for s in shards if s["start"] is not None and s["end"]])
    return {
        "shards": len(shards), "count": count, "successes": succ, "bytes": sum(s["bytes"] for s in shards),
        "start": iso(t0), "end": iso(t1), "wall_seconds": clean(wall), "busy_seconds": round(busy, 3),
        "active_seconds": clean(active),
        "samples_per_s": clean(round(count / active, 2)) if active else None,
        "kept_per_s": clean(round(succ / active, 2)) if active else None,
        "shard_rate_median": round(sorted(rates)[len(rates) // 2], 2) if rates else None,
        "timeline": _downsample(timeline),
    }


def _run_id(name: Any) -> str:
    try:
        return str(int(str(name)))
    except ValueError:
        return str(name)


def runs(parts: DatasetParts, by_run: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """One row per run: times and state from run.json, publish details from manifest.json, sample
    counts from the ``run`` column."""
    out: dict[str, dict[str, Any]] = {}
    for d, info in zip(parts.run_dirs, read_side_jsons(f"{d}/run.json" for d in parts.run_dirs)):
        rid = _run_id(basename(d))
        row: dict[str, Any] = {"run": rid, "dir": basename(d)}
        if isinstance(info, dict):
            start, end = _first(info, _START_KEYS), _first(info, _END_KEYS)
            row.update(start=iso(start), end=iso(end),
                       duration=clean(round(end - start, 3)) if start is not None and end is not None else None)
            for k in ("status", "state", "version", "mode"):
                if isinstance(info.get(k), (str, int, float)):
                    row[k] = info[k]
            for k in ("counts", "stats", "timings"):
                if isinstance(info.get(k), dict):
                    row[f"run_json_{k}"] = {a: b for a, b in info[k].items() if isinstance(b, (int, float))}
            if isinstance(info.get("error"), str):
                row["error"] = info["error"]
        out[rid] = row
    data = read_side_json(parts.manifest) if parts.manifest is not None else None
    for entry in (data.get("runs") if isinstance(data, dict) else None) or []:
        if isinstance(entry, dict) and "run" in entry:
            row = out.setdefault(_run_id(entry["run"]), {"run": _run_id(entry["run"])})
            for k, name in (("time", "published"), ("shards_added", "shards_added"),
                            ("samples_total", "manifest_samples"), ("samples_kept", "manifest_kept")):
                if isinstance(entry.get(k), (str, int, float)):
                    row[name] = entry[k]
    for rid, counts in by_run.items():
        row = out.setdefault(rid, {"run": rid})
        row["samples"] = sum(counts.values())
        row["kept"] = counts.get("success", 0)
        row["statuses"] = counts
    return sorted(out.values(), key=lambda r: (not r["run"].isdigit(), int(r["run"]) if r["run"].isdigit() else 0,
                                                r["run"]))


def manifest(parts: DatasetParts) -> dict[str, Any] | None:
    """Scalar fields of manifest.json, and its lists of versions/runs (scalar fields of each entry)."""
    if parts.manifest is None:
        return None
    data = read_side_json(parts.manifest)
    if not isinstance(data, dict):
        return {"error": f"{basename(parts.manifest)} is not a JSON object"}
    scalars = {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool)) or v is None}
    for k, v in data.items():  # one level of nesting: {"totals": {"runs": 2}} -> "totals.runs"
        if isinstance(v, dict) and v and all(isinstance(x, (str, int, float, bool)) for x in v.values()):
            scalars.update({f"{k}.{kk}": vv for kk, vv in v.items()})
    lists = {}
    for k, v in data.items():
        if isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            lists[k] = [{kk: vv for kk, vv in e.items() if isinstance(vv, (str, int, float, bool))} for e in v][-50:]
        elif isinstance(v, dict) and v and all(isinstance(e, dict) for e in v.values()):
            lists[k] = [{"id": kk, **{a: b for a, b in e.items() if isinstance(b, (str, int, float, bool))}}
                        for kk, e in v.items()][-50:]
    return {"fields": scalars, "lists": lists}
