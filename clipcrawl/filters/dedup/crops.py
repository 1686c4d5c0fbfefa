"""Crop-tolerant perceptual candidates: pHashes of fixed windows of each image's thumbnail.

A crop of up to 10% per axis moves the 64-bit pHash of an image by 8-24 bits (median 8-10 on
bench/dedup_quality.py's variant set), mostly beyond the full-image search radius, and a looser
radius links far more unrelated images than crops. Instead every image gets 44 codes computed
from its 32x32 grey thumbnail (:func:`.hashes.thumbnail_of`) the pHash way (area-resample the
region to 32x32, 8x8 DCT, bit = coefficient > median): code 0 for the whole thumbnail, 35
for windows of every combination of per-axis crops (left, right) in ``EDGES`` except none, and
8 centred windows (3, 6 or 9% from both sides of each axis, ``CENTRED``). If B is a crop of A,
B's code 0 is close to the code of the window of A that B covers, to within ~1.5-2% per edge
instead of up to 10%. (With 4 edges up to 6%, 16 codes, one-sided 10% crops stayed 10-12 bits
away: variant-set crop recall 0.94; with the 9% edges it is 0.96, at ~2x the code cost. Without
the centred windows, 8% cut from every side of real photos was caught 0.585 of the time; with
them 0.970 at the same precision: bench/dedup_crop_variants.py.)

A candidate pair is a code 0 within ``k`` of any code of the other image (both directions),
found with the approximate multi-index search of :mod:`.hamming` (radius 1 per 21-bit block);
the closest pair of codes also gives the alignment that :mod:`.verify` starts from. Codes are
recomputed from stored thumbnails (~5 us per image), so the index stores thumbnails only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from clipcrawl.filters.dedup.hamming import HammingIndex, Pairs, popcount

THUMB = 32  # thumbnail side (pixels), see hashes.thumbnail_of
GREY_BYTES = THUMB * THUMB  # the grey thumbnail: first part of a stored thumbnail
COLOUR_GRID = 4  # then the chromaticity (r, g) of a 4x4 grid of cells, see hashes.thumbnail_of
COLOUR_BYTES = 2 * COLOUR_GRID * COLOUR_GRID
THUMB_BYTES = GREY_BYTES + COLOUR_BYTES
#: per-axis (left/top, right/bottom) crops of the windows
EDGES = ((0.0, 0.0), (0.03, 0.03), (0.06, 0.0), (0.0, 0.06), (0.09, 0.0), (0.0, 0.09))
#: centred crops (the same cut from both sides of an axis): combined only with each other
CENTRED = ((0.03, 0.03), (0.06, 0.06), (0.09, 0.09))
SPANS = EDGES + tuple(c for c in CENTRED if c not in EDGES)
#: (x edges, y edges) of each code; index 0 is the whole image; then every pair of EDGES, then
#: the centred windows (a crop of up to 10% from every side is within ~1.5% per edge of one).
_WHOLE = ((0.0, 0.0), (0.0, 0.0))
_PAIRS = tuple(w for w in itertools.product(EDGES, EDGES) if w != _WHOLE)
WINDOWS = (_WHOLE,) + _PAIRS + tuple(w for w in itertools.product(CENTRED, CENTRED) if w not in _PAIRS)
N_CODES = len(WINDOWS)
#: Identifies the code definition; an index storing codes of another definition recomputes them.
WINDOWS_ID = (f"thumb{THUMB}-dct8-" + "-".join(f"{a:g}:{b:g}" for a, b in EDGES)
              + "-centred-" + "-".join(f"{a:g}" for a, _ in CENTRED))
PROBE_RADIUS = 1
_CHUNK = 8192


def area_matrix(n_out: int, n_in: int, lo: float, hi: float) -> np.ndarray:
    """(n_out, n_in) matrix averaging the input over each output pixel's span of [lo, hi] (0..1)."""
    s = hi - lo
    a = lo + s * np.arange(n_out) / n_out
    b = a + s / n_out
    ja = np.arange(n_in) / n_in
    overlap = np.minimum(b[:, None], ja[None, :] + 1 / n_in) - np.maximum(a[:, None], ja[None, :])
    return np.clip(overlap, 0, None) / (s / n_out)


