"""Fixtures for the CLIP tests: the shipped tiny model and demo-like generated shape pictures."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pyarrow as pa
import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def shapes_gen():
    """The generator of the tiny CLIP's training data and the demo site's images."""
    from clipcrawl.assets import shapes

    return shapes


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory):
    """Keep exported ONNX models out of the user's cache (shared by the whole session)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CLIPCRAWL_CACHE", str(tmp_path_factory.mktemp("clipcrawl-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def shape_pairs(shapes_gen):
    """(jpeg bytes, matching caption, wrong-colour caption) for 24 generated scenes."""
    rng = random.Random(123)
    out = []
    for _ in range(24):
        scene = shapes_gen.random_scene(rng)
        img = shapes_gen.draw_scene(scene, rng)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        template = "a {colour} {shape} on a {bg} background"
        wrong = [c for c in shapes_gen.COLOURS if c not in (scene.colour, scene.bg)]
        out.append((buf.getvalue(), scene.caption(rng, template), scene.caption(rng, template, colour=rng.choice(wrong))))
    return out


def make_table(images, captions, statuses=None) -> pa.Table:
    n = len(images)
    return pa.table({
        "key": [f"{i:020x}" for i in range(n)],
        "url": [f"http://127.0.0.1/{i}.jpg" for i in range(n)],
        "caption": list(captions),
        "status": list(statuses or ["success"] * n),
        "error_message": pa.nulls(n, pa.string()),
        "image": pa.array(list(images), pa.binary()),
    })


@pytest.fixture(scope="session")
def tiny_fp32():
    from clipcrawl.filters.clip.model import load_clip

    return load_clip("tiny", device="cpu", precision="fp32")
