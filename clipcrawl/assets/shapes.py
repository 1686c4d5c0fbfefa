"""Generated pictures of coloured shapes with captions: the tiny CLIP's training data and the demo site's images.

One generator serves both, so the shipped model (scripts/train_tiny_clip.py) is scored on the same
distribution the demo serves. Everything is deterministic given a ``random.Random``.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "orange": (245, 140, 20),
    "purple": (130, 40, 170),
    "pink": (245, 120, 190),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "brown": (120, 70, 30),
}
BACKGROUNDS = ("white", "black", "gray", "yellow", "blue", "green", "pink")
SIZES = ("small", "medium", "large")
TEMPLATES = (
    "a {colour} {shape}",
    "a {colour} {shape} on a {bg} background",
    "a {size} {colour} {shape}",
    "a {size} {colour} {shape} on a {bg} background",
    "a photo of a {colour} {shape}",
    "a picture of a {colour} {shape}",
    "an image of a {size} {colour} {shape}",
    "a drawing of a {colour} {shape} in the {pos}",
    "{colour} {shape}",
    "a {colour} {shape} in the {pos} of the image",
    "{colour} {shape} on {bg}",
    "a simple {colour} {shape} icon",
)


@dataclass
class Scene:
    shape: str
    colour: str
    bg: str
    size: str
    pos: str

    def caption(self, rng: random.Random, template: str | None = None, **override: str) -> str:
        fields = {"shape": self.shape, "colour": self.colour, "bg": self.bg, "size": self.size, "pos": self.pos}
        fields.update(override)
        return (template or rng.choice(TEMPLATES)).format(**fields)


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 18) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _star(cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.42
        a = rot + i * math.pi / 5 - math.pi / 2
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def random_scene(rng: random.Random) -> Scene:
    shape = rng.choice(SHAPES)
    bg = rng.choice(BACKGROUNDS)
    colour = rng.choice([c for c in COLOURS if c != bg])
    return Scene(shape, colour, bg, rng.choice(SIZES), rng.choice(("center", "top left", "top right", "bottom left", "bottom right")))


def draw_scene(scene: Scene, rng: random.Random) -> Image.Image:
    """Render a scene at a random size / aspect ratio; returns an RGB PIL image."""
    w = rng.randint(64, 256)
    h = int(w * rng.uniform(0.75, 1.33))
    img = Image.new("RGB", (w, h), _jitter(COLOURS[scene.bg], rng))
    d = ImageDraw.Draw(img)
    m = min(w, h)
    frac = {"small": rng.uniform(0.14, 0.22), "medium": rng.uniform(0.24, 0.34), "large": rng.uniform(0.36, 0.46)}
    r = frac[scene.size] * m
    # keep the shape inside the centred square crop that CLIP's preprocess keeps
    ox, oy = (w - m) / 2, (h - m) / 2
    margin = r + 0.04 * m
    lo, hi = margin, m - margin
    mid = m / 2
    if scene.pos == "center":
        cx, cy = mid + rng.uniform(-0.05, 0.05) * m, mid + rng.uniform(-0.05, 0.05) * m
    else:
        cy = rng.uniform(lo, max(lo, mid - 0.1 * m)) if "top" in scene.pos else rng.uniform(min(hi, mid + 0.1 * m), hi)
        cx = rng.uniform(lo, max(lo, mid - 0.1 * m)) if "left" in scene.pos else rng.uniform(min(hi, mid + 0.1 * m), hi)
    cx, cy = cx + ox, cy + oy
    fill = _jitter(COLOURS[scene.colour], rng)
    outline = fill if rng.random() < 0.7 else _jitter((0, 0, 0), rng, 10)
    width = 0 if outline == fill else max(1, int(m / 60))
    if scene.shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=width)
    elif scene.shape == "square":
        s = r * 0.85
        d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill, outline=outline, width=width)
    elif scene.shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r * 0.95, cy + r * 0.75), (cx + r * 0.95, cy + r * 0.75)], fill=fill, outline=outline)
    else:
        d.polygon(_star(cx, cy, r * 1.1, rng.uniform(-0.2, 0.2)), fill=fill, outline=outline)
    if rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.6:  # what the downloader stores
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=rng.randint(60, 95))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


# ---------------------------------------------------------------- data
def wrong_caption(scene: Scene, rng: random.Random, template: str) -> str:
    """A hard negative: same template, wrong shape or wrong colour (what the demo site serves)."""
    if rng.random() < 0.75:  # colour is learnt first; shape needs the pressure
        return scene.caption(rng, template, shape=rng.choice([s for s in SHAPES if s != scene.shape]))
    colours = [c for c in COLOURS if c not in (scene.colour, scene.bg)]
    return scene.caption(rng, template, colour=rng.choice(colours))
