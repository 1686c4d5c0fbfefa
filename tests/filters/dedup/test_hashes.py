from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clipcrawl.filters.dedup.hashes import image_hashes, phash, pixel_hash, url_caption_hash

from .helpers import encode, jpeg, picture


def test_phash_equals_imagehash():
    imagehash = pytest.importorskip("imagehash")
    for seed in range(8):
        data = jpeg(seed)
        ref = imagehash.phash(Image.open(io.BytesIO(data)))
        assert phash(data) == int(str(ref), 16)


def test_pixel_hash_sees_pixels_not_bytes():
    im = picture(3)
    png, webp = encode(im, "PNG"), encode(im, "WEBP", lossless=True)
    assert png != webp and pixel_hash(png) == pixel_hash(webp)
    assert pixel_hash(encode(im, "PNG", optimize=True, compress_level=9)) == pixel_hash(png)
    assert pixel_hash(encode(im, "JPEG", quality=80)) != pixel_hash(png)
    assert pixel_hash(encode(picture(4), "PNG")) != pixel_hash(png)


def test_phash_is_stable_under_reencoding_and_none_for_flat_images():
    im = picture(5)
    a, b = phash(encode(im, "PNG")), phash(encode(im.resize((80, 60)), "JPEG", quality=60))
    assert bin(a ^ b).count("1") <= 4
    assert phash(encode(Image.new("RGB", (64, 64), (200, 10, 10)), "PNG")) is None
    bad = image_hashes(b"not an image")
    assert bad.phash is None and bad.pixel_hash is None and bad.error.startswith("cannot decode")
    assert 0 <= a < 2**64


def test_url_caption_hash_normalises_url_and_caption():
    h = url_caption_hash("http://Example.COM:80/a/../img.jpg#frag", "  a  cat ")
    assert h == url_caption_hash("http://example.com/img.jpg", "a cat")
    assert h != url_caption_hash("http://example.com/img.jpg", "a dog")
    assert h != url_caption_hash("https://example.com/img.jpg", "a cat")
    assert len(h) == 16


def test_exif_orientation_applied_before_pixel_hash():
    im = picture(6)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    rotated_file = encode(im, "PNG", exif=exif.tobytes())
    upright = encode(im.transpose(Image.Transpose.ROTATE_270), "PNG")
    assert pixel_hash(rotated_file) == pixel_hash(upright)
    assert np.asarray(Image.open(io.BytesIO(upright))).shape[:2] == (160, 120)
