"""Per-row fingerprints of a samples table, as numpy arrays (the unit the index stores).

Exact fingerprints are 64-bit: ``url_hash`` (blake2b of the normalised URL + caption), ``sha256``
and ``pixels`` (the first 64 bits of the hex digests). A zero value with ``has_*`` false means
missing. ``emb`` holds the image embeddings (rows of zeros where missing), ``model`` the CLIP
model that produced them. ``thumb`` holds thumbnails (n, THUMB_BYTES) uint8 (32x32 grey, then 4x4
chromaticity) and ``crop`` their window pHashes (n, crops.N_CODES) uint64, zeros where ``has_thumb``
is false (None: no row has one).
Thumbnails never enter the samples table: the stage decodes them from the ``image`` column, and a
caller that has them otherwise (``clipcrawl dedup`` from the tars) passes them in the transient
``THUMB_COLUMN``, which :class:`.MarkDuplicates` consumes and drops.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.filters.dedup.crops import N_CODES, THUMB_BYTES, crop_codes
from clipcrawl.filters.dedup.hashes import image_hashes, url_caption_hash
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN

EMBEDDING_COLUMN = "image_embedding"
THUMB_COLUMN = "dedup_thumbnail"  # transient binary(THUMB_BYTES) column, consumed by MarkDuplicates

#: one row of an index segment (the persistent dedup index, store.py)
SEGMENT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("url_hash", pa.uint64()),
        ("sha256", pa.uint64()),
        ("pixels", pa.uint64()),
        ("phash", pa.uint64()),
        ("shard", pa.string()),
        ("crop", pa.list_(pa.uint64(), N_CODES)),
    ]
)


def hex64(values: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """First 64 bits of hex digests (blake2b of the text when it is not hex) and a presence mask."""
    out = np.zeros(len(values), dtype=np.uint64)
    ok = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if not v:
            continue
        try:
            out[i] = int(v[:16], 16) if len(v) >= 16 else int.from_bytes(
                hashlib.blake2b(v.encode(), digest_size=8).digest(), "big")
        except ValueError:
            out[i] = int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "big")
        ok[i] = True
    return out, ok


def table_embeddings(table: pa.Table, column: str = EMBEDDING_COLUMN) -> np.ndarray | None:
    """The (n, d) float32 embeddings of a list column; null rows are zeros. None if absent."""
    if column not in table.column_names or table.num_rows == 0:
        return None
    col = table.column(column).combine_chunks()
    if col.null_count == len(col):
        return None
    lengths = pc.fill_null(pc.list_value_length(col), -1).to_numpy(zero_copy_only=False)
    d = int(lengths.max())
    if d <= 0:
        return None
    out = np.zeros((len(col), d), dtype=np.float32)
    valid = lengths == d
    if valid.any():
        flat = pc.list_flatten(col.filter(pa.array(valid))).to_numpy(zero_copy_only=False)
        out[valid] = np.asarray(flat, dtype=np.float32).reshape(-1, d)
    return out


@dataclass
class Fingerprints:
    key: np.ndarray  # object (str)
    url_hash: np.ndarray  # uint64
    sha256: np.ndarray
    has_sha256: np.ndarray
    pixels: np.ndarray
    has_pixels: np.ndarray
    phash: np.ndarray
    has_phash: np.ndarray
    shard: np.ndarray  # object (str | None)
    emb: np.ndarray | None = None  # (n, d) float16/32, zeros where missing
    model: str | None = field(default=None)
    has_thumb: np.ndarray | None = None  # bool; None = no thumbnails
    thumb: np.ndarray | None = None  # (n, THUMB_BYTES) uint8 (may be a memory map)
    crop: np.ndarray | None = None  # (n, N_CODES) uint64

    def __post_init__(self) -> None:
        if self.has_thumb is None:
            self.has_thumb = np.zeros(len(self.key), dtype=bool)
        if self.thumb is not None and self.crop is None:
            self.crop = np.zeros((len(self.key), N_CODES), dtype=np.uint64)
            rows = np.flatnonzero(self.has_thumb)
            if len(rows):
                self.crop[rows] = crop_codes(np.asarray(self.thumb[rows]))

    def __len__(self) -> int:
        return len(self.key)

    @classmethod
    def empty(cls) -> Fingerprints:
        z, b = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=bool)
        return cls(np.zeros(0, dtype=object), z, z, b, z, b, z, b, np.zeros(0, dtype=object))

    def _optional(self, rows=None) -> dict:
        def pick(x):
            return None if x is None else (x if rows is None else np.asarray(x[rows]))

        return {"emb": pick(self.emb), "model": self.model, "thumb": pick(self.thumb), "crop": pick(self.crop)}

    def take(self, rows: np.ndarray) -> Fingerprints:
        kw = {f: getattr(self, f)[rows] for f in _ARRAYS}
        return Fingerprints(**kw, **self._optional(rows))

    def without_embeddings(self) -> Fingerprints:
        return Fingerprints(**{f: getattr(self, f) for f in _ARRAYS}, **{**self._optional(), "emb": None, "model": None})

    @classmethod
    def concat(cls, parts: Sequence[Fingerprints]) -> Fingerprints:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        kw = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _ARRAYS}
        dims = {p.emb.shape[1] for p in parts if p.emb is not None}
        emb, model = None, next((p.model for p in parts if p.emb is not None and p.model), None)
        if len(dims) == 1:
            d = dims.pop()
            dtype = np.result_type(*[p.emb.dtype for p in parts if p.emb is not None])
            emb = np.concatenate([np.asarray(p.emb, dtype=dtype) if p.emb is not None
                                  else np.zeros((len(p), d), dtype=dtype) for p in parts])
        thumb = crop = None
        if any(p.thumb is not None for p in parts):
            thumb = np.concatenate([np.asarray(p.thumb) if p.thumb is not None
                                    else np.zeros((len(p), THUMB_BYTES), dtype=np.uint8) for p in parts])
            crop = np.concatenate([p.crop if p.crop is not None else np.zeros((len(p), N_CODES), dtype=np.uint64)
                                   for p in parts])
        return cls(**kw, emb=emb, model=model, thumb=thumb, crop=crop)

    def to_segment(self) -> pa.Table:
        def opt(values, mask):
            return pa.array(values, pa.uint64(), mask=~mask)

        if self.crop is not None and self.has_thumb.any():
            flat = pa.array(np.ascontiguousarray(self.crop).ravel(), pa.uint64())
            crop = pa.FixedSizeListArray.from_arrays(flat, N_CODES, mask=pa.array(~self.has_thumb))
        else:
            crop = pa.nulls(len(self), SEGMENT_SCHEMA.field("crop").type)
        return pa.Table.from_arrays(
            [pa.array(self.key.tolist(), pa.string()), pa.array(self.url_hash, pa.uint64()),
             opt(self.sha256, self.has_sha256), opt(self.pixels, self.has_pixels), opt(self.phash, self.has_phash),
             pa.array(self.shard.tolist(), pa.string()), crop], schema=SEGMENT_SCHEMA)

    @classmethod
    def from_segment(cls, table: pa.Table, emb: np.ndarray | None, model: str | None,
                     thumb: np.ndarray | None = None, crops_current: bool = True) -> Fingerprints:
        """Rows of an index segment; ``thumb`` (n, THUMB_BYTES) when the segment stores thumbnails
        (the ``crop`` column marks which rows have one; its codes are recomputed unless
        ``crops_current``). Segments of older indexes have neither: their rows have no thumbnails."""
        def u64(name):
            col = table.column(name)
            ok = col.is_valid().to_numpy(zero_copy_only=False)
            return pc.fill_null(col, 0).to_numpy().astype(np.uint64), ok

        sha, sha_ok = u64("sha256")
        pix, pix_ok = u64("pixels")
        ph, ph_ok = u64("phash")
        has_thumb, crop = None, None
        if thumb is not None and "crop" in table.column_names:
            col = table.column("crop").combine_chunks()
            has_thumb = col.is_valid().to_numpy(zero_copy_only=False)
            crop = np.zeros((len(col), N_CODES), dtype=np.uint64)
            if not crops_current:
                crop = None  # computed from the thumbnails in __post_init__
            elif has_thumb.any():
                crop[has_thumb] = col.filter(pa.array(has_thumb)).flatten().to_numpy().reshape(-1, N_CODES)
        return cls(np.array(table.column("key").to_pylist(), dtype=object), u64("url_hash")[0], sha, sha_ok,
                   pix, pix_ok, ph, ph_ok, np.array(table.column("shard").to_pylist(), dtype=object),
                   emb=emb, model=model if emb is not None else None, has_thumb=has_thumb,
                   thumb=thumb if has_thumb is not None else None, crop=crop)


_ARRAYS = ("key", "url_hash", "sha256", "has_sha256", "pixels", "has_pixels", "phash", "has_phash", "shard",
           "has_thumb")


def _col(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def table_thumbnails(table: pa.Table) -> tuple[np.ndarray | None, np.ndarray]:
    """(n, THUMB_BYTES) uint8 thumbnails from ``THUMB_COLUMN`` (None if absent) and a presence mask."""
    if THUMB_COLUMN not in table.column_names or table.num_rows == 0:
        return None, np.zeros(table.num_rows, dtype=bool)
    values = table.column(THUMB_COLUMN).to_pylist()
    has = np.array([v is not None and len(v) == THUMB_BYTES for v in values], dtype=bool)
    out = np.zeros((table.num_rows, THUMB_BYTES), dtype=np.uint8)
    for i in np.flatnonzero(has):
        out[i] = np.frombuffer(values[i], dtype=np.uint8)
    return (out if has.any() else None), has


def fingerprints(table: pa.Table, embeddings: np.ndarray | None = None, *, only_success: bool = False,
                 model: str | None = None) -> Fingerprints:
    """Fingerprints of every row of a samples table (or only its ``success`` rows)."""
    if only_success and table.num_rows:
        ok = pc.equal(table.column("status"), Status.SUCCESS.value).to_numpy(zero_copy_only=False)
        if embeddings is None:
            embeddings = table_embeddings(table)
        table = table.filter(pa.array(ok))
        embeddings = None if embeddings is None else np.asarray(embeddings)[ok]
    elif embeddings is None:
        embeddings = table_embeddings(table)
    urls, caps = _col(table, "url"), _col(table, "caption")
    url_hash = np.array([int.from_bytes(url_caption_hash(u or "", c)[:8], "big") for u, c in zip(urls, caps)],
                        dtype=np.uint64)
    sha, sha_ok = hex64(_col(table, "sha256"))
    pix, pix_ok = hex64(_col(table, "pixel_hash"))
    ph_list = _col(table, "phash")
    ph_ok = np.array([p is not None for p in ph_list], dtype=bool)
    ph = np.array([p or 0 for p in ph_list], dtype=np.uint64)
    if model is None and embeddings is not None:
        model = next((m for m in _col(table, "clip_model") if m), None)
    thumb, has_thumb = table_thumbnails(table)
    return Fingerprints(np.array(_col(table, "key"), dtype=object), url_hash, sha, sha_ok, pix, pix_ok, ph, ph_ok,
                        np.array(_col(table, "shard"), dtype=object), emb=embeddings, model=model,
                        has_thumb=has_thumb, thumb=thumb)


def fill_image_hashes(table: pa.Table, rows: np.ndarray | None = None, *, thumbnails: bool = False) -> pa.Table:
    """Compute ``pixel_hash``/``phash`` from the ``image`` column where they are null (and, with
    ``thumbnails``, the transient ``THUMB_COLUMN`` where it is null), in one decode per image."""
    from clipcrawl.base.stage import set_column

    if IMAGE_COLUMN not in table.column_names or table.num_rows == 0:
        return table
    pix, ph = _col(table, "pixel_hash"), _col(table, "phash")
    th = _col(table, THUMB_COLUMN) if thumbnails else None
    need = [i for i in (range(table.num_rows) if rows is None else rows.tolist())
            if pix[i] is None or ph[i] is None or (th is not None and th[i] is None)]
    if not need:
        return table
    images = table.column(IMAGE_COLUMN)
    workers = min(len(need) // 64 + 1, os.cpu_count() or 1)  # Pillow decodes without the GIL
    with ThreadPoolExecutor(workers) as pool:
        hashes = list(pool.map(lambda i: image_hashes(images[i].as_py(), thumbnails), need))
    for i, h in zip(need, hashes):
        pix[i] = pix[i] if pix[i] is not None else h.pixel_hash
        ph[i] = ph[i] if ph[i] is not None else h.phash
        if th is not None and th[i] is None:
            th[i] = h.thumb
    table = set_column(table, "pixel_hash", pa.array(pix, pa.string()))
    table = set_column(table, "phash", pa.array(ph, pa.uint64()))
    if th is not None:
        table = set_column(table, THUMB_COLUMN, pa.array(th, pa.binary()))
    return table
