"""Shard loops shared by passes that decide across the whole dataset (``dedup``, dataset-wide curation):
read every shard's rows to the driver, decide there, then rewrite the shards that changed."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.base.storage import read_parquet
from clipcrawl.pipelines.shardloop import ShardPass
from clipcrawl.pipelines.writer import rewrite_shard


class ReadShards(ShardPass):
    """Each shard's Parquet rows, collected on the driver in shard order (``refs``, ``tables``)."""

    name = "read shards"

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[ShardRef] = []
        self.tables: list[pa.Table] = []

    def read(self, ref: ShardRef) -> pa.Table:
        """The rows without an ``output_format: parquet`` image column: a decision needs no image bytes, and
        :func:`~clipcrawl.pipelines.writer.rewrite_shard` reads them back one shard at a time."""
        import pyarrow.parquet as pq

        from clipcrawl.base.shardfiles import IMAGE_EXTS
        from clipcrawl.base.storage import fs_and_path

        fs, path = fs_and_path(ref.parquet)
        try:
            with fs.open(path, "rb") as f:
                names = pq.read_schema(f).names
        except (pa.ArrowInvalid, OSError):
            return read_parquet(ref.parquet)  # raises naming the file
        images = [n for n in IMAGE_EXTS if n in names]
        return read_parquet(ref.parquet, [n for n in names if n not in images] if images else None)

    def write(self, ref: ShardRef, table: pa.Table) -> pa.Table:
        return table  # nothing to write in this step: the rows go to the driver

    def publish(self, ref: ShardRef, table: pa.Table) -> None:
        self.refs.append(ref)
        self.tables.append(table)


@dataclass
class ShardRewrite:
    ref: ShardRef
    table: pa.Table  # the rows after the decision
    before: pa.Table  # status/error_message as read

    @property
    def name(self) -> str:
        return self.ref.name


def changed(before: pa.Table, after: pa.Table) -> bool:
    """Whether a decision changed any row's status or message."""
    return (before.column("status").to_pylist() != after.column("status").to_pylist()
            or before.column("error_message").to_pylist() != after.column("error_message").to_pylist())


class RewriteShards(ShardPass):
    """Rewrite each shard whose rows changed (:func:`~clipcrawl.pipelines.writer.rewrite_shard`)."""

    name = "write shards"
    write_behind = True

    def __init__(self, keep_tars: bool = False) -> None:
        super().__init__()
        self.keep_tars = keep_tars

    def read(self, job: ShardRewrite) -> pa.Table:
        return job.table

    def write(self, job: ShardRewrite, table: pa.Table) -> str:
        rewrite_shard(job.ref, table, job.before, keep_tars=self.keep_tars)
        return job.ref.name
