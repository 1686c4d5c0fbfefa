"""The read side of shard files: one listing, one tar reader, one set of image extensions.

A shard ``NNNNN`` is img2dataset's triple: ``NNNNN.tar`` (kept samples: ``<key>.<ext>``,
``<key>.txt``, ``<key>.json``), ``NNNNN.parquet`` (every row, SAMPLES schema) and
``NNNNN_stats.json``, written last: its presence marks the shard as done.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from clipcrawl.base.storage import fs_and_path
from clipcrawl.schemas.keys import shard_name

STATS_SUFFIX = "_stats.json"
#: member extensions that hold a sample's image, in the order a reader prefers them
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class ShardRef:
    """One shard's files: ``<root>/<name>.{tar,parquet}`` and ``<root>/<name>_stats.json``."""

    root: str  # directory URL or path
    name: str  # "00042"

    @property
    def id(self) -> int:
        return int(self.name)

    def path(self, suffix: str) -> str:
        return f"{self.root.rstrip('/')}/{self.name}{suffix}"

    @property
    def tar(self) -> str:
        return self.path(".tar")

    @property
    def parquet(self) -> str:
        return self.path(".parquet")

    @property
    def stats(self) -> str:
        return self.path(STATS_SUFFIX)

    @classmethod
    def of(cls, root: str, shard_id: int) -> ShardRef:
        return cls(str(root).rstrip("/"), shard_name(shard_id))


def shards_dir(path: str | os.PathLike[str]) -> str:
    """``DATASET/shards`` when it exists (our dataset layout), else ``path`` itself (img2dataset)."""
    path = os.fspath(path).rstrip("/")
    fs, p = fs_and_path(path)
    return f"{path}/shards" if fs.isdir(f"{p}/shards") else path


def list_shards(path: str | os.PathLike[str], done_only: bool = True) -> list[ShardRef]:
    """Shards under ``path`` (a dataset or a shard folder), sorted by id.

    ``done_only``: only shards whose stats file exists (finished, img2dataset's convention);
    otherwise every ``NNNNN.parquet``.
    """
    root = shards_dir(path)
    fs, p = fs_and_path(root)
    if not fs.isdir(p):
        return []
    names = set()
    fs.invalidate_cache(p)  # object-store listings are cached per process; other writers add shards
    for f in fs.ls(p, detail=False):
        base = f.rstrip("/").rsplit("/", 1)[-1]
        stem = base[: -len(STATS_SUFFIX)] if base.endswith(STATS_SUFFIX) else (
            base[: -len(".parquet")] if (not done_only and base.endswith(".parquet")) else None)
        if stem and stem.isdigit():
            names.add(stem)
    return [ShardRef(root, n) for n in sorted(names, key=int)]


def next_shard_id(path: str | os.PathLike[str]) -> int:
    """First unused shard id (counting unfinished shards too), for appending runs."""
    shards = list_shards(path, done_only=False)
    return shards[-1].id + 1 if shards else 0


def is_done(ref: ShardRef) -> bool:
    fs, p = fs_and_path(ref.stats)
    return fs.exists(p)


# ------------------------------------------------------------------ tar
def split_member(name: str) -> tuple[str, str]:
    """``dir/KEY.ext.more`` -> (``KEY``, ``ext.more``): webdataset's grouping of tar members."""
    key, _, ext = name.rsplit("/", 1)[-1].partition(".")
    return key, ext


def iter_tar(url: str) -> Iterator[dict[str, Any]]:
    """Samples of a webdataset tar as ``{"__key__": key, ext: bytes, ...}`` (consecutive members
    with the same key prefix form one sample, as webdataset groups them). A broken or truncated tar
    raises ``tarfile.ReadError`` naming ``url``."""
    try:
        yield from _iter_tar(url)
    except (tarfile.TarError, EOFError) as e:
        raise tarfile.ReadError(f"{url}: {e}") from None


def _iter_tar(url: str) -> Iterator[dict[str, Any]]:
    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        current: dict[str, Any] | None = None
        for m in tar:
            if not m.isfile():
                continue
            key, ext = split_member(m.name)
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            current[ext] = data
        _check_complete(tar, fs.size(path), url)
        if current is not None:
            yield current


