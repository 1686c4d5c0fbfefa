"""Fixtures of the signal tests: text rendered by PIL with real fonts at known boxes, real photos."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")


def real_fonts() -> list[Path]:
    out: list[Path] = []
    for d in FONT_DIRS:
        p = Path(d)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*.ttf") if "Math" not in f.name)
    return out


@pytest.fixture(scope="session")
def fonts():
    got = real_fonts()
    if not got:
        pytest.skip("no TrueType fonts installed (the rendered-text truth needs real fonts)")
    return got


def render_text(text: str, font: Path, size=(320, 200), at=(16, 70), px=30, bg=(235, 230, 220), fg=(20, 20, 20),
                base=None):
    """(image, box) with ``text`` drawn at ``at``; ``box`` = PIL's own text bbox [x0, y0, x1, y1] in pixels."""
    from PIL import Image, ImageDraw, ImageFont

    img = base.copy().convert("RGB") if base is not None else Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    f = ImageFont.truetype(str(font), px)
    d.text(at, text, fill=fg, font=f)
    return img, d.textbbox(at, text, font=f)


def jpeg(img, quality=92) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def safe_photos(testdata: Path) -> list[Path]:
    """The real photographs of ../shared/testdata (SOURCES.md): none is explicit."""
    photos = sorted(p for p in (testdata / "images" / "photos").iterdir() if p.suffix in (".jpg", ".png", ".webp"))
    photos += [testdata / "images" / "exif_orientation" / "Landscape_0.jpg",
               testdata / "images" / "exif_orientation" / "Portrait_6.jpg",
               testdata / "images" / "jpeg_variants" / "hopper_gray.jpg",
               testdata / "images" / "jpeg_variants" / "testorig.jpg"]
    return [p for p in photos if p.is_file()]
