"""``text`` signal: text in the image with RapidOCR's bundled PP-OCR models (Apache-2.0, extra ``[ocr]``).

* ``text_area``: the fraction of the image covered by the detected text boxes (their union, rasterised at
  the image's resolution), 0 when no text is read;
* ``ocr_text``: the recognised strings, in RapidOCR's reading order, joined by ``" | "``;
* ``caption_ocr_overlap``: the share of the caption's words (casefolded ``\\w+`` runs) that are read in the
  image: a word counts when it is one of the OCR words, or (3+ characters) part of the OCR text with its
  spaces removed (OCR often merges words). 1.0 = the caption only spells the image's text (T-MARS, DFN);
  ``signals.max_caption_ocr_overlap`` drops such pairs.

Which boxes count as text (:func:`is_text`): recognition score >= :data:`MIN_SCORE` (0.7), at least two
word characters (``\\w``: letters or digits of any script; a lone glyph is how PP-OCR reads a star, a circle or
a big "8" in a photo), box height <= half the image's (a "word" taller than that was, on the benchmark's
photos, foliage or a shape). RapidOCR runs with its detector's ``limit_side_len`` at :data:`DET_SIDE` (480;
its default 736 upscales a 256 px image 2.9x and costs 2.5x the time for the same precision/recall on
bench/signals_bench.py's images) and without its 180-degree classifier (which only flips upside-down lines
before recognition; text_area does not depend on it): see bench/RESULTS.md "Curation signals".
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from clipcrawl.filters.signals.base import Signal, default_threads, ort_providers

_WORD = re.compile(r"\w+")
_CHAR = re.compile(r"\w")
MIN_SCORE = 0.7
DET_SIDE = 480
MAX_BOX_HEIGHT = 0.5  # of the image's height


def is_text(text: str, score: float, box: np.ndarray, height: int) -> bool:
    """The rule of the module docstring: is this OCR box text?"""
    ys = np.asarray(box, dtype=np.float64)[:, 1]
    return (float(score) >= MIN_SCORE and len(_CHAR.findall(text)) >= 2
            and float(ys.max() - ys.min()) <= MAX_BOX_HEIGHT * height)


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def caption_overlap(caption: str, ocr_texts: list[str]) -> float:
    """Share of the caption's words read in the image (0 for a caption without words)."""
    cap = words(caption or "")
    if not cap:
        return 0.0
    ocr_words = set(words(" ".join(ocr_texts)))
    joined = "".join(words("".join(ocr_texts)))
    hit = sum(1 for w in cap if w in ocr_words or (len(w) >= 3 and w in joined))
    return hit / len(cap)


def union_area(boxes: list[np.ndarray], height: int, width: int) -> float:
    """Fraction of an ``height`` x ``width`` image covered by the union of the quadrilaterals ``boxes``."""
    if not boxes or height <= 0 or width <= 0:
        return 0.0
    import cv2

    mask = np.zeros((height, width), dtype=np.uint8)
    for b in boxes:  # one at a time: fillPoly given several polygons leaves parts of their overlaps out
        cv2.fillPoly(mask, [np.round(np.asarray(b, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)], 1)
    return float(mask.sum()) / float(height * width)


class TextSignal(Signal):
    name: ClassVar[str] = "signal_text"
    signal: ClassVar[str] = "text"
    columns: ClassVar[tuple[str, ...]] = ("text_area", "ocr_text", "caption_ocr_overlap")
    _transient = ("engine",)

    def __init__(self, threads: int | None = None, device: str = "auto") -> None:
        self.threads, self.device = threads, device
        self.engine = None

    def setup(self) -> None:
        from rapidocr import RapidOCR

        cuda = ort_providers(self.device)[0] == "CUDAExecutionProvider"
        self.engine = RapidOCR(params={
            "Global.log_level": "error",
            "Global.use_cls": False,
            "Det.limit_side_len": DET_SIDE,
            "EngineConfig.onnxruntime.intra_op_num_threads": default_threads(self.threads),
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "EngineConfig.onnxruntime.use_cuda": cuda,
        })

    def source(self) -> str:
        import rapidocr

        models = sorted(p.name for p in (Path(rapidocr.__file__).parent / "models").glob("*.onnx"))
        return f"rapidocr {version('rapidocr')} bundled PP-OCR ({', '.join(models)}; Apache-2.0)"

    def read(self, pixels: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
        """(boxes, texts) RapidOCR reads in an RGB image."""
        self.ready()
        res = self.engine(np.ascontiguousarray(pixels[:, :, ::-1]))  # RapidOCR takes OpenCV's BGR
        boxes = getattr(res, "boxes", None)
        txts = getattr(res, "txts", None)
        scores = getattr(res, "scores", None)
        if boxes is None or txts is None:
            return [], []
        scores = scores if scores is not None else [1.0] * len(txts)
        kept = [(np.asarray(b), str(t)) for b, t, sc in zip(boxes, txts, scores)
                if is_text(str(t), sc, b, pixels.shape[0])]
        return [b for b, _ in kept], [t for _, t in kept]

    def compute_one(self, pixels: np.ndarray | None, caption: str, row: int, table: pa.Table) -> dict[str, Any]:
        if pixels is None:
            return {}
        boxes, texts = self.read(pixels)
        h, w = pixels.shape[:2]
        return {"text_area": union_area(boxes, h, w), "ocr_text": " | ".join(texts),
                "caption_ocr_overlap": caption_overlap(caption, texts)}
