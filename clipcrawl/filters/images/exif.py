"""EXIF as img2dataset stores it: a JSON object ``{"<IFD> <TagName>": "value", ...}``.

img2dataset runs ``exifread.process_file(details=False)`` and keeps ``str(value).strip()``; tag
names are prefixed with the IFD (``Image``, ``EXIF``, ``GPS``, ``Interoperability``,
``Thumbnail``). We read the same tags with Pillow (no extra dependency): the keys match, values
are Pillow's plain renderings (numbers, rationals as ``"72.0"``) instead of exifread's
descriptive strings. Maker notes and binary blobs are left out, like ``details=False`` does.
"""

from __future__ import annotations

import json
from typing import Any

from PIL import ExifTags, Image

ORIENTATION = 0x0112
_IFDS = (
    ("EXIF", ExifTags.IFD.Exif, ExifTags.TAGS),
    ("GPS", ExifTags.IFD.GPSInfo, ExifTags.GPSTAGS),
    ("Interoperability", ExifTags.IFD.Interop, ExifTags.TAGS),
)
_SKIP = {0x927C, 0x8769, 0x8825, 0xA005, 0x02BC, 0x8773, 0x9286}  # MakerNote, IFD pointers, XMP, ICC, UserComment
_MAX_BYTES = 64

#: Pillow transpose for EXIF orientations 2..8 (1 is identity).
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orientation(exif: Image.Exif | None) -> int:
    """EXIF orientation 1..8 (1 when absent or invalid)."""
    if not exif:
        return 1
    try:
        value = int(exif.get(ORIENTATION, 1))
    except (TypeError, ValueError):
        return 1
    return value if value in TRANSPOSE else 1


def _render(value: Any) -> str | None:
    if isinstance(value, bytes):
        if len(value) > _MAX_BYTES:
            return None
        value = value.rstrip(b"\x00").decode("latin-1")
    elif isinstance(value, tuple):
        value = "[" + ", ".join(str(v) for v in value) + "]"
    text = str(value).replace("\x00", "").strip()
    return text


def exif_json(exif: Image.Exif | None) -> str:
    """img2dataset-style EXIF JSON (``"{}"`` when the image has none)."""
    out: dict[str, str] = {}
    if not exif:
        return "{}"
    try:
        groups = [("Image", dict(exif), ExifTags.TAGS)]
        for prefix, ifd, names in _IFDS:
            try:
                groups.append((prefix, dict(exif.get_ifd(ifd)), names))
            except Exception:  # noqa: BLE001 - a broken sub-IFD drops only itself
                continue
        for prefix, tags, names in groups:
            for tag, value in tags.items():
                if tag in _SKIP or isinstance(value, dict):
                    continue
                text = _render(value)
                if text is not None:
                    out[f"{prefix} {names.get(tag, f'Tag 0x{tag:04X}')}"] = text
    except Exception:  # noqa: BLE001 - EXIF is best effort, never a failure
        return "{}"
    return json.dumps(out, ensure_ascii=False)
