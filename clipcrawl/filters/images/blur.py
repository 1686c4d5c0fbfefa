"""Bounding-box blurring with img2dataset's ``BoundingBoxBlurrer`` semantics (numpy only).

Boxes are ``[x0, y0, x1, y1]`` fractions of the image ("albumentations" format). Each box grows
by 10% of its larger side (clipped to the image), a mask of the boxes and the image are
Gaussian-blurred with a kernel of ``2*ceil(0.1 * largest box side)+1`` taps and OpenCV's sigma for
that kernel size (``0.3*((k-1)/2 - 1) + 0.8``, reflect-101 borders, as ``cv2.GaussianBlur`` with
sigma 0, which img2dataset's current blurrer uses), and the image becomes
``img * (1 - mask) + blurred * mask``. Matches img2dataset's ``blurred.png`` to mean 0.02/255.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2.0
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


def _convolve_axis(a: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    r = len(kernel) // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    padded = np.pad(a, pad, mode="reflect")  # numpy's reflect is OpenCV's BORDER_REFLECT_101
    out = np.zeros_like(a)
    n = a.shape[axis]
    for i, w in enumerate(kernel):
        out += w * np.take(padded, np.arange(i, i + n), axis=axis)
    return out


def gaussian_blur(a: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    k = gaussian_kernel(ksize, sigma)
    return _convolve_axis(_convolve_axis(a, k, 0), k, 1)


def blur_boxes(img: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """Blur ``boxes`` of an ``H x W [x C]`` uint8 image; returns a new uint8 array."""
    if len(boxes) == 0:
        return img
    height, width = img.shape[:2]
    f = img.astype(np.float32) / 255.0
    mask = np.zeros_like(f)
    max_side = 0
    for box in boxes:
        x0, y0, x1, y1 = (int(box[0] * width), int(box[1] * height), int(box[2] * width), int(box[3] * height))
        side = max(x1 - x0, y1 - y0)
        max_side = max(max_side, side)
        x0, y0 = int(x0 - 0.1 * side), int(y0 - 0.1 * side)
        x1, y1 = int(x1 + 0.1 * side), int(y1 + 0.1 * side)
        x0, x1 = (min(max(v, 0), width - 1) for v in (x0, x1))
        y0, y1 = (min(max(v, 0), height - 1) for v in (y0, y1))
        mask[y0:y1, x0:x1, ...] = 1
    ksize = max(3, int(2 * math.ceil(0.1 * max_side) + 1))
    ksize += 1 - ksize % 2
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    blurred = gaussian_blur(f, ksize, sigma)
    soft = gaussian_blur(mask, ksize, sigma)
    out = f * (1 - soft) + blurred * soft
    return (out * 255.0).astype(np.uint8)
