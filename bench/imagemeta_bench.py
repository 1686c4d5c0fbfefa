"""CPU cost per image of the consent/provenance metadata read (issue 28): ``clipcrawl.crawler.imagemeta``.

It runs on every downloaded image, before the decode, so it must cost little next to the decode + resize. This
measures CPU time (``time.process_time``, one thread) per image for:

* images without metadata (the common case): JPEG, PNG, WebP, GIF;
* images with an XMP packet (IPTC Data Mining + Digital Source Type + licence) in each format;
* a C2PA-signed JPEG (the pre-scan finds the JUMBF box, c2pa-python reads and validates the manifest);
* hostile metadata: an entity-expansion XMP, a 1 MiB+ XMP, a broken JUMBF box;

and, for scale, clipcrawl's own decode + resize of the same plain JPEG (``clipcrawl.filters.images``).

    python bench/imagemeta_bench.py [--width 1024 --height 768 --repeat 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from clipcrawl.crawler.imagemeta import MAX_XMP_BYTES, read_image_meta  # noqa: E402
from tests.crawler.provenance_files import (  # noqa: E402
    LAUGHS,
    broken_jumbf,
    c2pa_signed,
    jpeg_with_app1,
    training_mining,
    with_xmp,
    xmp_packet,
)


def cpu_per_call(fn, repeat: int) -> float:
    fn()  # warm
    t = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t) / repeat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--repeat", type=int, default=2000)
    a = ap.parse_args()

    size = (a.width, a.height)
    xmp = xmp_packet(data_mining="DMI-PROHIBITED-AIMLTRAINING", source_type="trainedAlgorithmicMedia",
                     web_statement="https://creativecommons.org/licenses/by/4.0/")
    cases: list[tuple[str, bytes, int]] = []
    for fmt in ("jpeg", "png", "webp", "gif"):
        cases.append((f"{fmt}, no metadata", with_xmp(fmt, None, size=size), a.repeat))
    for fmt in ("jpeg", "png", "webp", "gif"):
        cases.append((f"{fmt}, XMP (Data Mining, source type, licence)", with_xmp(fmt, xmp, size=size), a.repeat))
    try:
        signed = c2pa_signed([training_mining(ai_training="notAllowed")], size=size)
        cases.append(("jpeg, C2PA manifest (c2pa-python reads + validates)", signed, max(20, a.repeat // 20)))
        cases.append(("jpeg, broken JUMBF box", broken_jumbf(signed), max(20, a.repeat // 20)))
    except ImportError:
        print("c2pa-python not installed: C2PA rows skipped")
    cases.append(("jpeg, XMP with entity declarations (billion laughs)",
                  jpeg_with_app1(b"http://ns.adobe.com/xap/1.0/\x00" + LAUGHS.encode()), a.repeat))
    big = xmp_packet(extra="<dc:description>" + "x" * (MAX_XMP_BYTES + 10) + "</dc:description>")
    cases.append(("png, XMP over the 1 MiB cap", with_xmp("png", big, size=size), max(20, a.repeat // 10)))

    from clipcrawl.filters.images import ResizeOptions, resize_image
    from clipcrawl.schemas.config import DownloadConfig

    opts = ResizeOptions.from_config(DownloadConfig())
    plain = cases[0][1]
    decode = cpu_per_call(lambda: resize_image(plain, opts), max(20, a.repeat // 20))

    print(f"image {a.width}x{a.height}; CPU per image, one thread ({os.cpu_count()} CPUs visible)")
    print(f"{'case':58s} {'bytes':>9s} {'CPU/image':>11s} {'vs decode+resize':>17s}")
    for name, body, n in cases:
        t = cpu_per_call(lambda body=body: read_image_meta(body), n)
        print(f"{name:58s} {len(body):9,d} {t * 1e6:9.1f}us {t / decode:16.2%}")
    print(f"{'jpeg, clipcrawl decode + resize to 256 (for scale)':58s} {len(plain):9,d} {decode * 1e6:9.1f}us")

    # ai.txt: the per-URL check once the origin's rules are cached (robots-style match by path and file type)
    import asyncio

    from clipcrawl.crawler.aitxt import AiTxtCache

    async def serve(_url: str) -> tuple[int, bytes]:
        return 200, b"User-Agent: *\nDisallow: *.jpg\nDisallow: /private/\nAllow: /private/press/\n"

    async def checks(cache: AiTxtCache, n: int) -> None:
        for i in range(n):
            await cache.check(f"https://example.com/img/{i}.png")

    for label, body in (("ai.txt check per URL, rules cached", serve),):
        cache = AiTxtCache(body, "clipcrawl")
        asyncio.run(checks(cache, 1))
        t = time.process_time()
        asyncio.run(checks(cache, a.repeat))
        per = (time.process_time() - t) / a.repeat
        print(f"{label:58s} {'':9s} {per * 1e6:9.1f}us {per / decode:16.2%}")


if __name__ == "__main__":
    main()
