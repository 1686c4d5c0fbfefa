"""Output geometry with img2dataset's resize semantics (pure arithmetic, no pixels).

img2dataset (``resizer.py``) decides per mode whether to resize, with which filter and to which
size: ``keep_ratio``/``center_crop`` scale the *smaller* side to ``image_size`` (center_crop then
crops a centred square), ``border``/``keep_ratio_largest`` scale the *larger* side (border then
pads to a white square), ``no`` keeps the size. Sizes round like albumentations' ``*_max_size``
(Python ``round``); ``resize_only_if_bigger`` skips the resize when the compared side is not
larger than ``image_size``. Downscaling uses area interpolation, upscaling Lanczos.
"""

from __future__ import annotations

from dataclasses import dataclass

RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")


@dataclass(frozen=True)
class Geometry:
    """What to do with an image of ``width`` x ``height`` (after EXIF orientation)."""

    resize_to: tuple[int, int] | None  # (w, h) to resample to, None: keep the pixels
    downscale: bool  # area filter (True) or Lanczos (False)
    crop: tuple[int, int, int, int] | None  # (left, top, right, bottom) after the resize
    pad_to: tuple[int, int] | None  # white canvas (w, h); the image is centred on it
    offset: tuple[int, int] = (0, 0)  # where the image lands on the canvas

    @property
    def output_size(self) -> tuple[int, int] | None:
        if self.pad_to:
            return self.pad_to
        if self.crop:
            left, top, right, bottom = self.crop
            return right - left, bottom - top
        return self.resize_to


def plan_geometry(width: int, height: int, image_size: int, resize_mode: str,
                  resize_only_if_bigger: bool = False) -> Geometry:
    """Compute the resize/crop/pad of img2dataset's ``Resizer`` for one image."""
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize_mode {resize_mode!r}; use one of {', '.join(RESIZE_MODES)}")
    none = Geometry(None, False, None, None)
    if resize_mode == "no":
        return none
    if resize_mode in ("keep_ratio", "center_crop"):
        side = min(width, height)
    else:
        side = max(width, height)
    downscale = side > image_size
    if resize_only_if_bigger and not downscale:
        return none
    scale = image_size / side
    new = (round(width * scale), round(height * scale)) if side != image_size else (width, height)
    new = (max(1, new[0]), max(1, new[1]))
    resize_to = None if new == (width, height) else new
    w, h = new
    if resize_mode == "center_crop":
        left, top = (w - image_size) // 2, (h - image_size) // 2
        crop = (left, top, left + image_size, top + image_size)
        if crop == (0, 0, w, h):
            crop = None
        return Geometry(resize_to, downscale, crop, None)
    if resize_mode == "border":
        pad_w, pad_h = max(image_size, w), max(image_size, h)
        offset = (int((pad_w - w) / 2.0), int((pad_h - h) / 2.0))
        pad = (pad_w, pad_h) if (pad_w, pad_h) != (w, h) else None
        return Geometry(resize_to, downscale, None, pad, offset if pad else (0, 0))
    return Geometry(resize_to, downscale, None, None)
