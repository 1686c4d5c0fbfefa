"""The bundled demo website: generated pages and shape images served on 127.0.0.1.

It holds what real sites throw at a crawler: ``<img alt>``, ``<figure>/<figcaption>``,
``srcset``, lazy images (``data-src``), ``<picture>``, a robots.txt that disallows ``/private/``,
one page whose meta robots says ``noimageai``, the same image under two URLs and a re-encoded
near-copy, broken images (404, truncated, HTML served as an image), generic captions and
deliberately mismatched captions (wrong shape or colour). Everything is generated from a seed,
and every request is recorded so tests can check what was (never) fetched.
"""

from __future__ import annotations

import html
import io
import random
from dataclasses import dataclass, field

from aiohttp import web
from PIL import Image

from clipcrawl.assets.shapes import TEMPLATES, Scene, draw_scene, random_scene, wrong_caption

ROBOTS_TXT = "User-agent: *\nDisallow: /private/\n"


@dataclass
class DemoImage:
    name: str
    scene: Scene
    jpeg: bytes
    size: tuple[int, int]


@dataclass
class Expected:
    """What the site plants, for tests and the demo summary."""

    mismatched: set[str] = field(default_factory=set)  # image names shown with a wrong caption
    duplicates: set[str] = field(default_factory=set)  # extra URLs of an already-shown image
    broken: set[str] = field(default_factory=set)  # image paths that cannot become samples
    generic: set[str] = field(default_factory=set)  # image names shown with a generic caption
    private_paths: set[str] = field(default_factory=set)  # robots-disallowed paths
    noai_page: str = "/blog/no-ai.html"


def _encode(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, quality=quality) if fmt == "JPEG" else img.save(buf, fmt)
    return buf.getvalue()


