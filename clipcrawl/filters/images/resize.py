"""Decode, check, resize and re-encode one downloaded image (img2dataset's ``Resizer``, on Pillow).

Order of work, cheapest first: read the header (format, size, EXIF) without decoding; refuse
decompression bombs and apply ``min_image_size`` / ``max_image_area`` / ``max_aspect_ratio``
from the header size; decode JPEGs DCT-reduced (``Image.draft``, libjpeg's 1/2, 1/4, 1/8 IDCT
scaling) to no less than ``jpeg_draft_gap`` times the output size, as Pillow's ``thumbnail``
does (default gap 1.25; tests compare it with img2dataset's full decode + INTER_AREA); normalise the mode (alpha over
white, CMYK through its ICC profile, 16-bit scaled, palette expanded; grayscale stays grayscale
as with img2dataset); resample, apply the EXIF orientation, crop or pad; encode.

Deviation from img2dataset, on purpose: the EXIF orientation is applied (OpenCV's
``IMREAD_UNCHANGED`` ignores it), so ``original_width``/``original_height`` are the displayed
size. Error strings keep img2dataset's wording (``image too small``, ``image area too large``,
``aspect ratio too large``, ``Image decoding error``).
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from clipcrawl.filters.images.exif import TRANSPOSE, exif_json, orientation
from clipcrawl.filters.images.geometry import Geometry, plan_geometry
from clipcrawl.schemas.components import DEFAULT_JPEG_DRAFT_GAP

if TYPE_CHECKING:
    from clipcrawl.schemas.config import DownloadConfig

ENCODERS = {"jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png"), "webp": ("WEBP", "image/webp")}
WHITE = 255
#: Images whose header declares more pixels than this are refused before decoding.
DEFAULT_MAX_DECODE_PIXELS = 100_000_000
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
#: img2dataset's (OpenCV) interpolation names -> Pillow filters. "area" (OpenCV's INTER_AREA: each output pixel
#: the mean of the source area it covers, partial pixels weighted) -> Hamming: Pillow's BOX counts whole source
#: pixels only, and against img2dataset's real output it is further off (worst real photo 34.0 dB PSNR, mean
#: |diff| 0.97/255) than Hamming after a 1.25x DCT-scaled decode (41.0 dB, 0.45); bench/RESULTS.md, "Resampling".
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "linear": Image.Resampling.BILINEAR,
            "bilinear": Image.Resampling.BILINEAR, "cubic": Image.Resampling.BICUBIC,
            "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.HAMMING,
            "lanczos": Image.Resampling.LANCZOS, "lanczos4": Image.Resampling.LANCZOS}
_SAME_FORMAT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


@dataclass(frozen=True)
class ResizeOptions:
    image_size: int = 256
    resize_mode: str = "border"
    resize_only_if_bigger: bool = False
    min_image_size: int = 0
    max_image_area: float = math.inf
    max_aspect_ratio: float = math.inf
    encode_format: str = "jpg"
    encode_quality: int | None = None  # jpg/webp 1-100 (default 95); png: zlib level 0-9 (default 9)
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS
    jpeg_draft_gap: float = DEFAULT_JPEG_DRAFT_GAP  # JPEG DCT-scaled decode to >= gap x output size; 0 = full decode
    blur_faces: bool = False  # detect faces (clipcrawl.filters.images.faces) and blur them before encoding
    skip_reencode: bool = False  # img2dataset's: no resize needed and already encode_format -> the bytes as fetched
    disable_all_reencoding: bool = False  # img2dataset's: the bytes as fetched, no checks at all
    upscale_interpolation: str = "lanczos"
    downscale_interpolation: str = "area"

    @classmethod
    def from_config(cls, cfg: DownloadConfig) -> ResizeOptions:
        names = [n for n in cls.__dataclass_fields__ if n != "encode_quality" and hasattr(cfg, n)]
        return cls(encode_quality=cfg.quality, **{n: getattr(cfg, n) for n in names})


@dataclass
class ResizedImage:
    """Result of :func:`resize_image`; ``error`` set means failed_to_resize."""

    image: bytes | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    mime_type: str | None = None  # of the downloaded image (decoded format)
    exif: str | None = None
    sha256: str | None = None  # of the downloaded bytes
    error: str | None = None
    num_faces: int | None = None  # faces detected and blurred (blur_faces), else None
    face_bboxes: list[list[float]] | None = None  # their [x0, y0, x1, y1] fractions of the (uncropped) image


def resize_image(data: bytes, opts: ResizeOptions, bbox: Sequence[Sequence[float]] | None = None,
                 with_sha256: bool = True, quiet: bool = True) -> ResizedImage:
    """Decode ``data`` and produce the encoded output image; failures come back in ``error``.
    ``quiet``: Pillow's warnings silenced for the call (``warnings.catch_warnings``, not thread-safe: a
    caller on threads turns them off once instead, see :mod:`.pool`)."""
    out = ResizedImage(sha256=hashlib.sha256(data).hexdigest() if with_sha256 else None)
    if opts.disable_all_reencoding:
        out.image = data
        return out
    try:
        if quiet:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # corrupt EXIF, bomb warnings...: our own checks report
                _resize_into(out, data, opts, bbox)
        else:
            _resize_into(out, data, opts, bbox)
    except MemoryError:
        out.error = "image too large to decode (out of memory)"
    except Exception as e:  # noqa: BLE001 - any decoder failure is data, never a crash
        out.error = f"Image decoding error: {type(e).__name__}: {e}" if str(e) else f"Image decoding error: {type(e).__name__}"
    if out.error:
        out.image = out.width = out.height = None
    return out


def _open(data: bytes, max_pixels: int) -> Image.Image | str:
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # Pillow's own limit, when it is below ours
        return f"image too large to decode ({e})"
    except UnidentifiedImageError:
        return "Image decoding error: not a recognised image format"
    w, h = im.size
    if w <= 0 or h <= 0:
        return f"Image decoding error: invalid size {w}x{h}"
    if w * h > max_pixels:
        return (f"image too large to decode: {w}x{h} = {w * h} pixels exceeds the {max_pixels}-pixel limit "
                f"(decompression bomb guard)")
    return im


def _resize_into(out: ResizedImage, data: bytes, opts: ResizeOptions, bbox: Sequence[Sequence[float]] | None) -> None:
    im = _open(data, opts.max_decode_pixels)
    if isinstance(im, str):
        out.error = im
        return
    out.mime_type = Image.MIME.get(im.format or "", None)
    exif = im.getexif() if ("exif" in im.info or im.format in ("TIFF", "MPO", "JPEG")) else None
    orient = orientation(exif)
    rotated = orient >= 5
    w, h = (im.size[1], im.size[0]) if rotated else im.size
    out.original_width, out.original_height = w, h
    out.exif = exif_json(exif)
    if min(w, h) < opts.min_image_size:
        out.error = "image too small"
        return
    if w * h > opts.max_image_area:
        out.error = "image area too large"
        return
    if max(w, h) / min(w, h) > opts.max_aspect_ratio:
        out.error = "aspect ratio too large"
        return
    if opts.skip_reencode and _keeps_bytes(im, w, h, opts, bbox):
        im.load()  # still refuse what does not decode
        out.image, out.width, out.height = data, w, h
        return
    geo = plan_geometry(w, h, opts.image_size, opts.resize_mode, opts.resize_only_if_bigger)
    src_box = None
    if geo.resize_to and geo.downscale and opts.jpeg_draft_gap and im.format == "JPEG" and bbox is None:
        tw, th = (geo.resize_to[1], geo.resize_to[0]) if rotated else geo.resize_to
        gap = max(1.0, opts.jpeg_draft_gap)
        drafted = im.draft(im.mode if im.mode in ("RGB", "L", "CMYK") else None, (int(tw * gap), int(th * gap)))
        if drafted is not None:
            src_box = drafted[1]
    im.decodermaxblock = max(len(data), 65536)  # all bytes are in memory: one decode call, no suspensions
    im.load()
    im = _normalise_mode(im)
    if geo.resize_to:
        stored = (geo.resize_to[1], geo.resize_to[0]) if rotated else geo.resize_to
        resample = RESAMPLE[opts.downscale_interpolation if geo.downscale else opts.upscale_interpolation]
        im = im.resize(stored, resample, box=src_box, reducing_gap=None)
    if orient != 1:
        im = im.transpose(TRANSPOSE[orient])
    boxes = [list(b) for b in bbox] if bbox is not None else []
    if opts.blur_faces:  # detected on the resized, upright, uncropped image; blurred before encoding
        from clipcrawl.filters.images.faces import detect_faces

        out.face_bboxes = detect_faces(im)
        out.num_faces = len(out.face_bboxes)
        boxes += out.face_bboxes
    if boxes:
        from clipcrawl.filters.images.blur import blur_boxes

        im = Image.fromarray(blur_boxes(np.asarray(im), boxes))
    im = _crop_or_pad(im, geo)
    fmt, _ = ENCODERS[opts.encode_format]
    buf = io.BytesIO()
    q = opts.encode_quality
    if fmt == "PNG":
        im.save(buf, fmt, compress_level=min(9, 9 if q is None else q))
    else:
        im.save(buf, fmt, quality=95 if q is None else q)
    out.image = buf.getvalue()
    out.width, out.height = im.size


def _keeps_bytes(im: Image.Image, w: int, h: int, opts: ResizeOptions, bbox: Sequence | None) -> bool:
    """img2dataset's ``skip_reencode``: no resize branch runs, no alpha, already ``encode_format``."""
    if im.format != _SAME_FORMAT.get(opts.encode_format) or im.mode in _ALPHA_MODES or bbox:
        return False
    if opts.resize_mode == "no":
        return True
    side = min(w, h) if opts.resize_mode in ("keep_ratio", "center_crop") else max(w, h)
    return opts.resize_only_if_bigger and side <= opts.image_size


def _crop_or_pad(im: Image.Image, geo: Geometry) -> Image.Image:
    if geo.crop:
        im = im.crop(geo.crop)
    if geo.pad_to:
        canvas = Image.new(im.mode, geo.pad_to, (WHITE,) * len(im.getbands()) if im.mode != "L" else WHITE)
        canvas.paste(im, geo.offset)
        im = canvas
    return im


def _normalise_mode(im: Image.Image) -> Image.Image:
    """-> ``RGB`` or ``L``: alpha composited on white, CMYK/16-bit/palette converted."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return im
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (WHITE, WHITE, WHITE))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode == "1":
        return im.convert("L")
    if mode == "CMYK":
        return _cmyk_to_rgb(im)
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im).astype(np.float64)
        peak = 65535.0 if (mode.startswith("I;16") or a.max(initial=0) > 255) else 255.0
        return Image.fromarray(np.clip(np.rint(a * (255.0 / peak)), 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")  # P, YCbCr, LAB, HSV, ...


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # noqa: BLE001 - a broken profile falls back to the naive conversion
            pass
    return im.convert("RGB")
