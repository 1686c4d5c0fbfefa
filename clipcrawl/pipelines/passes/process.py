"""The run's pass over its planned shards (``clipcrawl run``, state ``process``).

Per planned shard, on any worker (a Ray actor or this process): caption rules, fetch + resize, CLIP
score, threshold, streamed in chunks (the download keeps fetching on its own thread while CLIP scores
the previous chunk); the result goes to a work file (Arrow IPC with images and embeddings) so a killed run
does not fetch it again. Then on the driver, in shard order: dedup against everything published,
embeddings, the shard files (stats last), the dedup index commit, the run record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.stage import Stage
from clipcrawl.base.storage import atomic_open, fs_and_path, read_parquet, remove
from clipcrawl.pipelines.plan import initial_samples
from clipcrawl.pipelines.runstate import RunState, save_state
from clipcrawl.pipelines.shardloop import ShardPass
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas.config import RunConfig


def fetch_and_score_stages(cfg: RunConfig) -> list[Stage]:
    """Caption rules and blocklists (before any download), fetch + resize, CLIP score, the threshold, then
    the image fingerprints dedup compares (hashing on the workers, not on the driver)."""
    from clipcrawl.filters.text import FilterCaptions
    from clipcrawl.pipelines.fetch_images import FetchImages

    stages: list[Stage] = [FilterCaptions(cfg.filters.text)]
    if cfg.download.blocklists:  # URL/domain/page rules before any request (hash rules run in the Fetcher)
        from clipcrawl.filters.block import BlockUrls

        stages.append(BlockUrls(cfg.download.blocklists))
    stages.append(FetchImages(cfg.download))
    if cfg.filters.clip.enabled:
        from clipcrawl.filters.clip.score import ApplyClipThreshold, ScoreClip

        stages += [ScoreClip(cfg.filters.clip), ApplyClipThreshold(cfg.filters.clip.threshold)]
    if cfg.dedup.enabled:  # fingerprints on the workers; the driver's dedup only compares them
        from clipcrawl.filters.dedup.stage import HashImages

        stages.append(HashImages(cfg.dedup))
    return stages


def needs_embeddings(cfg: RunConfig) -> bool:
    """Embeddings are kept on disk when asked for, or when semantic dedup must find them next run."""
    return cfg.filters.clip.enabled and (cfg.filters.clip.save_embeddings
                                         or (cfg.dedup.enabled and cfg.dedup.semantic))


@dataclass(frozen=True)
class PlannedShard:
    name: str
    plan: str  # runs/NNNN/plan/NNNNN.parquet
    work: str  # runs/NNNN/work/NNNNN.arrow
    scored: bool  # the work file exists: fetched and scored by an earlier attempt


def write_ipc(table: pa.Table, url: str) -> None:
    import pyarrow.ipc as ipc

    with atomic_open(url) as f, ipc.new_file(f, table.schema) as w:
        w.write_table(table)


def read_ipc(url: str) -> pa.Table:
    import pyarrow.ipc as ipc

    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f:
        return ipc.open_file(pa.BufferReader(f.read())).read_all()


class ProcessPlanned(ShardPass):
    """Fetch and score on workers; dedup and write each shard on the driver, in order."""

    name = "shards"
    #: chunks flow fetch -> CLIP: the download keeps fetching (its own thread) while CLIP scores a chunk
    streaming = True
    #: driver-side state, never sent to workers
    driver_state = ("dedup", "layout", "st")

    def __init__(self, cfg: RunConfig, layout: DatasetLayout, st: RunState) -> None:
        super().__init__()
        self.cfg, self.layout, self.st, self.run = cfg, layout, st, st.run
        self.stages = fetch_and_score_stages(cfg)
        self.dedup = None
        if cfg.dedup.enabled:
            from clipcrawl.filters.dedup import MarkDuplicates

            self.dedup = MarkDuplicates(cfg.dedup, layout.root, cfg.filters.clip)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self.driver_state}

    # ---------------------------------------------------------------- worker: fetch and score
    def read(self, job: PlannedShard) -> pa.Table:
        if job.scored:
            return read_ipc(job.work)
        return initial_samples(read_parquet(job.plan), self.run, job.name)

    def stages_for(self, job: PlannedShard, table: pa.Table) -> list[Stage]:
        return [] if job.scored else self.stages

    def write(self, job: PlannedShard, chunks: Iterator[pa.Table]) -> str:
        """The scored chunks as one work file (a resumed attempt does not fetch them again)."""
        tables = list(chunks)
        if not job.scored:
            write_ipc(pa.concat_tables(tables, promote_options="permissive"), job.work)
        return job.work

    # ---------------------------------------------------------------- driver: dedup and write, in order
    def publish(self, job: PlannedShard, work: str) -> None:
        table = read_ipc(work)
        if self.dedup is not None:
            table = self.dedup(table)
        if needs_embeddings(self.cfg) and "image_embedding" in table.column_names:
            from clipcrawl.filters.clip.embeddings import write_embeddings

            write_embeddings(table, self.layout.embeddings, job.name, job.name)
        ext = {"jpg": "jpg", "png": "png", "webp": "webp"}[self.cfg.download.encode_format]
        write_shard(ShardRef(self.layout.shards, job.name), table, output_format=self.cfg.output.output_format,
                    image_ext=ext)
        if self.dedup is not None:
            self.dedup.commit()
        remove(work)
        self.st.published_shards.append(job.name)
        save_state(self.layout, self.st)
