"""Evaluation sets to keep out of the training data (``DedupConfig.exclude_near``).

A path is an image folder (searched recursively), a webdataset ``.tar``, or a folder of ``.tar``
shards. Each image is named ``<path's base name>/<relative path>`` (folders) or
``<shard base name>/<key>`` (tars): that name is what ``duplicate_of`` holds for a sample marked
``dedup_method = eval_set``. Fingerprints (pHash and 32x32 thumbnail, and embeddings when a CLIP
model is given) are cached next to the dedup index, keyed by the files' names, sizes and mtimes
and the model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

from clipcrawl.base.progress import Progress, log
from clipcrawl.filters.dedup.columns import THUMB_BYTES, Fingerprints
from clipcrawl.filters.dedup.hashes import image_hashes
from clipcrawl.schemas.config import ConfigError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CACHE_VERSION = 3  # 2: thumbnails, 3: with colour


def _files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    out = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        out += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith((*IMAGE_EXTS, ".tar"))]
    return out


def iter_images(paths: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """(name, encoded bytes) of every image under ``paths``."""
    from clipcrawl.base.shardfiles import iter_tar, sample_image

    for path in paths:
        if not os.path.exists(path):
            raise ConfigError(f"dedup.exclude_near: {path!r} does not exist (fix: an image folder or .tar shards)")
        base = os.path.basename(os.path.normpath(path))
        for f in _files(path):
            if f.endswith(".tar"):
                stem = os.path.basename(f)[: -len(".tar")]
                for sample in iter_tar(f):
                    img = sample_image(sample) or next(
                        (v for k, v in sample.items() if k.lower() in ("jpg", "jpeg", "png", "webp", "bmp")), None)
                    if img is not None:
                        yield f"{stem}/{sample['__key__']}", img
            else:
                rel = os.path.relpath(f, path) if os.path.isdir(path) else os.path.basename(f)
                with open(f, "rb") as fh:
                    yield f"{base}/{rel}".replace(os.sep, "/"), fh.read()


def _signature(paths: Sequence[str], model: str | None) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, model]).encode())
    for path in paths:
        for f in _files(path) if os.path.exists(path) else []:
            st = os.stat(f)
            h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_eval_set(paths: Sequence[str], embedder=None, cache_dir: str | None = None) -> Fingerprints:
    """Fingerprints of every evaluation image (``key`` = its name); cached in ``cache_dir``."""
    paths = [os.fspath(p) for p in paths]
    model = embedder.name if embedder is not None else None
    cache = None
    if cache_dir:
        cache = os.path.join(cache_dir, "evalsets", _signature(paths, model) + ".npz")
        if os.path.exists(cache):
            with np.load(cache, allow_pickle=False) as z:
                emb = z["emb"] if z["emb"].size else None
                return _fp(list(z["names"]), z["phash"], z["has_phash"], emb, model, z["thumb"], z["has_thumb"])
    names, phashes, has, images, thumbs = [], [], [], [], []
    with Progress("eval-set fingerprints", unit="img") as bar:
        for name, data in iter_images(paths):
            h = image_hashes(data)
            names.append(name)
            phashes.append(h.phash or 0)
            has.append(h.phash is not None)
            thumbs.append(h.thumb)
            if embedder is not None:
                images.append(data)
            bar.update(1)
    emb = None
    if embedder is not None and images:
        emb = embedder.embed(images).emb
    log.info("dedup: %d evaluation images from %s", len(names), ", ".join(paths))
    has_thumb = np.array([t is not None for t in thumbs], dtype=bool)
    thumb = np.zeros((len(names), THUMB_BYTES), dtype=np.uint8)
    for i in np.flatnonzero(has_thumb):
        thumb[i] = np.frombuffer(thumbs[i], dtype=np.uint8)
    fp = _fp(names, np.array(phashes, dtype=np.uint64), np.array(has, dtype=bool), emb, model, thumb, has_thumb)
    if cache:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = cache + f".tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, names=np.array(names, dtype=str), phash=fp.phash, has_phash=fp.has_phash,
                     emb=emb if emb is not None else np.zeros((0, 0), np.float32), thumb=thumb, has_thumb=has_thumb)
        os.replace(tmp, cache)
    return fp


def _fp(names: list[str], phash: np.ndarray, has: np.ndarray, emb: np.ndarray | None, model: str | None,
        thumb: np.ndarray, has_thumb: np.ndarray) -> Fingerprints:
    n = len(names)
    z, b = np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=bool)
    return Fingerprints(np.array(names, dtype=object), z, z, b, z.copy(), b.copy(), np.asarray(phash, np.uint64),
                        np.asarray(has, bool), np.full(n, None, dtype=object), emb=emb, model=model,
                        has_thumb=np.asarray(has_thumb, bool), thumb=np.asarray(thumb, np.uint8).reshape(n, THUMB_BYTES))