class DemoSiteContent:
    """The site's files, generated deterministically from ``seed``."""

    def __init__(self, seed: int = 7, n_images: int = 48) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.images: dict[str, DemoImage] = {}
        self.files: dict[str, tuple[bytes, str]] = {"/robots.txt": (ROBOTS_TXT.encode(), "text/plain")}
        self.expected = Expected()
        for i in range(n_images):
            scene = random_scene(rng)
            img = draw_scene(scene, rng).resize((256, 256)) if i % 5 == 0 else draw_scene(scene, rng)
            img = img.resize((max(img.width, 160) * 2, max(img.height, 160) * 2))  # room for srcset sizes
            name = f"{scene.colour}-{scene.shape}-{i:02d}"
            data = _encode(img, quality=92)
            self.images[name] = DemoImage(name, scene, data, img.size)
            self.files[f"/img/{name}.jpg"] = (data, "image/jpeg")
            small = img.resize((img.width // 2, img.height // 2))
            self.files[f"/img/{name}-small.jpg"] = (_encode(small, quality=85), "image/jpeg")
        self._pages()

    def caption(self, name: str, template: str | None = None) -> str:
        return self.images[name].scene.caption(self.rng, template or self.rng.choice(TEMPLATES))

    def _page(self, path: str, title: str, body: str, head: str = "") -> None:
        doc = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
               f"{head}</head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
        self.files[path] = (doc.encode(), "text/html; charset=utf-8")

    def _pages(self) -> None:
        names = list(self.images)
        groups = [names[i:i + 8] for i in range(0, len(names), 8)]
        exp, links = self.expected, []
        for g, group in enumerate(groups):
            parts = []
            for j, name in enumerate(group):
                url, small = f"/img/{name}.jpg", f"/img/{name}-small.jpg"
                if j == 7 and g % 2 == 0:  # a wrong caption: CLIP should drop it
                    cap = wrong_caption(self.images[name].scene, self.rng, self.rng.choice(TEMPLATES))
                    exp.mismatched.add(name)
                elif j == 6 and g % 3 == 0:  # a caption rules drop
                    cap = self.rng.choice(["image", f"IMG_{1000 + g}.jpg", "photo"])
                    exp.generic.add(name)
                else:
                    cap = self.caption(name)
                alt = html.escape(cap, quote=True)
                kind = j % 5
                if kind == 0:
                    parts.append(f'<p><img src="{url}" alt="{alt}" width="320" height="320"></p>')
                elif kind == 1:
                    parts.append(f'<figure><img src="{small}" srcset="{small} 320w, {url} 640w" '
                                 f'sizes="50vw" alt=""><figcaption>{html.escape(cap)}</figcaption></figure>')
                elif kind == 2:
                    parts.append(f'<img class="lazy" src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" '
                                 f'data-src="{url}" alt="{alt}"><noscript><img src="{url}" alt="{alt}"></noscript>')
                elif kind == 3:
                    parts.append(f'<picture><source srcset="{small} 1x, {url} 2x"><img src="{small}" alt="{alt}">'
                                 f"</picture>")
                else:
                    parts.append(f'<div><img src="{url}" alt="{alt}" loading="lazy"></div>')
            parts.append('<img src="/img/pixel.gif" width="1" height="1" alt="">')  # tracking pixel: skipped
            path = f"/gallery/{g + 1}.html"
            nav = f'<p><a href="/">home</a> <a href="/gallery/{(g + 1) % len(groups) + 1}.html">next</a></p>'
            self._page(path, f"Gallery {g + 1}", "".join(parts) + nav)
            links.append(path)
        self.files["/img/pixel.gif"] = (_encode(Image.new("RGB", (1, 1)), "GIF"), "image/gif")
        # the same image under a second URL (sha256 duplicate) and a re-encoded near-copy (perceptual duplicate)
        first, second = names[0], names[1]
        self.files[f"/mirror/{first}.jpg"] = self.files[f"/img/{first}.jpg"]
        near = Image.open(io.BytesIO(self.images[second].jpeg)).convert("RGB")
        near = near.resize((near.width * 3 // 4, near.height * 3 // 4))
        self.files[f"/mirror/{second}-copy.jpg"] = (_encode(near, quality=70), "image/jpeg")
        exp.duplicates |= {f"/mirror/{first}.jpg", f"/mirror/{second}-copy.jpg"}
        # broken images
        good = self.files[f"/img/{names[2]}.jpg"][0]
        self.files["/img/truncated.jpg"] = (good[: len(good) // 3], "image/jpeg")
        self.files["/img/not-an-image.jpg"] = (b"<html>nope</html>", "image/jpeg")
        exp.broken |= {"/img/missing.jpg", "/img/truncated.jpg", "/img/not-an-image.jpg"}
        cap0, cap1 = self.caption(first), self.caption(second)
        self._page("/blog/mirrors.html", "Mirrors and broken links", "".join([
            f'<img src="/mirror/{first}.jpg" alt="{html.escape(cap0, quote=True)} (mirror)">',
            f'<img src="/mirror/{second}-copy.jpg" alt="{html.escape(cap1, quote=True)}">',
            '<img src="/img/missing.jpg" alt="a red circle that is gone">',
            '<img src="/img/truncated.jpg" alt="a blue square cut in half">',
            '<img src="/img/not-an-image.jpg" alt="a green star that is really a page">',
        ]) + '<p><a href="/">home</a> <a href="/blog/no-ai.html">no-ai</a></p>')
        # a page whose author opts out of AI training: its pairs are withheld
        self._page(exp.noai_page, "Not for AI", f'<img src="/img/{names[3]}.jpg" alt="{self.caption(names[3])}">',
                   head='<meta name="robots" content="noimageai">')
        # robots.txt disallows /private/: neither the page nor its images may be requested
        self.files["/private/secret-circle.jpg"] = self.files[f"/img/{names[4]}.jpg"]
        self._page("/private/index.html", "Private", '<img src="/private/secret-circle.jpg" alt="a secret circle">')
        exp.private_paths |= {"/private/index.html", "/private/secret-circle.jpg"}
        self.galleries = links
        self._render_index()

    def _render_index(self) -> None:
        index = "".join(f'<li><a href="{p}">{p}</a></li>' for p in self.galleries)
        self._page("/", "Shapes of the world", f'<ul>{index}</ul><p><a href="/blog/mirrors.html">mirrors</a> '
                   '<a href="/private/index.html">private</a> <a href="https://example.invalid/">elsewhere</a></p>')

    def add_gallery(self, n_images: int = 6) -> list[str]:
        """Grow the site: ``n_images`` new images on a new gallery page linked from the index.
        Returns the new image URLs (paths)."""
        start, new = len(self.images), []
        parts = []
        for i in range(start, start + n_images):
            scene = random_scene(self.rng)
            img = draw_scene(scene, self.rng)
            img = img.resize((max(img.width, 160) * 2, max(img.height, 160) * 2))
            name = f"{scene.colour}-{scene.shape}-{i:02d}"
            self.images[name] = DemoImage(name, scene, _encode(img, quality=92), img.size)
            self.files[f"/img/{name}.jpg"] = (self.images[name].jpeg, "image/jpeg")
            parts.append(f'<img src="/img/{name}.jpg" alt="{html.escape(self.caption(name), quote=True)}">')
            new.append(f"/img/{name}.jpg")
        path = f"/gallery/{len(self.galleries) + 1}.html"
        self._page(path, f"Gallery {len(self.galleries) + 1}", "".join(parts) + '<p><a href="/">home</a></p>')
        self.galleries.append(path)
        self._render_index()
        return new


class DemoSite:
    """``with DemoSite() as site: site.url`` — serves :class:`DemoSiteContent` from a thread."""

    def __init__(self, content: DemoSiteContent | None = None, host: str = "127.0.0.1") -> None:
        self.content = content or DemoSiteContent()
        self.host = host
        self.requests: list[str] = []
        self.url = ""
        self._site = None  # a ThreadedSite while serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        f = self.content.files.get(request.path)
        if f is None:
            raise web.HTTPNotFound()
        body, ctype = f
        return web.Response(body=body, headers={"Content-Type": ctype})

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        return app

    def __enter__(self) -> DemoSite:
        from clipcrawl.base.websrv import ThreadedSite

        self._site = ThreadedSite(self._app, self.host, 0, "demo-site", timeout=30).start()
        self.url = self._site.url + "/"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._site is not None:
            self._site.stop()
            self._site = None
