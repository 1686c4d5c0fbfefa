"""``clipcrawl commoncrawl --engine ray``: every input file is a job of the shard loop.

:class:`CommonCrawlPass` wraps the crawler's per-input reader
(:func:`clipcrawl.crawler.commoncrawl.run.read_input`) so each WARC/WAT/ARC file is read on a Ray
actor; the planning (skip finished inputs, drop chunks of unfinished ones), the state files and the
summary are :func:`~clipcrawl.crawler.commoncrawl.run.read_commoncrawl`'s, exactly as on the local
process pool. Chunk ids come from one engine-wide counter, so actors never collide. An input whose
actor dies is read again from its start by a fresh actor (its partial chunks removed first); one that
kills every retry is reported as failed (rerunning reads it again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from clipcrawl.crawler.commoncrawl.process import FileReport, ReadOptions
from clipcrawl.crawler.commoncrawl.run import read_input
from clipcrawl.pipelines.shardloop import ShardPass, run_pass


class CommonCrawlPass(ShardPass):
    name = "commoncrawl"

    def __init__(self, opts: ReadOptions, out_dir: str, alloc: Callable[[], int],
                 finished: Callable[[FileReport], None] | None = None) -> None:
        super().__init__()
        self.opts, self.out_dir, self.alloc, self.finished = opts, out_dir, alloc, finished

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "finished": None}  # the driver's summary stays on the driver

    def job_name(self, job: str) -> str:
        return job

    def read(self, job: str) -> pa.Table:
        return pa.table({})  # the input is streamed in write(): one pass over its records

    def write(self, job: str, table: pa.Table) -> FileReport:
        return read_input(job, self.opts, self.out_dir, self.alloc)

    def publish(self, job: str, result: FileReport) -> None:
        if self.finished is not None:
            self.finished(result)


def engine_runner(engine: Any) -> Callable[..., None]:
    """A ``runner`` for :func:`~clipcrawl.crawler.commoncrawl.run.read_commoncrawl` on ``engine``."""

    def run(todo: list[str], opts: ReadOptions, out_dir: str, first_id: int,
            finished: Callable[[FileReport], None]) -> None:
        p = CommonCrawlPass(opts, out_dir, engine.counter(first_id), finished)
        for f in run_pass(p, todo, engine, unit="file"):
            finished(FileReport(input=f.shard, status="failed", error=f.error))

    return run
