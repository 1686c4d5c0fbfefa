"""The run's pass over its planned shards (``clipcrawl run``, state ``process``).

Per planned shard, on any worker (a Ray actor or this process): caption rules, fetch + resize, CLIP
score, threshold, streamed in chunks (the download keeps fetching on its own thread while CLIP scores
the previous chunk); the result goes, chunk by chunk, to a work file (Arrow IPC with images and embeddings:
:mod:`clipcrawl.pipelines.workfile`) so a killed run does not fetch it again. Then on the driver, in
shard order: dedup against everything published (on the rows without images), embeddings, the shard
files streamed batch by batch from the work file (stats last), the dedup index commit, the run record.
Neither side holds a shard's images at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from clipcrawl.base.failpoints import failpoint
from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.stage import Stage
from clipcrawl.base.storage import read_parquet, remove
from clipcrawl.pipelines.plan import initial_samples
from clipcrawl.pipelines.runstate import RunState, save_state
from clipcrawl.pipelines.shardloop import ShardPass
from clipcrawl.pipelines.workfile import check_work, iter_work, write_work
from clipcrawl.pipelines.writer import ShardStream
from clipcrawl.schemas.config import RunConfig
from clipcrawl.schemas.tables import IMAGE_COLUMN


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
    from clipcrawl.filters.signals import signal_stage

    clip = cfg.filters.clip
    sig = signal_stage(cfg.filters.signals, clip.unsafe_head if clip.enabled else None)  # one decode for all
    if clip.enabled:
        from clipcrawl.filters.clip.score import ApplyClipThreshold, ScoreClip

        stages += [ScoreClip(clip), *([sig] if sig else []), ApplyClipThreshold(clip.threshold, clip.threshold_by)]
    elif sig is not None:
        stages.append(sig)
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
        if job.scored:  # fetched and scored already: only its footer is read here (a broken file fails)
            check_work(job.work)
            return pa.table({})
        return initial_samples(read_parquet(job.plan), self.run, job.name)

    def stages_for(self, job: PlannedShard, table: pa.Table) -> list[Stage]:
        return [] if job.scored else self.stages

    def write(self, job: PlannedShard, chunks: Iterator[pa.Table]) -> str:
        """The scored chunks, as they come, into one work file (a resumed attempt does not fetch them again)."""
        if job.scored:
            for _ in chunks:
                pass
        else:
            write_work(chunks, job.work)
        return job.work

    # ---------------------------------------------------------------- driver: dedup and write, in order
    def publish(self, job: PlannedShard, work: str) -> None:
        """Dedup (and embeddings) on the shard's rows without images; then the work file again, batch by
        batch, with the dedup's columns, into the shard files: one batch of images in memory at a time."""
        decided = None
        if self.dedup is not None or needs_embeddings(self.cfg):
            parts = [self._lean(b) for b in iter_work(work)]
            lean = pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({})
            decided = self.dedup(lean) if self.dedup is not None else lean
            if needs_embeddings(self.cfg) and "image_embedding" in decided.column_names:
                from clipcrawl.filters.clip.embeddings import write_embeddings

                write_embeddings(decided, self.layout.embeddings, job.name, job.name)
        ext = {"jpg": "jpg", "png": "png", "webp": "webp"}[self.cfg.download.encode_format]
        with ShardStream(ShardRef(self.layout.shards, job.name), output_format=self.cfg.output.output_format,
                         image_ext=ext) as out:
            start = 0
            for batch in iter_work(work):
                batch = _detached(batch)
                if decided is not None:
                    batch = _with_columns(batch, decided.slice(start, batch.num_rows))
                start += batch.num_rows
                out.add(batch)
                failpoint("publish.batch")
            out.finish()
        if self.dedup is not None:
            self.dedup.commit()
        remove(work)
        self.st.published_shards.append(job.name)
        save_state(self.layout, self.st)
        _trim_heap()

    def _lean(self, batch: pa.Table) -> pa.Table:
        """A batch without its images: the fingerprints dedup would compute from them first (none when the
        workers' HashImages did), exactly as MarkDuplicates does for the rows still ``success``."""
        if IMAGE_COLUMN not in batch.column_names:
            return batch
        cfg = self.cfg.dedup
        if self.dedup is not None and cfg.enabled and (cfg.pixels or cfg.phash) and batch.num_rows:
            import numpy as np

            from clipcrawl.base.stage import ok_mask
            from clipcrawl.filters.dedup.columns import fill_image_hashes

            active = ok_mask(batch)
            if active.any():
                batch = fill_image_hashes(batch, np.flatnonzero(active), thumbnails=cfg.phash)
        return _detached(batch.drop_columns([IMAGE_COLUMN]))


def _detached(batch: pa.Table) -> pa.Table:
    """``batch`` with every column but the images copied into buffers of its own: the columns of a batch read
    from an IPC file are slices of one buffer, so keeping any of them (the dedup's table, the writer's Parquet
    rows until the shard's end) would keep the batch's images alive."""
    import numpy as np

    idx = pa.array(np.arange(batch.num_rows))
    cols = [c if name == IMAGE_COLUMN else c.take(idx) for name, c in zip(batch.column_names, batch.columns)]
    return pa.Table.from_arrays(cols, schema=batch.schema)


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS after each shard (glibc only; elsewhere nothing). glibc keeps
    what a thread freed in that thread's arena (64 MiB each): with the fetch loop, the writer, the publish
    and torch's threads each allocating shard-sized buffers, the process's RSS crept up shard after shard."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _with_columns(batch: pa.Table, decided: pa.Table) -> pa.Table:
    """``batch`` (with images) carrying the dedup's result for its rows: the columns MarkDuplicates set or
    added, in the order it leaves them (its transient thumbnails dropped, as it drops them)."""
    from clipcrawl.base.stage import set_column
    from clipcrawl.filters.dedup.columns import THUMB_COLUMN

    if THUMB_COLUMN in batch.column_names and THUMB_COLUMN not in decided.column_names:
        batch = batch.drop_columns([THUMB_COLUMN])
    for name in decided.column_names:
        batch = set_column(batch, name, decided.column(name))
    return batch
