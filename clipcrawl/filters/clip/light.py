"""The shipped tiny CLIP without torch: ONNX Runtime + a vendored tokenizer + a PIL/numpy transform.

What a core install (``pip install clipcrawl``, no ``[clip]``) scores with, so ``clipcrawl demo``
runs end to end in a light environment. The pieces:

* ``clipcrawl/assets/tiny_clip/clipcrawl-tiny.{image,text}.onnx``: the two towers exported by
  ``scripts/export_tiny_onnx.py``. Their weights are *external data* pointing into
  ``clipcrawl-tiny.safetensors`` (fp16, cast to float in the graph), so no weight is stored twice.
  fp32 arithmetic: within 1e-4 of open_clip's fp32 model (checked by the script and by
  tests/filters/clip/test_light_path.py), far inside the fast path's 0.01 promise.
* :mod:`clipcrawl.filters.clip.tokenizer`: open_clip's ``SimpleTokenizer`` returning numpy.
* :class:`TinyPreprocess`: open_clip's eval transform for this model (shortest side to 64 with
  PIL bicubic, centre crop, RGB, /255, CLIP mean/std) in PIL + numpy; the same pixels as
  torchvision's transform on PIL images.

:func:`clipcrawl.filters.clip.model.load_clip` uses this path for ``--model tiny`` when torch or
open_clip is not installed, or when ``CLIPCRAWL_TINY_BACKEND=onnx``; every other model needs the
``[clip]`` extra.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipcrawl.filters.clip.towers import crop_tokens, l2_normalize

TINY_DIR = Path(__file__).resolve().parents[2] / "assets" / "tiny_clip"
IMAGE_ONNX = "clipcrawl-tiny.image.onnx"
TEXT_ONNX = "clipcrawl-tiny.text.onnx"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def available(tiny_dir: Path = TINY_DIR) -> bool:
    """True when the shipped ONNX graphs and onnxruntime are there."""
    import importlib.util

    return (tiny_dir / IMAGE_ONNX).is_file() and (tiny_dir / TEXT_ONNX).is_file() and (
        importlib.util.find_spec("onnxruntime") is not None
    )


@dataclass
class TinyPreprocess:
    """open_clip's eval transform (Resize shortest side, bicubic; CenterCrop; RGB; ToTensor; Normalize)
    without torchvision. ``pil`` runs in the decode threads and returns uint8 HWC arrays; ``finish``
    makes the normalised float32 NCHW batch (the shape :class:`~clipcrawl.filters.clip.prefetch.SplitPreprocess`
    has, so the prefetcher uses it as is); calling the object does both for one image."""

    size: int
    mean: np.ndarray
    std: np.ndarray
    as_numpy: bool = True  # finish() returns numpy (no torch here)

    def pil(self, img: Any) -> np.ndarray:
        from PIL import Image

        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.size, int(self.size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.BICUBIC)
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        img = img.crop((left, top, left + self.size, top + self.size))
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.asarray(img, dtype=np.uint8)

    def finish(self, arrays: list[np.ndarray]) -> np.ndarray:
        x = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32)
        x /= np.float32(255)
        x -= self.mean.reshape(1, -1, 1, 1)
        x /= self.std.reshape(1, -1, 1, 1)
        return x

    def __call__(self, img: Any) -> np.ndarray:
        return self.finish([self.pil(img)])[0]


class TinyOnnxModel:
    """The two ONNX Runtime sessions plus what ``ScoreClip`` reads from a model (``logit_scale_exp``)."""

    def __init__(self, tiny_dir: Path = TINY_DIR, threads: int | None = None) -> None:
        from clipcrawl.filters.clip.fast import _default_threads, _session

        n = threads or _default_threads()
        self.image = _session(tiny_dir / IMAGE_ONNX, n)
        self.text = _session(tiny_dir / TEXT_ONNX, n)
        self.logit_scale_exp = float(np.exp(_safetensors_scalar(tiny_dir / "clipcrawl-tiny.safetensors", "logit_scale")))


class TinyOnnxEncoder:
    """``encode_images`` / ``encode_texts`` over :class:`TinyOnnxModel` (numpy in, L2-normalised float32 out)."""

    def __init__(self, model: TinyOnnxModel) -> None:
        self.model = model

    def encode_images(self, pixels: Any) -> np.ndarray:
        x = pixels.numpy() if hasattr(pixels, "numpy") else np.asarray(pixels)
        return l2_normalize(self.model.image.run(None, {"pixels": np.ascontiguousarray(x, dtype=np.float32)})[0])

    def encode_texts(self, tokens: Any) -> np.ndarray:
        t = tokens.numpy() if hasattr(tokens, "numpy") else np.asarray(tokens)
        t = crop_tokens(t)
        return l2_normalize(self.model.text.run(None, {"tokens": np.ascontiguousarray(t, dtype=np.int64)})[0])


def _safetensors_scalar(path: Path, name: str) -> np.float32:
    """One small tensor of a safetensors file, as float32 (fp16/fp32 only)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(n))[name]
        begin, end = meta["data_offsets"]
        f.seek(8 + n + begin)
        raw = f.read(end - begin)
    dtype = {"F16": "<f2", "F32": "<f4"}[meta["dtype"]]
    return np.frombuffer(raw, dtype=dtype).astype(np.float32).reshape(-1)[0]


def load_light_tiny(tiny_dir: Path = TINY_DIR, threads: int | None = None) -> Any:
    """A :class:`~clipcrawl.filters.clip.model.LoadedClip` of the shipped tiny model on ONNX Runtime (CPU).

    ``clip.model`` is a :class:`TinyOnnxModel`; :func:`~clipcrawl.filters.clip.encoders.make_encoder`
    returns a :class:`TinyOnnxEncoder` for it."""
    from clipcrawl.filters.clip.model import TINY_NAME, LoadedClip, _weights_id
    from clipcrawl.filters.clip.tokenizer import default_tokenizer

    cfg = json.loads((tiny_dir / f"{TINY_NAME}.json").read_text(encoding="utf-8"))
    model = TinyOnnxModel(tiny_dir, threads)
    pre = TinyPreprocess(int(cfg["vision_cfg"]["image_size"]), np.asarray(OPENAI_MEAN, np.float32),
                         np.asarray(OPENAI_STD, np.float32))
    ckpt = str(tiny_dir / f"{TINY_NAME}.safetensors")
    return LoadedClip(model, pre, default_tokenizer(), "cpu", "fp32", TINY_NAME, _weights_id(TINY_NAME, ckpt),
                      int(cfg["embed_dim"]))
