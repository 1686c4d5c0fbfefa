"""Verifying perceptual candidates by aligning 32x32 grey thumbnails.

Two images are kept as near-duplicates when, after the best crop/shift/scale alignment, their
blurred thumbnails correlate: normalised cross-correlation (NCC, invariant to brightness and
contrast) over the region both images show, with each image covering >= ``MIN_OVERLAP`` of the
other on both axes (crops up to ~20% per axis, i.e. two 10% crops of one original).

An alignment is B's frame in A's normalised coordinates, ``box = (x0, x1, y0, y1)``: B's left
edge lies at x0 of A's width, its right edge at x1 (a crop of A has 0 <= x0 < x1 <= 1). Search:
start from a hint (:func:`.crops.hint_boxes`), score it; unless already >= ``ACCEPT``, refine each
axis independently on the 1-D mean profiles (rows/columns restricted to the overlap; 7 x 7 edge
offsets of 1/64 around the current box) and re-score in 2-D, twice. Thumbnails are blurred
(Gaussian, sigma 1 px) first, so half-pixel resampling differences (thin lines, text) matter
less. NCC ignores brightness and contrast, so an accepted alignment must also keep the overlap's
mean grey and its contrast within a colour shift's reach (:func:`photometric_ok`), otherwise any
two "small dark shape on a flat background" images would match, and the colours of a 4x4 grid of
cells close (:func:`chroma_distance`), so the same layout in another colour is not a duplicate.
Cost: ~0.1-0.3 ms per pair in numpy, vectorised over pairs.
"""

from __future__ import annotations

import numpy as np

from clipcrawl.filters.dedup.crops import COLOUR_GRID, GREY_BYTES, THUMB, grey_of

F32 = np.float32
MIN_OVERLAP = 0.8
ACCEPT = 0.97  # a hint scoring this needs no search (resizes, re-encodes, colour shifts)
GATE = 0.3  # a hint scoring below this is not searched (no true pair of the variant set needed it)
GIVE_UP = 0.5  # after one refinement round below this: unrelated
# Brightness/contrast bounds on the aligned overlap (|log ratio| of mean grey and of its standard
# deviation). Variant-set true pairs (brightness/colour +-15%, contrast +-10%, crops) reach 0.17 and
# 0.33; a small shape on grey vs one on white or green reaches 0.2-0.7 / 0.6-1.3.
MAX_LOG_MEAN = 0.25
MAX_LOG_STD = 0.45
# Colour: mean L1 distance of (r, g) chromaticities over the 4x4 cells (B's cells vs the aligned cells
# of A). True variant-set pairs reach 0.14 (crop + colour shift), different colours 0.15-0.55.
MAX_CHROMA = 0.2
_KC = ((np.arange(THUMB) + 0.5) / THUMB).astype(F32)  # pixel centres, normalised
_OFFS = (np.arange(-3, 4) / 64.0).astype(F32)
_D0, _D1 = (x.ravel() for x in np.meshgrid(_OFFS, _OFFS, indexing="ij"))
_UP = 8  # profile upsampling for the 1-D search (nearest sample on a 1/8-pixel grid)
_FINE_X = np.clip(np.arange(THUMB * _UP + 1, dtype=F32) / _UP - 0.5, 0, THUMB - 1)
_FINE_I0 = np.minimum(_FINE_X.astype(np.int64), THUMB - 2)
_FINE_F = (_FINE_X - _FINE_I0).astype(F32)
_CHUNK = 2048


def _blur_matrix(n: int = THUMB, sigma: float = 1.0) -> np.ndarray:
    x = np.arange(n, dtype=np.float64)
    src = np.arange(-n, 2 * n)
    refl = np.where(src < 0, -src - 1, src)
    refl = np.where(refl >= n, 2 * n - 1 - refl, refl)  # mirror at the borders
    k = np.zeros((n, n))
    for s, r in zip(src, refl):
        k[:, r] += np.exp(-0.5 * ((x - s) / sigma) ** 2)
    return (k / k.sum(1, keepdims=True)).astype(F32)


_BLUR = _blur_matrix()


def prepare(thumbs: np.ndarray) -> np.ndarray:
    """Blurred float32 (n, THUMB, THUMB) from the grey part of uint8 thumbnails (n, THUMB_BYTES)."""
    t = grey_of(thumbs).astype(F32)
    return np.matmul(np.matmul(_BLUR, t), _BLUR.T)


