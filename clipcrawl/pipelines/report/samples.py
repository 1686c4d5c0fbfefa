"""Sample grids: random kept samples, the lowest-scoring kept, the highest-scoring dropped by CLIP.

Rows are picked from the Parquet with DuckDB (only key/url/caption/status/score columns).
Thumbnails of kept samples are read from their shard with :mod:`clipcrawl.base.shardfiles` (local
or remote): ``NNNNN.tar`` (:func:`~clipcrawl.base.shardfiles.read_images`: the tar is read only
until the wanted members are found), else ``NNNNN/<key>.jpg`` (output_format files) or the image
column of ``NNNNN.parquet`` (output_format parquet) through
:func:`~clipcrawl.base.shardfiles.shard_images`; random ones come from at most ``max_tars``
shards. Shards hold kept samples only, so a dropped sample's image is looked up in
``dropped/NNNNN.tar`` (same member naming, written by writers that keep dropped images) and
then in the shard itself; when none holds it, its card shows the caption and URL without an
image (``image`` is None). A shard file that turns out unreadable is recorded in
``parts.unreadable`` and its cards go without images.
"""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from clipcrawl.base.shardfiles import ShardRef, read_images, shard_images
from clipcrawl.pipelines.report.check import error_text, readable_parquet
from clipcrawl.pipelines.report.layout import DatasetParts, basename, stem
from clipcrawl.pipelines.report.sql import columns_of, connect, files_sql
from clipcrawl.pipelines.shardloop import UNREADABLE
from clipcrawl.schemas.status import Status

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


def _cards(con, files: list[str], where: str, order: str, limit: int) -> list[SampleCard]:
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


# (label, file read (an unreadable one is recorded), keys -> image bytes)
Source = tuple[str, str, Callable[[set[str]], dict[str, bytes]]]


def _attach_images(parts: DatasetParts, cards: list[SampleCard], sources_for: Callable[[str], list[Source]]) -> None:
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
        (_, url, load), keys = needed[label]
        missing = {c.key for c in cards if c.image is None and c.key in keys}
        if not missing:
            continue
        try:
            found = load(missing)
        except UNREADABLE as e:
            parts.mark_unreadable(url, f"cannot read images ({error_text(e)})")
            continue
        for key, data in found.items():
            thumb = thumbnail(data)
            for card in cards:
                if card.key == key and card.image is None and thumb:
                    card.image, card.image_from = thumb, label


def kept_sources(parts: DatasetParts, shard: str) -> list[Source]:
    """Where the images of a shard's kept samples are: its tar, else its folder or Parquet column."""
    if shard in parts.tar_files:
        tar = parts.tar_files[shard]
        return [(basename(tar), tar, lambda keys, t=tar: read_images(t, keys))]
    if shard in parts.bad_tar_shards() or parts.shard_dir is None:
        return []
    ref = ShardRef(parts.shard_dir, shard)
    if shard in parts.image_dirs:
        return [(f"{shard}/", parts.image_dirs[shard], lambda keys, r=ref: shard_images(r, keys))]
    if ref.parquet in parts.sample_files:
        return [(basename(ref.parquet), ref.parquet, lambda keys, r=ref: shard_images(r, keys))]
    return []


def dropped_sources(parts: DatasetParts, shard: str) -> list[Source]:
    out: list[Source] = []
    if shard in parts.dropped_tars:
        tar = parts.dropped_tars[shard]
        out.append((f"dropped/{basename(tar)}", tar, lambda keys, t=tar: read_images(t, keys)))
    return out + kept_sources(parts, shard)


def _grids(con, parts: DatasetParts, n_random: int, n_ranked: int, seed: int,
           max_tars: int) -> dict[str, list[SampleCard]]:
    files = parts.sample_files
    with_tar = [f for f in files if stem(f) in parts.tar_files or stem(f) in parts.image_dirs] or files
    rng = random.Random(seed)
    chosen = sorted(rng.sample(with_tar, min(max_tars, len(with_tar))))
    ok = f"status = '{Status.SUCCESS}'"
    return {
        "random_kept": _cards(con, chosen, ok, f"hash({{key}} || '{int(seed)}')", n_random),
        "lowest_kept": _cards(con, files, ok + " AND {clip} IS NOT NULL", "{clip} ASC, {key}", n_ranked),
        "top_dropped_clip": _cards(con, files, f"status = '{Status.FILTERED_CLIP}' AND {{clip}} IS NOT NULL",
                                   "{clip} DESC, {key}", n_ranked),
    }


def pick_samples(
    parts: DatasetParts,
    n_random: int = 24,
    n_ranked: int = 12,
    seed: int = 0,
    images: bool = True,
    max_tars: int = 3,
) -> dict[str, list[dict[str, Any]]]:
    """The three grids as lists of card dicts (``image`` None without ``images`` or when absent)."""
    import duckdb

    empty: dict[str, list[dict[str, Any]]] = {"random_kept": [], "lowest_kept": [], "top_dropped_clip": []}
    if not parts.sample_files:
        return empty
    con = connect(fs=parts.fs)
    try:
        grids = _grids(con, parts, n_random, n_ranked, seed, max_tars)
    except duckdb.Error:  # a file DuckDB cannot read (pick_samples used without aggregate): leave it out
        readable_parquet(con, parts, list(parts.sample_files))
        if not parts.sample_files:
            return empty
        grids = _grids(con, parts, n_random, n_ranked, seed, max_tars)
    finally:
        con.close()
    if images:
        _attach_images(parts, grids["random_kept"] + grids["lowest_kept"], lambda shard: kept_sources(parts, shard))
        _attach_images(parts, grids["top_dropped_clip"], lambda shard: dropped_sources(parts, shard))
    return {name: [asdict(c) for c in cards] for name, cards in grids.items()}
