"""The read side of ``clipcrawl export``: the kept samples of a dataset, one input shard at a time.

Kept = the rows whose status is ``success`` in the shard Parquets now (``manifest.kept_rows``, the rule
``verify`` and ``reshard`` use; ``index``/``search`` read the same column), so a sample that ``score``,
``dedup`` or curation dropped after the run is never exported. The shards are the ones the manifest
lists (the published snapshot), else every finished shard (a plain download folder). Images stream from
the tar member by member (memory: one shard's metadata rows and one image), or, for img2dataset's
``parquet``/``files`` output formats, come from :func:`shard_images`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.shardfiles import IMAGE_EXTS, ShardRef, iter_tar, list_shards, shard_images
from clipcrawl.base.storage import exists, read_parquet
from clipcrawl.schemas.config import ConfigError
from clipcrawl.schemas.export import DEFAULT_COLUMNS, EXCLUDED_COLUMNS, REQUIRED_COLUMNS
from clipcrawl.schemas.status import Status


def input_shards(dataset: str) -> list[ShardRef]:
    """The published shards (manifest), else every finished shard of ``dataset`` (a download folder)."""
    from clipcrawl.pipelines.manifest import load_manifest

    src = DatasetLayout.of(dataset)
    listed = load_manifest(src.root)["shards"]
    if listed:
        return [ShardRef(src.shards, name) for name in listed]
    return list_shards(src.shards)


def kept_table(ref: ShardRef, columns: Sequence[str] | None) -> pa.Table:
    """The kept rows of one shard (``columns``: the metadata to keep; ``key`` always)."""
    from clipcrawl.pipelines.manifest import kept_rows

    table = read_parquet(ref.parquet)
    kept = kept_rows(table, ref.name, None)
    if columns is not None:
        kept = kept.select([c for c in columns if c in kept.column_names])
    return kept


@dataclass
class SourcePlan:
    """What one export reads: the shards, the columns with their Arrow types, which columns have nulls
    among the kept rows, how many rows are kept (a metadata-only pass: no image is read)."""

    shards: list[ShardRef]
    columns: list[str]
    types: dict[str, pa.DataType]
    nullable: set[str] = field(default_factory=set)
    kept: dict[str, int] = field(default_factory=dict)  # shard name -> kept rows

    @property
    def total(self) -> int:
        return sum(self.kept.values())


def plan_source(dataset: str, columns: Sequence[str] | None) -> SourcePlan:
    """Check the dataset and the ``--columns`` before anything is written (exit 2 on unusable input)."""
    refs = input_shards(dataset)
    wanted = list(dict.fromkeys([*REQUIRED_COLUMNS, *(columns or DEFAULT_COLUMNS)]))
    bad = [c for c in wanted if c in EXCLUDED_COLUMNS]
    if bad:
        raise ConfigError(f"--columns: {', '.join(bad)} cannot be exported as metadata (the image is always "
                          f"exported; status is always success)")
    schemas: dict[str, pa.DataType] = {}
    nullable: set[str] = set()
    kept: dict[str, int] = {}
    for ref in refs:
        t = read_parquet(ref.parquet, None)
        if "status" not in t.column_names or "key" not in t.column_names:
            raise ConfigError(f"{ref.parquet}: no status/key column: not a clipcrawl or img2dataset shard")
        t = t.filter(pc.fill_null(pc.equal(t.column("status"), Status.SUCCESS.value), False))
        kept[ref.name] = t.num_rows
        for name in t.column_names:
            schemas.setdefault(name, t.schema.field(name).type)
            if t.column(name).null_count:
                nullable.add(name)
    if columns is not None and refs:
        missing = [c for c in wanted if c not in schemas]
        if missing:
            raise ConfigError(f"--columns: {', '.join(missing)} not in the dataset's shards "
                              f"(it has: {', '.join(c for c in schemas if c not in EXCLUDED_COLUMNS)})")
    if refs:
        chosen = [c for c in wanted if c in schemas]
    else:
        from clipcrawl.schemas.tables import SAMPLES

        chosen = [c for c in wanted if c in SAMPLES.names]
        schemas = {f.name: f.type for f in SAMPLES}
    return SourcePlan(refs, chosen, {c: schemas[c] for c in chosen}, nullable & set(chosen), kept)


@dataclass
class Sample:
    row: dict
    image: bytes
    ext: str


def iter_samples(ref: ShardRef, columns: Sequence[str], missing: list[int] | None = None) -> Iterator[Sample]:
    """The kept samples of one shard in tar order with their image bytes. A kept row without an image
    in the tar is skipped and counted in ``missing[0]``."""
    table = kept_table(ref, columns)
    rows = {r["key"]: r for r in table.to_pylist()}
    seen = 0
    if exists(ref.tar):
        for s in iter_tar(ref.tar):
            row = rows.get(s["__key__"])
            ext = next((e for e in IMAGE_EXTS if e in s), None)
            if row is None or ext is None:
                continue
            seen += 1
            yield Sample(row, s[ext], ext)
    else:  # img2dataset output_format parquet / files: the shard's images at once
        images = shard_images(ref, list(rows))
        for key, row in rows.items():
            if key in images:
                seen += 1
                yield Sample(row, images[key], _sniff_ext(images[key]))
    if missing is not None:
        missing[0] += len(rows) - seen


def _sniff_ext(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"
