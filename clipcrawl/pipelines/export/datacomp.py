"""``--format datacomp-uids``: the subset file DataComp's ``resharder.py -s`` takes.

Format (read from DataComp's resharder.py: ``u16 = np.dtype("u8,u8")``, ``load_subset`` asserts
``subset.dtype == u16``, samples are looked up with ``np.searchsorted(subset, divmod(int(uid, 16), 2**64))``):
a ``.npy`` of a structured array of two little-endian uint64 fields (``f0`` = high 64 bits, ``f1`` = low 64
bits of the 128-bit uid), sorted ascending (lexicographic over (f0, f1)), one entry per kept sample. The
uid is the ``uid`` column DataComp's pool metadata Parquet carries (32 hex characters), kept by
``clipcrawl download --save-additional-columns uid``. Memory: 16 bytes per kept sample (the array is
sorted in memory, as DataComp's own tools load it whole).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.storage import atomic_open
from clipcrawl.pipelines.export.source import SourcePlan, kept_table
from clipcrawl.schemas.config import ConfigError
from clipcrawl.schemas.export import DATACOMP_UID_DTYPE, UID_COLUMN

HEX32 = r"^[0-9a-fA-F]{1,32}$"


def uid_path(out: str) -> str:
    out = out.rstrip("/")
    return out if out.endswith(".npy") else f"{out}/uids.npy"


def check_uids(plan: SourcePlan, dataset: str) -> None:
    if UID_COLUMN not in plan.types:
        raise ConfigError(f"{dataset}: no '{UID_COLUMN}' column in its shards: datacomp-uids needs the uid the "
                          "input carried (DataComp pool metadata; download with --save-additional-columns uid)")
    if not (pa.types.is_string(plan.types[UID_COLUMN]) or pa.types.is_large_string(plan.types[UID_COLUMN])):
        raise ConfigError(f"{dataset}: column '{UID_COLUMN}' is {plan.types[UID_COLUMN]}, not 32 hex characters")


def uids_of(table: pa.Table, where: str) -> np.ndarray:
    """The (high, low) uint64 pairs of a table's ``uid`` column (exit 2 on a null or non-hex uid)."""
    col = table.column(UID_COLUMN).combine_chunks() if table.num_rows else pa.array([], pa.string())
    if col.null_count:
        raise ConfigError(f"{where}: {col.null_count} kept rows have no uid")
    ok = pc.match_substring_regex(col, HEX32)
    if not pc.all(ok).as_py() and len(col):
        bad = col.filter(pc.invert(ok))[0].as_py()
        raise ConfigError(f"{where}: uid {bad!r} is not up to 32 hex characters")
    padded = pc.utf8_lpad(col, 32, "0").to_pylist()
    raw = np.frombuffer(bytes.fromhex("".join(padded)), dtype=">u8").reshape(-1, 2)
    out = np.empty(len(padded), DATACOMP_UID_DTYPE)
    out["f0"], out["f1"] = raw[:, 0], raw[:, 1]
    return out


def write_uids(plan: SourcePlan, out: str, progress=None) -> int:
    parts = []
    for ref in plan.shards:
        t = kept_table(ref, [UID_COLUMN])
        parts.append(uids_of(t, ref.parquet))
        if progress is not None:
            progress.update(t.num_rows)
    uids = np.sort(np.concatenate(parts)) if parts else np.empty(0, DATACOMP_UID_DTYPE)
    with atomic_open(uid_path(out)) as f:
        np.save(f, uids)
    return len(uids)
