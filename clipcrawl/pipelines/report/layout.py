"""Find the parts of a dataset that the stats report reads, on any filesystem (local or ``s3://...``).

The paths come from :class:`~clipcrawl.base.layout.DatasetLayout` (a dataset with ``shards/``,
``runs/``, ``manifest.json``; its sources' ``crawl/pages``, ``crawl/pairs``), a crawl folder
(``clipcrawl crawl --out DIR``: ``DIR/pages``, ``DIR/pairs``), or a plain
img2dataset-style output dir with ``NNNNN.parquet`` (and ``NNNNN.tar``, ``NNNNN_stats.json``) at
the top level. Every part is optional: the report uses whatever exists. Folders are listed with
fsspec; every path is a URL string built from the dataset URL as given (``s3://bucket/prefix/...``
keeps its protocol; a local path stays a path).

Kept images live in ``NNNNN.tar`` (webdataset), ``NNNNN/<key>.jpg`` (output_format files) or a
``jpg``/``png``/``webp`` column of ``NNNNN.parquet`` (output_format parquet). Dropped samples are
in none of them (they hold kept samples only). When a writer keeps the images of dropped samples
it puts them in ``<shards>/dropped/NNNNN.tar`` with the same member naming (``<key>.jpg`` ...);
the sample grids take images from there when present.

Files that cannot be read are not fatal: they are listed in :attr:`DatasetParts.unreadable` (and
left out of the numbers); ``clipcrawl stats`` names them and exits 1.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.storage import fs_and_path, is_local, map_io
from clipcrawl.base.storage import read_json as _read_json
from clipcrawl.schemas.config import ConfigError

_SHARD_RE = re.compile(r"^\d+$")


def basename(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def stem(url: str) -> str:
    """``.../00042.parquet`` -> ``00042``."""
    return basename(url).split(".", 1)[0]


@dataclass
class DatasetParts:
    """URLs of the report's inputs (lists are sorted; missing parts are empty / None)."""

    root: str
    layout: DatasetLayout | None = None
    shard_dir: str | None = None
    sample_files: list[str] = field(default_factory=list)  # NNNNN.parquet (SAMPLES schema)
    stats_files: list[str] = field(default_factory=list)  # NNNNN_stats.json
    tar_files: dict[str, str] = field(default_factory=dict)  # shard id -> NNNNN.tar (kept samples)
    tar_sizes: dict[str, int] = field(default_factory=dict)  # tar URL -> bytes (from the listing)
    dropped_tars: dict[str, str] = field(default_factory=dict)  # shard id -> dropped/NNNNN.tar
    image_dirs: dict[str, str] = field(default_factory=dict)  # shard id -> NNNNN/ (output_format files)
    page_files: list[str] = field(default_factory=list)  # crawl/pages/*.parquet
    pair_files: list[str] = field(default_factory=list)  # crawl/pairs/*.parquet
    run_dirs: list[str] = field(default_factory=list)  # runs/NNNN
    manifest: str | None = None
    config_files: list[str] = field(default_factory=list)  # newest last
    unreadable: list[dict[str, str]] = field(default_factory=list)  # {"file": URL, "error": why}

    @property
    def fs(self):
        return fs_and_path(self.root)[0]

    @property
    def remote(self) -> bool:
        return not is_local(self.fs)

    def mark_unreadable(self, url: str, error: str) -> None:
        """Record ``url`` as unreadable (once) and leave it out of every later read."""
        if any(u["file"] == url for u in self.unreadable):
            return
        self.unreadable.append({"file": url, "error": error})
        for files in (self.sample_files, self.page_files, self.pair_files):
            if url in files:
                files.remove(url)
        for tars in (self.tar_files, self.dropped_tars):
            for k in [k for k, v in tars.items() if v == url]:
                del tars[k]

    def bad_tar_shards(self) -> set[str]:
        """Shards whose ``NNNNN.tar`` is unreadable (their images are not looked for elsewhere)."""
        return {stem(u["file"]) for u in self.unreadable if u["file"].endswith(".tar")
                and "/dropped/" not in u["file"]}

    def describe(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "sample_files": len(self.sample_files),
            "stats_files": len(self.stats_files),
            "tar_files": len(self.tar_files),
            "dropped_tars": len(self.dropped_tars),
            "page_files": len(self.page_files),
            "pair_files": len(self.pair_files),
            "runs": len(self.run_dirs),
            "manifest": self.manifest is not None,
        }


def _listing(url: str) -> dict[str, dict[str, Any]]:
    """basename -> fsspec info of the entries of folder ``url`` (empty when it is not a folder)."""
    fs, path = fs_and_path(url)
    fs.invalidate_cache(path)  # object-store listings are cached per process; writers may have added files
    if not fs.isdir(path):
        return {}
    return {basename(e["name"]): e for e in fs.ls(path, detail=True)}