def _operators() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row operators (DCT rows x area resampling) for every y span, column operators for every x
    span, and where each window sits in the (x span, y span) grid they produce."""
    dct8 = np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(32)[None, :] + 1) / 64)
    left = np.concatenate([dct8 @ area_matrix(32, THUMB, a, 1 - b) for a, b in SPANS])  # (8 * spans, THUMB)
    right = np.concatenate([(dct8 @ area_matrix(32, THUMB, a, 1 - b)).T for a, b in SPANS], 1)
    pick = np.array([SPANS.index(x) * len(SPANS) + SPANS.index(y) for x, y in WINDOWS])
    return left.astype(np.float32), right.astype(np.float32), pick


_LEFT, _RIGHT, _PICK = _operators()


def grey_of(thumbs: np.ndarray) -> np.ndarray:
    """The (n, THUMB, THUMB) grey part of (n, THUMB_BYTES) thumbnails (or of grey-only ones)."""
    t = np.asarray(thumbs)
    return t.reshape(len(t), -1)[:, :GREY_BYTES].reshape(-1, THUMB, THUMB)


def crop_codes(thumbs: np.ndarray) -> np.ndarray:
    """(n, N_CODES) uint64 codes of (n, THUMB_BYTES) thumbnails (or their grey part, or (n, THUMB, THUMB))."""
    t = grey_of(thumbs)
    out = np.zeros((len(t), N_CODES), dtype=np.uint64)
    e = len(SPANS)
    for s in range(0, len(t), _CHUNK):
        x = t[s : s + _CHUNK].astype(np.float32)
        c = np.matmul(np.matmul(_LEFT, x), _RIGHT).reshape(len(x), e, 8, e, 8)  # (n, y span, u, x span, v)
        c = c.transpose(0, 3, 1, 2, 4).reshape(len(x), e * e, 64)[:, _PICK]
        part = np.partition(c, (31, 32), axis=2)
        bits = 2 * c > part[:, :, 31:32] + part[:, :, 32:33]  # > median of the 64 coefficients
        out[s : s + len(x)] = np.packbits(bits, axis=2).view(">u8")[..., 0]
    return out


def hint_boxes(ca: np.ndarray, cb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pairs of code rows (P, N_CODES): the frame of B in A's coordinates ``(x0, x1, y0, y1)``
    implied by the closest (code 0, window) pair, and that distance."""
    d_ab = popcount((ca[:, :1] ^ cb).ravel()).reshape(len(ca), -1)  # A whole vs B windows: A = B[w]
    d_ba = popcount((cb[:, :1] ^ ca).ravel()).reshape(len(ca), -1)  # B whole vs A windows: B = A[w]
    j_ab, j_ba = d_ab.argmin(1), d_ba.argmin(1)
    best_ab, best_ba = d_ab.min(1), d_ba.min(1)
    win = np.array([[x[0], 1 - x[1], y[0], 1 - y[1]] for x, y in WINDOWS], dtype=np.float32)
    box = win[j_ba].copy()  # B = A[window]
    inv = win[j_ab]  # A = B[window]: B's frame in A's coordinates is the inverse map
    sx, sy = inv[:, 1] - inv[:, 0], inv[:, 3] - inv[:, 2]
    inverse = np.stack([-inv[:, 0] / sx, (1 - inv[:, 0]) / sx, -inv[:, 2] / sy, (1 - inv[:, 2]) / sy], 1)
    use = best_ab < best_ba
    box[use] = inverse[use]
    return box, np.minimum(best_ab, best_ba)


def _unique_pairs(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> Pairs:
    """One row per (a, b), keeping the smallest distance."""
    if not len(a):
        return Pairs.empty()
    order = np.lexsort((d, b, a))
    a, b, d = a[order], b[order], d[order]
    first = np.concatenate([[True], (a[1:] != a[:-1]) | (b[1:] != b[:-1])])
    return Pairs(a[first], b[first], d[first])


@dataclass
class CropIndex:
    """Crop candidates against a fixed set of images, given their codes (n, N_CODES)."""

    codes: np.ndarray
    k: int

    def __post_init__(self) -> None:
        self._all: HammingIndex | None = None
        self._whole: HammingIndex | None = None

    def search(self, q: np.ndarray) -> Pairs:
        """Pairs (query row, indexed row, closest code distance) within ``k``."""
        if not len(q) or not len(self.codes):
            return Pairs.empty()
        if self._all is None:
            self._all = HammingIndex(self.codes.ravel(), self.k, probe_radius=PROBE_RADIUS)
            self._whole = HammingIndex(self.codes[:, 0], self.k, probe_radius=PROBE_RADIUS)
        p1 = self._all.search(q[:, 0])  # query whole vs indexed windows (query = crop of indexed)
        p2 = self._whole.search(q[:, 1:].ravel())  # query windows vs indexed whole (indexed = crop of query)
        m = N_CODES - 1
        return _unique_pairs(np.concatenate([p1.a, p2.a // m]), np.concatenate([p1.b // N_CODES, p2.b]),
                             np.concatenate([p1.distance, p2.distance]))


def crop_self_pairs(codes: np.ndarray, k: int) -> Pairs:
    """All pairs ``a < b`` of rows with a code 0 within ``k`` of a code of the other row."""
    if len(codes) < 2:
        return Pairs.empty()
    p = HammingIndex(codes.ravel(), k, n_query_hint=len(codes), probe_radius=PROBE_RADIUS).search(codes[:, 0])
    b = p.b // N_CODES
    keep = p.a != b
    a, b = p.a[keep], b[keep]
    return _unique_pairs(np.minimum(a, b), np.maximum(a, b), p.distance[keep])
