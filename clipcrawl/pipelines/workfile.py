"""A shard's work file (``runs/NNNN/work/NNNNN.arrow``): its scored rows with images, as an Arrow IPC file.

Written chunk by chunk as the rows come (:func:`write_work`), read back batch by batch
(:func:`iter_work`), so neither side holds a shard's images at once. The file appears atomically, whole,
at the end (a killed run resumes from it; a run killed while writing it fetches the shard again).

Chunks of one shard may differ in schema (a stage that adds no column to a chunk with no rows left,
a column typed ``null`` where every value is missing): the file has the schema ``pa.concat_tables(...,
promote_options="permissive")`` would give them, each batch promoted to it. A change of schema
starts a new segment in a local spill folder; the file is assembled from the segments at the end.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator

import pyarrow as pa

from clipcrawl.base.storage import atomic_open, fs_and_path


def promote(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order: missing ones null, others cast (as a permissive
    concat does)."""
    if table.schema == schema:
        return table
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def write_work(chunks: Iterable[pa.Table], url: str) -> int:
    """Write ``chunks`` (tables, in row order) as one IPC file at ``url``, atomically; returns the rows."""
    import pyarrow.ipc as ipc

    rows = 0
    with tempfile.TemporaryDirectory(prefix="clipcrawl-work-") as spill:
        segments: list[tuple[str, pa.Schema]] = []
        writer = sink = None
        try:
            for chunk in chunks:
                if writer is None or chunk.schema != segments[-1][1]:
                    if writer is not None:
                        writer.close()
                        sink.close()
                    path = os.path.join(spill, f"{len(segments)}.arrow")
                    segments.append((path, chunk.schema))
                    sink = pa.OSFile(path, "wb")
                    writer = ipc.new_stream(sink, chunk.schema)
                writer.write_table(chunk)
                rows += chunk.num_rows
        finally:
            if writer is not None:
                writer.close()
                sink.close()
        schemas = [s for _, s in segments]
        schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
        with atomic_open(url) as f, ipc.new_file(f, schema) as out:
            for path, _ in segments:
                with pa.OSFile(path, "rb") as src:  # read, not mapped: a mapped shard's pages count as RSS
                    for batch in ipc.open_stream(src):
                        out.write_table(promote(pa.Table.from_batches([batch]), schema))
    return rows


def iter_work(url: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The work file's batches in row order, one in memory at a time (``columns``: only these)."""
    import pyarrow.ipc as ipc

    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f:
        reader = ipc.open_file(f)
        for i in range(reader.num_record_batches):
            t = pa.Table.from_batches([reader.get_batch(i)])
            yield t.select([c for c in columns if c in t.column_names]) if columns is not None else t


def check_work(url: str) -> int:
    """The batches of a finished work file (reads its footer only; raises if it is not a whole IPC file)."""
    import pyarrow.ipc as ipc

    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f:
        return ipc.open_file(f).num_record_batches
