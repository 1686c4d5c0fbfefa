"""Sample grids: random kept samples, the lowest-scoring kept, the highest-scoring dropped by CLIP.

Rows are picked from the Parquet with DuckDB (only key/url/caption/status/score columns).
Thumbnails are read from the shard tars: kept samples from ``NNNNN.tar`` (random ones come
from at most ``max_tars`` tars). Shard tars hold kept samples only, so a dropped sample's
image is looked up in ``dropped/NNNNN.tar`` (same member naming, written by writers that keep
dropped images) and then in ``NNNNN.tar``; when neither holds it, its card shows the caption
and URL without an image (``image`` is None).
"""

from __future__ import annotations

import base64
import io
import random
import tarfile
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


def _attach_images(cards: list[SampleCard], tars_for: Any) -> None:
    by_tar: dict[Path, set[str]] = {}
    for card in cards:
        for tar in tars_for(card.shard):
            by_tar.setdefault(tar, set()).add(card.key)
    for tar, keys in by_tar.items():
        missing = {c.key for c in cards if c.image is None and c.key in keys}
        if not missing:
            continue
        for key, data in read_images(tar, missing).items():
            thumb = thumbnail(data)
            for card in cards:
                if card.key == key and card.image is None and thumb:
                    card.image, card.image_from = thumb, tar.name if tar.parent.name != "dropped" else f"dropped/{tar.name}"


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
    with_tar = [f for f in files if f.stem in parts.tar_files] or files
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
        def kept_tars(shard: str) -> list[Path]:
            return [parts.tar_files[shard]] if shard in parts.tar_files else []

        def dropped_tars(shard: str) -> list[Path]:
            return [p for p in (parts.dropped_tars.get(shard), parts.tar_files.get(shard)) if p is not None]

        _attach_images(grids["random_kept"] + grids["lowest_kept"], kept_tars)
        _attach_images(grids["top_dropped_clip"], dropped_tars)
    return {name: [asdict(c) for c in cards] for name, cards in grids.items()}
