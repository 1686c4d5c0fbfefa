"""Exact and perceptual fingerprints of samples.

* :func:`url_caption_hash` - 16-byte digest of the normalised URL + whitespace-collapsed caption.
* :func:`pixel_hash` - hex digest of the decoded pixels (after EXIF orientation, as RGB): equal for
  the same picture re-saved losslessly or with different metadata; the downloader calls it on the
  resized bytes it writes.
* :func:`phash` - the 64-bit DCT perceptual hash of ``imagehash.phash`` (grey 32x32 LANCZOS, 2-D
  DCT-II, top-left 8x8 block, bit = coefficient > median, first bit most significant), computed in
  one decode together with the pixel hash. Near-constant images (grey std < ``FLAT_STD``) get no
  pHash: their DCT signs are noise and would make unrelated blank images "near-duplicates".
* :func:`thumbnail_of` - the 32x32 grey thumbnail (area average, aspect ratio not kept; 1024
  bytes) and a 4x4 grid of chromaticities (32 bytes) from the same decode, which the crop-tolerant
  search (:mod:`.crops`, grey only) and the verification of every perceptual match (:mod:`.verify`)
  work on. None for near-constant images.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

import numpy as np

#: Grey-level standard deviation (0-255) of the 32x32 thumbnail below which no pHash is computed.
FLAT_STD = 1.0
_WS = re.compile(r"\s+")


def normalize_url(url: str) -> str:
    """The crawler's canonical URL form (lowercase scheme/host, no default port, no fragment ...),
    or the stripped input when it is not an http(s) URL."""
    from clipcrawl.crawler.urls import normalize_url as _normalize

    try:
        out = _normalize(url)
    except (ValueError, UnicodeError):
        out = None
    return out if out is not None else (url or "").strip()


def normalize_caption(caption: str | None) -> str:
    return _WS.sub(" ", caption or "").strip()


def url_caption_hash(url: str, caption: str | None) -> bytes:
    """16-byte digest identifying (normalised URL, normalised caption)."""
    h = hashlib.blake2b(digest_size=16, person=b"clipcrawl-url")
    h.update(normalize_url(url).encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(normalize_caption(caption).encode("utf-8", "surrogatepass"))
    return h.digest()


@dataclass(frozen=True)
class ImageHashes:
    pixel_hash: str | None
    phash: int | None  # unsigned 64-bit
    error: str | None = None
    thumb: bytes | None = None  # THUMB x THUMB grey uint8, row-major


def _open_rgb(data: bytes):
    from PIL import Image, ImageOps

    img = Image.open(io.BytesIO(data))
    img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        img = img.convert("RGB")
    return img


def pixel_hash_of(img) -> str:
    h = hashlib.blake2b(digest_size=16, person=b"clipcrawl-pix")
    h.update(f"{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def phash_of(img) -> int | None:
    """imagehash.phash of a PIL image as an unsigned 64-bit int (None for near-constant images)."""
    from PIL import Image

    grey = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    if grey.std() < FLAT_STD:
        return None
    coeffs = _dct_low(grey)
    bits = (coeffs > np.median(coeffs)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _dct_low(grey: np.ndarray) -> np.ndarray:
    """The 8x8 low-frequency block of the 2-D DCT-II (scipy's unnormalised one, as imagehash uses).

    scipy comes with the ``[dedup]`` extra (imagehash needs it); a core install multiplies by the
    DCT matrix instead: the same coefficients within 1e-9, so the same bits except where a
    coefficient ties the median (flat, symmetric drawings), where a few bits may differ."""
    try:
        from scipy.fft import dct
    except ImportError:
        n = grey.shape[0]
        k = np.arange(8)[:, None]
        m = 2.0 * np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))
        return m @ grey @ m.T
    return dct(dct(grey, axis=0), axis=1)[:8, :8]


def thumbnail_of(img) -> bytes | None:
    """The verification thumbnail (``crops.THUMB_BYTES`` bytes; None for near-constant images): the
    32x32 grey image (box filter = area average), then the chromaticity ``r ~ R / (R + G + B)`` and
    ``g`` of a 4x4 grid of cells (x 255; shrunk toward grey by 20 levels per channel, so near-black
    cells, whose colour is noise, read as grey)."""
    from PIL import Image

    from clipcrawl.filters.dedup.crops import COLOUR_GRID, THUMB

    grey = img.convert("L").resize((THUMB, THUMB), Image.Resampling.BOX)
    data = grey.tobytes()
    if np.frombuffer(data, dtype=np.uint8).std() < FLAT_STD:
        return None
    rgb = img.convert("RGB").resize((COLOUR_GRID, COLOUR_GRID), Image.Resampling.BOX)
    cells = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)
    rg = (cells[:, :2] + 20) / (cells.sum(1, keepdims=True) + 60)  # shrunk toward grey: dark cells carry none
    return data + np.rint(rg * 255).astype(np.uint8).tobytes()


def image_hashes(data: bytes | None, thumbnail: bool = True) -> ImageHashes:
    """Pixel hash, pHash and thumbnail of encoded image bytes; failures are returned as ``error``."""
    if not data:
        return ImageHashes(None, None, "no image bytes")
    try:
        img = _open_rgb(data)
        return ImageHashes(pixel_hash_of(img), phash_of(img), thumb=thumbnail_of(img) if thumbnail else None)
    except Exception as e:  # noqa: BLE001 - any decoder failure is data, not a crash
        return ImageHashes(None, None, f"cannot decode image: {' '.join(str(e).split())[:120]}")


def pixel_hash(data: bytes) -> str | None:
    """Hash of the decoded pixels of encoded image bytes (None if undecodable)."""
    return image_hashes(data).pixel_hash


def phash(data: bytes) -> int | None:
    """64-bit perceptual hash of encoded image bytes (None if undecodable or near-constant)."""
    return image_hashes(data).phash
