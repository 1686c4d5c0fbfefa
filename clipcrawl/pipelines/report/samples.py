"""Sample grids: random kept samples, the lowest-scoring kept, the highest-scoring dropped by CLIP.

Rows are picked from the Parquet with DuckDB (only key/url/caption/status/score columns).
Thumbnails of kept samples are read from their shard: ``NNNNN.tar`` (only the headers are
scanned until the wanted members are found), ``NNNNN/<key>.jpg`` (output_format files) or the
image column of ``NNNNN.parquet`` (output_format parquet); random ones come from at most
``max_tars`` shards. Shards hold kept samples only, so a dropped sample's image is looked up in
``dropped/NNNNN.tar`` (same member naming, written by writers that keep dropped images) and
then in the shard itself; when none holds it, its card shows the caption and URL without an
image (``image`` is None).
"""

from __future__ import annotations

import base64
import io
import random
import tarfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipcrawl.pipelines.report.layout import DatasetParts
from clipcrawl.pipelines.report.sql import columns_of, connect, files_sql
from clipcrawl.schemas.status import Status

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
THUMB_SIZE = 160


@dataclass
class SampleCard:
    key: str
    shard: str
    url: str | None
    caption: str | None
    status: str
    clip_similarity: float | None
    error_message: str | None
    image: str | None = None  # data: URI of a small JPEG thumbnail
    image_from: str | None = None  # tar file name the image came from


def _cards(con, files: list[Path], where: str, order: str, limit: int) -> list[SampleCard]:
    if not files or limit <= 0:
        return []
    have = columns_of(con, files)

    def c(name: str, cast: str = "VARCHAR") -> str:
        return f"CAST({name} AS {cast})" if name in have else f"CAST(NULL AS {cast})"

    sql = f"""SELECT {c("key")}, regexp_extract(filename, '([^/\\\\]+)\\.parquet$', 1), {c("url")}, {c("caption")},
                     {c("status")}, {c("clip_similarity", "DOUBLE")}, {c("error_message")}
              FROM {files_sql(files)} WHERE {where.format(clip=c("clip_similarity", "DOUBLE"))}
              ORDER BY {order.format(clip=c("clip_similarity", "DOUBLE"), key=c("key"))} LIMIT {int(limit)}"""
    return [SampleCard(*r) for r in con.execute(sql).fetchall()]


def thumbnail(data: bytes, size: int = THUMB_SIZE) -> str | None:
    """A small JPEG data: URI of encoded image bytes; None when they do not decode."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (size * 2, size * 2))
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=70, optimize=True)
    except Exception:  # noqa: BLE001 - a broken image becomes a card without a thumbnail
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def read_images(tar_path: Path, keys: set[str]) -> dict[str, bytes]:
    """Encoded image bytes of ``keys`` from one tar (headers are scanned, other members skipped)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                stem, dot, ext = base.partition(".")
                if stem in keys and stem not in found and ("." + ext.lower()) in IMAGE_EXTS:
                    f = tf.extractfile(m)
                    if f is not None:
                        found[stem] = f.read()
                        if len(found) == len(keys):
                            break
    except (OSError, tarfile.TarError, EOFError):
        pass
    return found


def read_dir_images(folder: Path, keys: set[str]) -> dict[str, bytes]:
    """Images of ``keys`` from a shard folder (``output_format: files``)."""
    found: dict[str, bytes] = {}
    for key in keys:
        for ext in IMAGE_EXTS:
            p = folder / f"{key}{ext}"
            if p.is_file():
                found[key] = p.read_bytes()
                break
    return found


def read_parquet_images(path: Path, keys: set[str]) -> dict[str, bytes]:
    """Images of ``keys`` from an image column (jpg/png/webp) of a shard Parquet (``output_format: parquet``)."""
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(path).schema_arrow.names
        col = next((c for c in ("jpg", "png", "webp", "jpeg") if c in names), None)
        if col is None or "key" not in names:
            return {}
        t = pq.read_table(path, columns=["key", col], filters=[("key", "in", sorted(keys))])
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in zip(t.column("key").to_pylist(), t.column(col).to_pylist()) if v}


Source = tuple[str, Callable[[set[str]], dict[str, bytes]]]  # (label, keys -> image bytes)


def _attach_images(cards: list[SampleCard], sources_for: Callable[[str], list[Source]]) -> None:
    """Fill ``image`` of each card from the first of its shard's sources that holds it."""
    needed: dict[str, tuple[Source, set[str]]] = {}
    order: list[str] = []
    for card in cards:
        for src in sources_for(card.shard):
            if src[0] not in needed:
                needed[src[0]] = (src, set())
                order.append(src[0])
            needed[src[0]][1].add(card.key)
    for label in order:
        (_, load), keys = needed[label]
        missing = {c.key for c in cards if c.image is None and c.key in keys}
        if not missing:
            continue
        for key, data in load(missing).items():
            thumb = thumbnail(data)
            for card in cards:
                if card.key == key and card.image is None and thumb:
                    card.image, card.image_from = thumb, label


def kept_sources(parts: DatasetParts, shard: str) -> list[Source]:
    out: list[Source] = []
    if shard in parts.tar_files:
        tar = parts.tar_files[shard]
        out.append((tar.name, lambda keys, t=tar: read_images(t, keys)))
    if shard in parts.image_dirs:
        folder = parts.image_dirs[shard]
        out.append((f"{folder.name}/", lambda keys, f=folder: read_dir_images(f, keys)))
    pq_file = next((f for f in parts.sample_files if f.stem == shard), None)
    if pq_file is not None:
        out.append((pq_file.name, lambda keys, f=pq_file: read_parquet_images(f, keys)))
    return out


def dropped_sources(parts: DatasetParts, shard: str) -> list[Source]:
    out: list[Source] = []
    if shard in parts.dropped_tars:
        tar = parts.dropped_tars[shard]
        out.append((f"dropped/{tar.name}", lambda keys, t=tar: read_images(t, keys)))
    return out + kept_sources(parts, shard)


def pick_samples(
    parts: DatasetParts,
    n_random: int = 24,
    n_ranked: int = 12,
    seed: int = 0,
    images: bool = True,
    max_tars: int = 3,
) -> dict[str, list[dict[str, Any]]]:
    """The three grids as lists of card dicts (``image`` None without ``images`` or when absent)."""
    files = parts.sample_files
    if not files:
        return {"random_kept": [], "lowest_kept": [], "top_dropped_clip": []}
    con = connect()
    with_tar = [f for f in files if f.stem in parts.tar_files or f.stem in parts.image_dirs] or files
    rng = random.Random(seed)
    chosen = sorted(rng.sample(with_tar, min(max_tars, len(with_tar))))
    ok = f"status = '{Status.SUCCESS}'"
    grids = {
        "random_kept": _cards(con, chosen, ok, f"hash({{key}} || '{int(seed)}')", n_random),
        "lowest_kept": _cards(con, files, ok + " AND {clip} IS NOT NULL", "{clip} ASC, {key}", n_ranked),
        "top_dropped_clip": _cards(con, files, f"status = '{Status.FILTERED_CLIP}' AND {{clip}} IS NOT NULL",
                                   "{clip} DESC, {key}", n_ranked),
    }
    con.close()
    if images:
        _attach_images(grids["random_kept"] + grids["lowest_kept"], lambda shard: kept_sources(parts, shard))
        _attach_images(grids["top_dropped_clip"], lambda shard: dropped_sources(parts, shard))
    return {name: [asdict(c) for c in cards] for name, cards in grids.items()}