def _numbered(entries: dict[str, dict[str, Any]], suffix: str) -> list[str]:
    return sorted(n for n, e in entries.items() if e.get("type") != "directory" and n.endswith(suffix)
                  and _SHARD_RE.match(n[: -len(suffix)]))


def _parquets(url: str) -> list[str]:
    return [f"{url}/{n}" for n, e in sorted(_listing(url).items())
            if e.get("type") != "directory" and n.endswith(".parquet")]


def _exists(url: str) -> bool:
    fs, path = fs_and_path(url)
    return fs.exists(path)


def find_parts(path: str | os.PathLike[str]) -> DatasetParts:
    """Locate the report inputs under ``path`` (a folder or URL); raise ConfigError when there is
    nothing to report. Tars are checked for truncation (see :func:`.check.check_tars`)."""
    root = os.fspath(path).rstrip("/") or "/"
    root = root.removeprefix("file://")
    fs, p = fs_and_path(root)
    fs.invalidate_cache(p)
    if not fs.isdir(p):
        raise ConfigError(f"{root}: not a directory (fix: pass a dataset dir or a download output dir)")
    lay = DatasetLayout.of(root)
    parts = DatasetParts(root=root, layout=lay)
    sd = lay.shards
    entries = _listing(sd)
    if _numbered(entries, ".parquet") or _numbered(entries, "_stats.json"):
        parts.shard_dir = sd
        parts.sample_files = [f"{sd}/{n}" for n in _numbered(entries, ".parquet")]
        parts.stats_files = [f"{sd}/{n}" for n in _numbered(entries, "_stats.json")]
        for n in _numbered(entries, ".tar"):
            parts.tar_files[n[:-4]] = f"{sd}/{n}"
            parts.tar_sizes[f"{sd}/{n}"] = int(entries[n].get("size") or 0)
        if entries.get("dropped", {}).get("type") == "directory":
            dropped = _listing(f"{sd}/dropped")
            for n in _numbered(dropped, ".tar"):
                parts.dropped_tars[n[:-4]] = f"{sd}/dropped/{n}"
                parts.tar_sizes[f"{sd}/dropped/{n}"] = int(dropped[n].get("size") or 0)
        parts.image_dirs = {n: f"{sd}/{n}" for n, e in sorted(entries.items())
                            if e.get("type") == "directory" and _SHARD_RE.match(n)}
    crawl = lay.source_dir("crawl")
    parts.page_files = _parquets(f"{crawl}/pages")
    parts.pair_files = _parquets(f"{crawl}/pairs")
    if not (parts.page_files or parts.pair_files or parts.sample_files or parts.stats_files):
        # a crawl folder itself (``clipcrawl crawl --out DIR``: DIR/pages, DIR/pairs, DIR/state)
        parts.page_files = _parquets(f"{root}/pages")
        parts.pair_files = _parquets(f"{root}/pairs")
    parts.run_dirs = [lay.run_dir(r) for r in lay.runs()]
    if _exists(lay.manifest):
        parts.manifest = lay.manifest
    cfgs = [lay.config] + [f"{d}/config.yaml" for d in parts.run_dirs]
    parts.config_files = [c for c, ok in zip(cfgs, map_io(_exists, cfgs)) if ok]
    if not (parts.sample_files or parts.stats_files or parts.page_files or parts.pair_files):
        raise ConfigError(
            f"{root}: no shards (NNNNN.parquet), shard stats or crawl output found "
            "(fix: pass a dataset dir with shards/ or crawl/, or a download --out dir)"
        )
    from clipcrawl.pipelines.report.check import check_tars

    check_tars(parts)
    return parts


def read_side_json(url: str) -> Any:
    """Parse a JSON side file; None when it is missing or unreadable (a report never fails on one)."""
    try:
        return _read_json(url)
    except (OSError, ValueError):
        return None


def read_side_jsons(urls: Iterable[str]) -> list[Any]:
    return map_io(read_side_json, urls)


def clip_threshold(parts: DatasetParts) -> tuple[float | None, str | None]:
    """``filters.clip.threshold`` of the newest config that sets it, with the file it came from."""
    import yaml

    for cfg in reversed(parts.config_files):
        try:
            fs, p = fs_and_path(cfg)
            with fs.open(p, "r", encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        try:
            clip = data["filters"]["clip"]
            if clip.get("enabled", True) is False:
                continue
            value = clip["threshold"]
        except (KeyError, TypeError, AttributeError):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), cfg
    return None, None
