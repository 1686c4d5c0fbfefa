"""Write embeddings in clip-retrieval's layout, ready for ``clip-retrieval index`` / ``clip_back``::

    OUT/img_emb/img_emb_N.npy        float16 (n, D), L2-normalised image embeddings
    OUT/text_emb/text_emb_N.npy      float16 (n, D), caption embeddings, same rows
    OUT/metadata/metadata_N.parquet  same row order: image_path, caption, url, key, + our columns

``N`` is the shard name (``00042``), so the three folders sort identically and autofaiss /
clip_back's ParquetMetadataProvider concatenate them in the same order. ``image_path`` is the
sample key (clip-retrieval's choice for webdataset input); ``clip_back``'s default
``columns_to_return`` (url, image_path, caption, NSFW) are present except NSFW (we store punsafe).
Only rows that have embeddings and are still ``success`` (the kept samples) are written.
Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clipcrawl.base.storage import atomic_open, fs_and_path
from clipcrawl.schemas.status import Status

METADATA_COLUMNS: tuple[str, ...] = (
    "image_path", "caption", "url", "key", "clip_similarity", "punsafe", "pwatermark", "width", "height", "shard",
)


@dataclass
class EmbeddingFiles:
    img_emb: str
    text_emb: str
    metadata: str
    count: int


def _fixed_list_to_numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    d = arr.type.list_size
    if len(arr) == 0:
        return np.zeros((0, d), dtype=np.float32)
    flat = arr.flatten().to_numpy(zero_copy_only=False)  # rows are all valid here
    return flat.reshape(len(arr), d)


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def kept_with_embeddings(table: pa.Table) -> pa.Table:
    """Rows that have both embeddings and status success, in their table order."""
    if "image_embedding" not in table.column_names or table.num_rows == 0:
        return table.slice(0, 0)
    mask = pc.and_(
        pc.and_(pc.is_valid(table.column("image_embedding")), pc.is_valid(table.column("text_embedding"))),
        pc.equal(table.column("status"), Status.SUCCESS.value),
    )
    return table.filter(mask)


def write_embeddings(table: pa.Table, out_dir: str, part: str, shard: str | None = None) -> EmbeddingFiles:
    """Write one partition ``part`` (e.g. the shard name) of ``table``'s kept, embedded rows."""
    rows = kept_with_embeddings(table)
    root = out_dir.rstrip("/")
    fs, p = fs_and_path(root)
    for sub in ("img_emb", "text_emb", "metadata"):
        fs.makedirs(f"{p}/{sub}", exist_ok=True)
    files = EmbeddingFiles(
        f"{root}/img_emb/img_emb_{part}.npy", f"{root}/text_emb/text_emb_{part}.npy",
        f"{root}/metadata/metadata_{part}.parquet", rows.num_rows,
    )
    img = _fixed_list_to_numpy(rows.column("image_embedding")).astype(np.float16) if rows.num_rows else None
    txt = _fixed_list_to_numpy(rows.column("text_embedding")).astype(np.float16) if rows.num_rows else None
    d = table.column("image_embedding").type.list_size if "image_embedding" in table.column_names else 0
    img = img if img is not None else np.zeros((0, d), np.float16)
    txt = txt if txt is not None else np.zeros((0, d), np.float16)
    with atomic_open(files.img_emb) as f:
        f.write(_npy_bytes(img))
    with atomic_open(files.text_emb) as f:
        f.write(_npy_bytes(txt))
    with atomic_open(files.metadata) as f:
        pq.write_table(metadata_table(rows, shard if shard is not None else part), f)
    return files


def metadata_table(rows: pa.Table, shard: str, columns: Sequence[str] = METADATA_COLUMNS) -> pa.Table:
    n = rows.num_rows
    out: dict[str, pa.Array] = {}
    for name in columns:
        if name == "image_path":
            out[name] = rows.column("key").combine_chunks() if "key" in rows.column_names else pa.nulls(n, pa.string())
        elif name == "shard":
            out[name] = pa.array([shard] * n, pa.string())
        elif name in rows.column_names:
            out[name] = rows.column(name).combine_chunks()
    return pa.table(out)
