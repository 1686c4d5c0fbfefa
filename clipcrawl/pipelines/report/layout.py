"""Find the parts of a dataset that the stats report reads.

A report works on a dataset dir (``crawl/pages``, ``crawl/pairs``, ``shards/``, ``runs/``,
``manifest.json``) or on a plain img2dataset-style output dir with ``NNNNN.parquet`` (and
``NNNNN.tar``, ``NNNNN_stats.json``) at the top level. Every part is optional: the report uses
whatever exists.

Kept images live in ``NNNNN.tar`` (webdataset), ``NNNNN/<key>.jpg`` (output_format files) or a
``jpg``/``png``/``webp`` column of ``NNNNN.parquet`` (output_format parquet). Dropped samples are
in none of them (they hold kept samples only). When a writer keeps the images of dropped samples
it puts them in ``<shards>/dropped/NNNNN.tar`` with the same member naming (``<key>.jpg`` ...);
the sample grids take images from there when present.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipcrawl.schemas.config import ConfigError

_SHARD_RE = re.compile(r"^\d+$")


@dataclass
class DatasetParts:
    """Paths of the report's inputs (lists are sorted; missing parts are empty / None)."""

    root: Path
    shard_dir: Path | None = None
    sample_files: list[Path] = field(default_factory=list)  # NNNNN.parquet (SAMPLES schema)
    stats_files: list[Path] = field(default_factory=list)  # NNNNN_stats.json
    tar_files: dict[str, Path] = field(default_factory=dict)  # shard id -> NNNNN.tar (kept samples)
    dropped_tars: dict[str, Path] = field(default_factory=dict)  # shard id -> dropped/NNNNN.tar
    image_dirs: dict[str, Path] = field(default_factory=dict)  # shard id -> NNNNN/ (output_format files)
    page_files: list[Path] = field(default_factory=list)  # crawl/pages/*.parquet
    pair_files: list[Path] = field(default_factory=list)  # crawl/pairs/*.parquet
    run_dirs: list[Path] = field(default_factory=list)  # runs/NNNN/
    manifest: Path | None = None
    config_files: list[Path] = field(default_factory=list)  # newest last

    def describe(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "sample_files": len(self.sample_files),
            "stats_files": len(self.stats_files),
            "tar_files": len(self.tar_files),
            "dropped_tars": len(self.dropped_tars),
            "page_files": len(self.page_files),
            "pair_files": len(self.pair_files),
            "runs": len(self.run_dirs),
            "manifest": self.manifest is not None,
        }


def _numbered(dir_: Path, suffix: str) -> list[Path]:
    if not dir_.is_dir():
        return []
    out = [p for p in dir_.iterdir() if p.is_file() and p.name.endswith(suffix)
           and _SHARD_RE.match(p.name[: -len(suffix)])]
    return sorted(out)


def _tars(dir_: Path) -> dict[str, Path]:
    return {p.name[:-4]: p for p in _numbered(dir_, ".tar")}


def _parquets(dir_: Path) -> list[Path]:
    if not dir_.is_dir():
        return []
    return sorted(p for p in dir_.iterdir() if p.is_file() and p.suffix == ".parquet")


def find_parts(path: str | Path) -> DatasetParts:
    """Locate the report inputs under ``path``; raise ConfigError when there is nothing to report."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory (fix: pass a dataset dir or a download output dir)")
    parts = DatasetParts(root=root)
    for cand in (root / "shards", root):
        if _numbered(cand, ".parquet") or _numbered(cand, "_stats.json"):
            parts.shard_dir = cand
            break
    if parts.shard_dir is not None:
        sd = parts.shard_dir
        parts.sample_files = _numbered(sd, ".parquet")
        parts.stats_files = _numbered(sd, "_stats.json")
        parts.tar_files = _tars(sd)
        parts.dropped_tars = _tars(sd / "dropped")
        parts.image_dirs = {p.name: p for p in sorted(sd.iterdir()) if p.is_dir() and _SHARD_RE.match(p.name)}
    crawl = root / "crawl"
    parts.page_files = _parquets(crawl / "pages")
    parts.pair_files = _parquets(crawl / "pairs")
    runs = root / "runs"
    if runs.is_dir():
        parts.run_dirs = sorted(p for p in runs.iterdir() if p.is_dir() and _SHARD_RE.match(p.name))
    if (root / "manifest.json").is_file():
        parts.manifest = root / "manifest.json"
    cfgs = [d / "config.yaml" for d in parts.run_dirs if (d / "config.yaml").is_file()]
    parts.config_files = ([root / "config.yaml"] if (root / "config.yaml").is_file() else []) + cfgs
    if not (parts.sample_files or parts.stats_files or parts.page_files or parts.pair_files):
        raise ConfigError(
            f"{root}: no shards (NNNNN.parquet), shard stats or crawl output found "
            "(fix: pass a dataset dir with shards/ or crawl/, or a download --out dir)"
        )
    return parts


def read_json(path: Path) -> Any:
    """Parse a JSON file; None when it is unreadable (a report never fails on a side file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def clip_threshold(parts: DatasetParts) -> tuple[float | None, str | None]:
    """``filters.clip.threshold`` of the newest config that sets it, with the file it came from."""
    import yaml

    for cfg in reversed(parts.config_files):
        try:
            data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
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
            return float(value), str(cfg)
    return None, None
