"""The layout of a dataset, in one place: every path a pass, a run or the report reads or writes.

A dataset ``DATASET`` is a local folder or any fsspec URL (``s3://bucket/prefix``)::

    DATASET/shards/NNNNN.{tar,parquet} NNNNN_stats.json   # the shards (stats last = done)
    DATASET/shards/sizes.json                             # {"NNNNN.tar": kept samples}, open_clip_train
    DATASET/samples/NNNNN.parquet                         # kept rows of shard NNNNN (published)
    DATASET/manifest.json                                 # runs, shards and counts: the commit point
    DATASET/embeddings/{img_emb,text_emb,metadata}/       # clip-retrieval's layout
    DATASET/dedup/                                        # the persistent dedup index
    DATASET/{crawl,commoncrawl,urls}/                     # sources: state and pairs
    DATASET/.lock | .lock.json                            # the run lock (flock | lease of an object store)
    DATASET/runs/NNNN/{config.yaml,run.json,plan/,work/}  # one folder per run
    DATASET/config.yaml                                   # the latest resolved config

All state lives with the dataset, also on an object store, so any machine (or a fresh container)
continues where the last run stopped. The crawl frontier is SQLite, which needs a local file: for a
remote dataset it is checked out to a local working copy (:meth:`DatasetLayout.source_workdir`) at the
start of a run and checked in again (:mod:`clipcrawl.crawler.checkout`).

A *plain shard folder* (img2dataset's or ``clipcrawl download``'s output: ``NNNNN.*`` at the top)
is a layout whose shards live at the root; :meth:`DatasetLayout.of` tells the two apart.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from clipcrawl.base.storage import fs_and_path

SHARDS_DIR = "shards"
SAMPLES_DIR = "samples"
MANIFEST = "manifest.json"
SIZES = "sizes.json"  # samples per tar, the file open_clip_train's get_dataset_size reads


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _key(root: str) -> str:
    return hashlib.sha256(root.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of one dataset (``plain``: a folder of shards without the dataset structure)."""

    root: str
    plain: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.fspath(self.root).rstrip("/"))

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> DatasetLayout:
        """The layout of an existing folder: a dataset when it has ``shards/`` (or a manifest, or nothing
        yet), a plain shard folder when its shards are at the top."""
        root = os.fspath(path).rstrip("/")
        fs, p = fs_and_path(root)
        if fs.isdir(f"{p}/{SHARDS_DIR}") or fs.exists(f"{p}/{MANIFEST}"):
            return cls(root)
        if fs.isdir(p) and any(n.rsplit("/", 1)[-1].split("_")[0].split(".")[0].isdigit()
                               for n in fs.ls(p, detail=False)):
            return cls(root, plain=True)
        return cls(root)

    def p(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @property
    def remote(self) -> bool:
        return is_remote(self.root)

    # ------------------------------------------------------------ shards and published files
    @property
    def shards(self) -> str:
        return self.root if self.plain else self.p(SHARDS_DIR)

    @property
    def samples(self) -> str:
        return self.p(SAMPLES_DIR)

    def samples_file(self, shard: str) -> str:
        return self.p(SAMPLES_DIR, f"{shard}.parquet")

    @property
    def manifest(self) -> str:
        return self.p(MANIFEST)

    @property
    def sizes(self) -> str:
        return f"{self.shards}/{SIZES}"

    @property
    def embeddings(self) -> str:
        return self.p("embeddings")

    @property
    def config(self) -> str:
        return self.p("config.yaml")

    @property
    def dedup_index(self) -> str:
        """``DATASET/dedup`` (also for a remote dataset: the index is written with whole-object PUTs)."""
        return self.root.removeprefix("file://") + "/dedup" if not self.remote else self.p("dedup")

    @property
    def legacy_dedup_index(self) -> str:
        """Where a remote dataset's index lived before it moved into the dataset (a local cache folder)."""
        base = os.environ.get("CLIPCRAWL_CACHE") or str(Path.home() / ".cache" / "clipcrawl")
        return f"{base}/dedup/{_key(self.root)}"

    def source_dir(self, name: str) -> str:
        """Where a source keeps its state and pairs: ``DATASET/<name>``, local or remote."""
        return self.p(name)

    def source_workdir(self, name: str) -> str:
        """A local folder for a source's state that must be a local file (the crawl frontier, SQLite):
        ``DATASET/<name>`` for a local dataset; for a remote one a working copy checked out from and
        into ``DATASET/<name>``, in ``$XDG_STATE_HOME/clipcrawl/<hash>/<name>`` (where older versions
        kept the only copy: it is checked in once when the dataset has none)."""
        if not self.remote:
            return self.p(name).removeprefix("file://")
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return f"{base}/clipcrawl/{_key(self.root)}/{name}"

    # ------------------------------------------------------------ runs
    @property
    def runs_dir(self) -> str:
        return self.p("runs")

    def run_dir(self, run: int) -> str:
        return self.p("runs", f"{run:04d}")

    def run_file(self, run: int, name: str) -> str:
        return f"{self.run_dir(run)}/{name}"

    def plan_dir(self, run: int) -> str:
        return self.run_file(run, "plan")

    def work_dir(self, run: int) -> str:
        return self.run_file(run, "work")

    def runs(self) -> list[int]:
        fs, path = fs_and_path(self.runs_dir)
        if not fs.isdir(path):
            return []
        names = [x.rstrip("/").rsplit("/", 1)[-1] for x in fs.ls(path, detail=False)]
        return sorted(int(n) for n in names if n.isdigit())
