"""What ``clipcrawl export`` writes: the formats, the default columns, and how each column is typed in
each format (MosaicML MDS encodings, LitData leaves, Hugging Face features, DataComp's uid array).

One rule for every format: a sample is a kept row (status ``success`` now) with its image bytes as they
are in the tar (no re-encoding), its caption, and the chosen metadata columns, typed after
:data:`clipcrawl.schemas.tables.SAMPLES` (user columns after their Parquet type). A column that is null in
some kept row is written so the null survives: MDS ``json`` encoding and a LitData ``JsonLeaf`` (the value
or ``None``); Parquet (Hugging Face) keeps nulls natively.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

Format = Literal["mds", "litdata", "hf", "datacomp-uids"]
FORMATS: tuple[str, ...] = ("mds", "litdata", "hf", "datacomp-uids")

#: The image column of every format (encoded bytes: JPEG/PNG/WebP as downloaded and resized).
IMAGE = "image"
#: Always exported (the sample's identity and its text).
REQUIRED_COLUMNS: tuple[str, ...] = ("key", "caption")
#: ``--columns`` default: the sample's identity and text, where it came from, its size, its scores
#: (and DataComp's ``uid`` when the input carried one). Columns the dataset lacks are left out.
DEFAULT_COLUMNS: tuple[str, ...] = ("key", "caption", "url", "width", "height", "original_width",
                                    "original_height", "sha256", "language", "clip_similarity", "punsafe",
                                    "pwatermark", "uid")
#: Never exported as metadata: the status is always success, the rest is bookkeeping or bytes.
EXCLUDED_COLUMNS: frozenset[str] = frozenset({"status", "error_message", IMAGE, "image_embedding", "text_embedding"})

#: MDS encodings (streaming.base.format.mds.encodings) of the Arrow types a column may have.
_MDS: dict[pa.DataType, str] = {
    pa.string(): "str", pa.large_string(): "str", pa.int8(): "int8", pa.int16(): "int16",
    pa.int32(): "int32", pa.int64(): "int64", pa.uint8(): "uint8", pa.uint16(): "uint16",
    pa.uint32(): "uint32", pa.uint64(): "uint64", pa.float16(): "float16", pa.float32(): "float32",
    pa.float64(): "float64", pa.binary(): "bytes", pa.large_binary(): "bytes",
}


def mds_encoding(t: pa.DataType, nullable: bool) -> str:
    """The MDS encoding of a column of Arrow type ``t`` (``json`` for nested/temporal types and for a
    column with nulls: MDS's typed encodings have no null)."""
    if nullable or pa.types.is_boolean(t):
        return "json"
    return _MDS.get(t, "json")


def python_value(v: object) -> object:
    """A JSON-able Python value of a column cell (timestamps as ISO 8601 strings)."""
    if hasattr(v, "isoformat"):
        return v.isoformat()  # type: ignore[union-attr]
    return v


def needs_json(t: pa.DataType) -> bool:
    """Types carried as JSON in MDS and LitData (lists, structs, timestamps, booleans)."""
    return t not in _MDS or pa.types.is_boolean(t)


# ---------------------------------------------------------------- Hugging Face
#: ``datasets.Image()``'s storage: a struct of the encoded bytes and a path (the file name in the tar).
HF_IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
HF_SPLIT = "train"


# ---------------------------------------------------------------- DataComp
#: DataComp's subset file (resharder.py ``u16 = np.dtype("u8,u8")``; ``load_subset`` asserts this dtype):
#: a structured array of (high 64 bits, low 64 bits) of each 128-bit uid, sorted, for ``np.searchsorted``.
DATACOMP_UID_DTYPE = np.dtype("u8,u8")
UID_COLUMN = "uid"
