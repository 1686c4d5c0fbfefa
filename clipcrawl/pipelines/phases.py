"""The two phases of processing one planned shard.

Phase A (any worker, any order): caption rules, fetch + resize, CLIP score, threshold -> a work file
(Arrow IPC with images and embeddings). Phase B (the driver, in shard order): dedup against everything
published, embeddings, the shard files (stats last), the dedup index commit.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from clipcrawl.base.progress import Progress
from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.storage import atomic_open, fs_and_path, read_parquet
from clipcrawl.pipelines.plan import initial_samples
from clipcrawl.pipelines.runstate import Dataset
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas.config import RunConfig


# ------------------------------------------------------------------ stages
def phase_a_stages(cfg: RunConfig) -> list:
    """Caption rules (before any download), fetch + resize, CLIP score, then the threshold."""
    from clipcrawl.filters.text import FilterCaptions
    from clipcrawl.pipelines.download import FetchImages

    stages = [FilterCaptions(cfg.filters.text)]
    if cfg.download.blocklists:  # URL/domain/page rules before any request (hash rules run in the Fetcher)
        from clipcrawl.filters.block import BlockUrls

        stages.append(BlockUrls(cfg.download.blocklists))
    stages.append(FetchImages(cfg.download))
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
        from clipcrawl.base.failpoints import failpoint
        from clipcrawl.base.stage import ok_mask

        table = initial_samples(read_parquet(plan_parquet), run, shard)
        for stage in self.stages:
            with Progress(f"{stage.name} {shard}", total=int(ok_mask(table).sum()), unit="img",
                          enabled=stage.reports_progress) as bar:
                stage.progress = bar if stage.reports_progress else None
                table = stage(table)
            failpoint(f"stage.{stage.name}")
        write_ipc(table, work_url)
        return work_url

    def close(self) -> None:
        for s in self.stages:
            s.teardown()


def write_ipc(table: pa.Table, url: str) -> None:
    import pyarrow.ipc as ipc

    with atomic_open(url) as f, ipc.new_file(f, table.schema) as w:
        w.write_table(table)


def read_ipc(url: str) -> pa.Table:
    import pyarrow.ipc as ipc

    fs, path = fs_and_path(url)
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

    def __call__(self, work_url: str, ref: ShardRef) -> dict[str, Any]:
        table = read_ipc(work_url)
        if self.dedup is not None:
            table = self.dedup(table)
        if needs_embeddings(self.cfg) and "image_embedding" in table.column_names:
            from clipcrawl.filters.clip.embeddings import write_embeddings

            write_embeddings(table, self.ds.p("embeddings"), ref.name, ref.name)
        ext = {"jpg": "jpg", "png": "png", "webp": "webp"}[self.cfg.download.encode_format]
        stats = write_shard(ref, table, output_format=self.cfg.output.output_format, image_ext=ext)
        if self.dedup is not None:
            self.dedup.commit()
        fs, path = fs_and_path(work_url)
        fs.rm(path)
        return stats