def _ncc(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """NCC along the last axis over the samples where w (0/1) is set."""
    n = np.maximum(w.sum(-1), 1)
    wa, wb = a * w, b * w
    sa, sb = wa.sum(-1), wb.sum(-1)
    cov = (wa * b).sum(-1) - sa * sb / n
    va = (wa * a).sum(-1) - sa * sa / n
    vb = (wb * b).sum(-1) - sb * sb / n
    return cov / (np.sqrt(np.maximum(va, 0) * np.maximum(vb, 0)) + F32(1e-2))


def _sample(lo: np.ndarray, hi: np.ndarray):
    """A's pixel coordinates of B's pixel centres for edges lo, hi: lower index, weight, inside."""
    u = lo[:, None] + (hi - lo)[:, None] * _KC
    inside = (u >= 0) & (u <= 1)
    x = np.clip(u * THUMB - 0.5, 0, THUMB - 1)
    i0 = np.minimum(x.astype(np.int64), THUMB - 2)
    return i0, (x - i0).astype(F32), inside


def _lerp_rows(x: np.ndarray, i0: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Rows ``i0 + f`` (linear interpolation) of each (THUMB, THUMB) slice of x: (P, THUMB, THUMB)."""
    flat = x.reshape(-1, THUMB)
    idx = i0 + (np.arange(len(x)) * THUMB)[:, None]
    r0 = np.take(flat, idx, axis=0)
    return r0 + (np.take(flat, idx + 1, axis=0) - r0) * f[:, :, None]


def _valid(box: np.ndarray, in_x: np.ndarray, in_y: np.ndarray) -> np.ndarray:
    cover = np.minimum(np.minimum(box[:, 1], 1) - np.maximum(box[:, 0], 0),
                       np.minimum(box[:, 3], 1) - np.maximum(box[:, 2], 0))
    return (in_x.mean(1) >= MIN_OVERLAP) & (in_y.mean(1) >= MIN_OVERLAP) & (cover >= MIN_OVERLAP)


def _warp(a: np.ndarray, box: np.ndarray):
    """a resampled into b's frame (P, THUMB * THUMB), the overlap mask (0/1, same shape) and validity."""
    ix, fx, in_x = _sample(box[:, 0], box[:, 1])
    iy, fy, in_y = _sample(box[:, 2], box[:, 3])
    rows = _lerp_rows(a, iy, fy)  # (P, y out, x in)
    warped = _lerp_rows(np.ascontiguousarray(rows.transpose(0, 2, 1)), ix, fx).transpose(0, 2, 1)
    w = (in_y[:, :, None] & in_x[:, None, :]).astype(F32)
    n = len(a)
    return warped.reshape(n, -1), w.reshape(n, -1), _valid(box, in_x, in_y)


def score(a: np.ndarray, b: np.ndarray, box: np.ndarray) -> np.ndarray:
    """NCC of prepared thumbnails b and a resampled into b's frame (-1 where the overlap is too small)."""
    warped, w, valid = _warp(a, box)
    s = _ncc(warped, b.reshape(len(b), -1), w)
    return np.where(valid, s, F32(-1))


def photometric(a: np.ndarray, b: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log ratios (A / B) of the mean and the standard deviation of grey over the aligned overlap.

    NCC ignores brightness and contrast, so on its own it matches any two "dark blob on a flat
    background" images; near-duplicates keep both within a colour shift's reach."""
    warped, w, _ = _warp(a, box)
    bb = b.reshape(len(b), -1)
    n = np.maximum(w.sum(1), 1)
    ma, mb = (warped * w).sum(1) / n, (bb * w).sum(1) / n
    sa = np.sqrt(np.maximum((w * (warped - ma[:, None]) ** 2).sum(1) / n, 0))
    sb = np.sqrt(np.maximum((w * (bb - mb[:, None]) ** 2).sum(1) / n, 0))
    return np.log((ma + 8) / (mb + 8)), np.log((sa + 4) / (sb + 4))


def photometric_ok(a: np.ndarray, b: np.ndarray, box: np.ndarray) -> np.ndarray:
    dm, ds = photometric(a, b, box)
    return (np.abs(dm) <= MAX_LOG_MEAN) & (np.abs(ds) <= MAX_LOG_STD)


def colours(thumbs: np.ndarray) -> np.ndarray | None:
    """(n, COLOUR_GRID, COLOUR_GRID, 2) float32 chromaticities of thumbnails, None when they have none."""
    t = np.asarray(thumbs)
    t = t.reshape(len(t), -1)
    if t.shape[1] <= GREY_BYTES:
        return None
    return t[:, GREY_BYTES:].reshape(-1, COLOUR_GRID, COLOUR_GRID, 2).astype(F32) / F32(255)


def chroma_distance(ca: np.ndarray, cb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Mean L1 distance between B's colour cells and A's cells under them (nearest cell, by ``box``)."""
    centres = (np.arange(COLOUR_GRID, dtype=F32) + 0.5) / COLOUR_GRID
    x = box[:, :1] + (box[:, 1:2] - box[:, :1]) * centres
    y = box[:, 2:3] + (box[:, 3:4] - box[:, 2:3]) * centres
    ix = np.clip((x * COLOUR_GRID).astype(np.int64), 0, COLOUR_GRID - 1)
    iy = np.clip((y * COLOUR_GRID).astype(np.int64), 0, COLOUR_GRID - 1)
    p = np.arange(len(ca))[:, None, None]
    warped = ca[p, iy[:, :, None], ix[:, None, :]]  # (P, gy, gx, 2)
    return np.abs(warped - cb).sum(-1).mean((1, 2))


def _axis_search(pa: np.ndarray, pb: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best (lo, hi) near the given edges for 1-D profiles pa (of A) and pb (of B)."""
    p = len(pa)
    lo_h, hi_h = lo[:, None] + _D0, hi[:, None] + _D1  # (P, H)
    u = lo_h[..., None] + (hi_h - lo_h)[..., None] * _KC  # (P, H, THUMB)
    inside = ((u >= 0) & (u <= 1)).astype(F32)
    fine = pa[:, _FINE_I0] * (1 - _FINE_F) + pa[:, _FINE_I0 + 1] * _FINE_F  # (P, THUMB * _UP + 1)
    j = np.clip(np.rint(u * (THUMB * _UP)), 0, THUMB * _UP).astype(np.int64)
    j += (np.arange(p) * fine.shape[1])[:, None, None]
    va = np.take(fine.ravel(), j)
    wa = va * inside
    n = np.maximum(inside.sum(-1), 1)
    sa, saa = wa.sum(-1), (wa * va).sum(-1)
    sab = np.matmul(wa, pb[:, :, None])[..., 0]
    sb = np.matmul(inside, pb[:, :, None])[..., 0]
    sbb = np.matmul(inside, (pb * pb)[:, :, None])[..., 0]
    var = np.maximum(saa - sa * sa / n, 0) * np.maximum(sbb - sb * sb / n, 0)
    s = (sab - sa * sb / n) / (np.sqrt(var) + F32(1e-2))
    ok = (n >= MIN_OVERLAP * THUMB) & ((np.minimum(hi_h, 1) - np.maximum(lo_h, 0)) >= MIN_OVERLAP)
    k = np.where(ok, s, -2).argmax(1)
    r = np.arange(p)
    return lo_h[r, k], hi_h[r, k]


def _profiles(a: np.ndarray, b: np.ndarray, box: np.ndarray):
    """Column profiles over the rows both show, row profiles over the columns both show."""
    def weights(lo, hi):
        wa = ((_KC - lo[:, None] >= 0) & (hi[:, None] - _KC >= 0)).astype(F32)  # A pixels inside B frame
        u = lo[:, None] + (hi - lo)[:, None] * _KC
        wb = ((u >= 0) & (u <= 1)).astype(F32)  # B pixels inside A's frame
        return wa / np.maximum(wa.sum(1, keepdims=True), 1), wb / np.maximum(wb.sum(1, keepdims=True), 1)

    ya, yb = weights(box[:, 2], box[:, 3])
    xa, xb = weights(box[:, 0], box[:, 1])
    return (np.matmul(ya[:, None, :], a)[:, 0], np.matmul(yb[:, None, :], b)[:, 0],
            np.matmul(a, xa[:, :, None])[..., 0], np.matmul(b, xb[:, :, None])[..., 0])


def align(a: np.ndarray, b: np.ndarray, box: np.ndarray, rounds: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Best NCC and alignment for prepared thumbnail pairs, starting from ``box`` (P, 4)."""
    box = np.asarray(box, dtype=F32).copy()
    best = score(a, b, box)
    live = np.flatnonzero((best < ACCEPT) & (best >= GATE))
    for r in range(rounds):
        if not len(live):
            break
        pa_x, pb_x, pa_y, pb_y = _profiles(a[live], b[live], box[live])
        x0, x1 = _axis_search(pa_x, pb_x, box[live, 0], box[live, 1])
        y0, y1 = _axis_search(pa_y, pb_y, box[live, 2], box[live, 3])
        trial = np.stack([x0, x1, y0, y1], 1)
        s = score(a[live], b[live], trial)
        better = s > best[live]
        box[live[better]], best[live[better]] = trial[better], s[better]
        live = live[(best[live] < ACCEPT) & (best[live] >= (GIVE_UP if r == 0 else -2))]
    return best, box


def verify_pairs(prepared: np.ndarray, ia: np.ndarray, ib: np.ndarray, box: np.ndarray,
                 prepared_b: np.ndarray | None = None, colour: np.ndarray | None = None,
                 colour_b: np.ndarray | None = None) -> np.ndarray:
    """Aligned NCC of pairs (prepared[ia], prepared_b[ib]) from hint boxes, in chunks; -1 for pairs
    that fail the brightness/contrast bounds or (when both sides have ``colours``) the colour bound."""
    other = prepared if prepared_b is None else prepared_b
    other_colour = colour if prepared_b is None else colour_b
    out = np.full(len(ia), -1.0, dtype=F32)
    for s in range(0, len(ia), _CHUNK):
        sl = slice(s, s + _CHUNK)
        a, b = prepared[ia[sl]], other[ib[sl]]
        best, aligned = align(a, b, box[sl])
        ok = photometric_ok(a, b, aligned)
        if colour is not None and other_colour is not None:
            ok &= chroma_distance(colour[ia[sl]], other_colour[ib[sl]], aligned) <= MAX_CHROMA
        out[sl] = np.where(ok, best, F32(-1))
    return out
