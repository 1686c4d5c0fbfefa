"""``clipcrawl run``'s flat memory: the work file written chunk by chunk and published batch by batch.

The work file must read back as the permissive concat of its chunks (chunks of one shard may differ in
schema) and appear atomically; publishing it batch by batch (dedup on the rows without images) must write
the same shard files, byte for byte, as deduplicating and writing the whole shard at once.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clipcrawl.base.layout import DatasetLayout
from clipcrawl.base.shardfiles import ShardRef
from clipcrawl.pipelines.passes.process import PlannedShard, ProcessPlanned
from clipcrawl.pipelines.plan import initial_samples
from clipcrawl.pipelines.runstate import RunState
from clipcrawl.pipelines.workfile import check_work, iter_work, promote, write_work
from clipcrawl.pipelines.writer import write_shard
from clipcrawl.schemas.config import RunConfig
from clipcrawl.schemas.tables import IMAGE_COLUMN, PAIRS, conform


def _chunks() -> list[pa.Table]:
    return [
        pa.table({"key": ["a", "b"], "score": pa.array([1.0, 2.0], pa.float32())}),
        pa.table({"key": ["c"], "score": pa.nulls(1), "extra": pa.array([7], pa.int64())}),  # null-typed, new col
        pa.table({"key": ["d", "e", "f"], "score": pa.array([3.0, None, 4.0], pa.float32())}),
        pa.table({"key": pa.array([], pa.string())}),  # a chunk missing columns
    ]


def test_work_file_reads_back_as_the_permissive_concat_in_batches(tmp_path):
    url = str(tmp_path / "work" / "00000.arrow")
    chunks = _chunks()
    assert write_work(iter(chunks), url) == 6
    batches = list(iter_work(url))
    want = pa.concat_tables(chunks, promote_options="permissive")
    assert pa.concat_tables(batches).equals(want)
    assert max(b.num_rows for b in batches) == 3  # one chunk at a time, never the whole
    assert check_work(url) == len(batches)
    assert [b.column_names for b in iter_work(url, ["key", "missing"])] == [["key"]] * len(batches)
    assert promote(chunks[0], want.schema).column("extra").null_count == 2


def test_work_file_is_atomic(tmp_path):
    url = tmp_path / "work" / "00000.arrow"

    def broken():
        yield _chunks()[0]
        raise RuntimeError("fetch died")

    with pytest.raises(RuntimeError, match="fetch died"):
        write_work(broken(), str(url))
    assert not url.exists() and not list(url.parent.glob(".*"))
    url.parent.mkdir(exist_ok=True)
    url.write_bytes(b"ARROW1\x00\x00 truncated")
    with pytest.raises(pa.ArrowInvalid):
        check_work(str(url))


def _jpeg(seed: int, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.BILINEAR)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def _scored_shard(n: int = 30) -> pa.Table:
    """A shard as the workers leave it: some failed rows, exact and near duplicates across chunks, and the
    duplicates' better copy (higher CLIP score) after the worse one."""
    pairs = conform(pa.table({"key": [f"k{i:03d}" for i in range(n)],
                              "url": [f"http://x/{i}.jpg" for i in range(n)],
                              "caption": [f"cap {i}" for i in range(n)]}), PAIRS)
    t = initial_samples(pairs, 1, "00000")
    images = [_jpeg(i % 12) if i % 9 else None for i in range(n)]  # i % 12: repeats -> duplicates
    status = ["success" if img is not None else "failed_to_download" for img in images]
    cols = {
        "status": pa.array(status), "error_message": pa.array([None if s == "success" else "download: x" for s in status]),
        IMAGE_COLUMN: pa.array(images, pa.binary()),
        "sha256": pa.array([hashlib.sha256(b).hexdigest() if b else None for b in images]),
        "width": pa.array([48 if b else None for b in images], pa.int32()),
        "height": pa.array([48 if b else None for b in images], pa.int32()),
        "original_width": pa.array([48 if b else None for b in images], pa.int32()),
        "original_height": pa.array([48 if b else None for b in images], pa.int32()),
        "clip_similarity": pa.array([float(i % 5) / 10 if b else None for i, b in enumerate(images)], pa.float32()),
    }
    for name, arr in cols.items():
        i = t.schema.get_field_index(name)
        t = t.set_column(i, name, arr) if i >= 0 else t.append_column(name, arr)
    return t


def _tar_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


@pytest.mark.parametrize("hashed_chunks", [(0, 1, 2), (0, 2)])  # (0, 2): chunk 1 left for the driver to hash
def test_publish_batch_by_batch_writes_what_the_whole_shard_did(tmp_path, hashed_chunks):
    from clipcrawl.filters.dedup import MarkDuplicates
    from clipcrawl.filters.dedup.stage import HashImages

    (tmp_path / "u.tsv").write_text("url\tcaption\n")
    shard = _scored_shard()
    chunks = [shard.slice(s, 10) for s in range(0, shard.num_rows, 10)]
    cfg_of = lambda root: RunConfig(dataset=str(root), sources={"urls": {"path": str(tmp_path / "u.tsv")}},  # noqa: E731
                                    filters={"clip": {"model": "tiny", "pretrained": None}})
    hasher = HashImages(cfg_of(tmp_path).dedup)
    chunks = [hasher(c) if i in hashed_chunks else c for i, c in enumerate(chunks)]

    # before: the whole shard in memory, deduplicated and written at once
    old = DatasetLayout(str(tmp_path / "old"))
    dedup = MarkDuplicates(cfg_of(old.root).dedup, old.root)
    whole = dedup(pa.concat_tables(chunks, promote_options="permissive"))
    dedup.commit()
    write_shard(ShardRef(old.shards, "00000"), whole)

    new = DatasetLayout(str(tmp_path / "new"))
    work = f"{new.work_dir(1)}/00000.arrow"
    write_work(iter(chunks), work)
    p = ProcessPlanned(cfg_of(new.root), new, RunState(run=1, state="process"))
    p.publish(PlannedShard("00000", "unused", work, True), work)
    p.dedup.teardown()

    assert "duplicate" in whole.column("status").to_pylist()
    a, b = Path(ShardRef(old.shards, "00000").parquet), Path(ShardRef(new.shards, "00000").parquet)
    assert a.read_bytes() == b.read_bytes()
    assert _tar_members(Path(ShardRef(old.shards, "00000").tar)) == _tar_members(Path(ShardRef(new.shards, "00000").tar))
    assert not Path(work).exists()


def _new_pairs_python(keys: list[str], seen: set[str]) -> list[int]:
    """The plan's selection as it was (Python objects per row): first row of each unseen key, by key."""
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in seen and k not in first:
            first[k] = i
    return sorted(first.values(), key=lambda i: keys[i])


@given(st.lists(st.text(min_size=1, max_size=4), max_size=60), st.sets(st.text(min_size=1, max_size=4), max_size=10))
@settings(max_examples=150, deadline=None)
def test_plan_selection_in_arrow_equals_the_python_one(keys, seen):
    from clipcrawl.pipelines.plan import new_pairs

    pairs = pa.table({"key": pa.array(keys, pa.string()), "row": pa.array(range(len(keys)), pa.int64())})
    got = new_pairs(pairs, pa.chunked_array([pa.array(sorted(seen), pa.string())], pa.string()))
    assert got.column("row").to_pylist() == _new_pairs_python(keys, seen)