def index_tar(url: str) -> dict[str, dict[str, tuple[int, int]]]:
    """key -> {ext: (data offset, size)} of every member, reading headers only (seeks over data).
    A tar cut short (a member's data past the end of the file) raises ``tarfile.ReadError``."""
    fs, path = fs_and_path(url)
    out: dict[str, dict[str, tuple[int, int]]] = {}
    end = 0
    try:
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for m in tar:
                if m.isfile():
                    key, ext = split_member(m.name)
                    out.setdefault(key, {})[ext] = (m.offset_data, m.size)
                    end = max(end, m.offset_data + m.size)
            _check_complete(tar, fs.size(path), url)
    except (tarfile.TarError, EOFError) as e:
        raise tarfile.ReadError(f"{url}: {e}") from None
    if end > fs.size(path):
        raise tarfile.ReadError(f"{url}: truncated ({fs.size(path)} bytes, members end at {end})")
    return out


def _check_complete(tar: tarfile.TarFile, size: int, url: str) -> None:
    """A tar ends with two zero blocks after its last member; without them it was cut short (tarfile
    itself stops silently at a truncated header). Compressed streams are not checked."""
    stream = getattr(tar.fileobj, "comptype", "tar")
    if stream == "tar" and size < tar.offset + 2 * tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"{url}: truncated (no end-of-archive marker after byte {tar.offset})")


def image_ext(exts: Collection[str]) -> str | None:
    """The image extension among a sample's member extensions (None: no image)."""
    return next((e for e in IMAGE_EXTS if e in exts), None)


def sample_image(sample: dict[str, Any]) -> bytes | None:
    ext = image_ext(sample)
    return None if ext is None else sample[ext]


def read_images(ref: ShardRef | str, keys: Collection[str] | None = None) -> dict[str, bytes]:
    """key -> encoded image bytes of the samples in a shard's tar (``ref`` or a tar URL), all of them
    or only ``keys``; empty if there is no tar."""
    url = ref.tar if isinstance(ref, ShardRef) else ref
    fs, path = fs_and_path(url)
    if not fs.exists(path):
        return {}
    if keys is None:
        return {s["__key__"]: img for s in iter_tar(url) if (img := sample_image(s)) is not None}
    wanted, out = set(keys), {}
    for s in iter_tar(url):  # stops reading once every wanted key is found
        if s["__key__"] in wanted and (img := sample_image(s)) is not None:
            out[s["__key__"]] = img
            if len(out) == len(wanted):
                break
    return out


def _folder_images(ref: ShardRef, keys: Collection[str] | None) -> dict[str, bytes]:
    """``output_format: files``: ``NNNNN/<key>.<ext>``."""
    fs, folder = fs_and_path(ref.path(""))
    if not fs.isdir(folder):
        return {}
    out: dict[str, bytes] = {}
    for f in fs.ls(folder, detail=False):
        key, ext = split_member(f)
        if ext in IMAGE_EXTS and (keys is None or key in keys) and key not in out:
            with fs.open(f, "rb") as fh:
                out[key] = fh.read()
    return out


def _column_images(ref: ShardRef, keys: Collection[str] | None) -> dict[str, bytes]:
    """``output_format: parquet``: the image bytes in a column named after the format (``jpg``...)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = fs_and_path(ref.parquet)
    if not fs.exists(path):
        return {}
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        col = next((e for e in IMAGE_EXTS if e in schema.names
                    and schema.field(e).type in (pa.binary(), pa.large_binary())), None)
        if col is None or "key" not in schema.names:
            return {}
        t = pf.read(columns=["key", col])
    wanted = None if keys is None else set(keys)
    return {k: v for k, v in zip(t.column("key").to_pylist(), t.column(col).to_pylist())
            if v is not None and (wanted is None or k in wanted)}


def shard_images(ref: ShardRef, keys: Collection[str] | None = None) -> dict[str, bytes]:
    """key -> image bytes of a shard whatever its output format: the tar (webdataset), the
    ``NNNNN/`` folder (files) or the image column of the Parquet (parquet); later sources only
    fill keys the earlier ones lack."""
    out = read_images(ref, keys)
    for source in (_folder_images, _column_images):
        if keys is not None and len(out) >= len(set(keys)):
            break
        for k, v in source(ref, keys).items():
            out.setdefault(k, v)
    return out
