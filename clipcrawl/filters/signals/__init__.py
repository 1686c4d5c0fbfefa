"""Curation signals beyond one CLIP score, each a :class:`~clipcrawl.base.stage.Stage` (``score --signals``).

=============  ======================================================  =========================================
signal         columns                                                 produced by (licence; extra)
=============  ======================================================  =========================================
``text``       ``text_area``, ``ocr_text``, ``caption_ocr_overlap``    RapidOCR's bundled PP-OCR ONNX models
                                                                       (Apache-2.0; ``pip install clipcrawl[ocr]``)
``nsfw``       ``nsfw_score``, ``nsfw_detections``                     NudeNet's bundled ``320n.onnx`` detector
                                                                       (MIT; ``pip install clipcrawl[nudity]``)
``aesthetic``  ``aesthetic``                                           LAION's aesthetic predictor, a local file
                                                                       (:mod:`clipcrawl.filters.clip.safety_head`)
=============  ======================================================  =========================================

The detectors ship their weights inside their wheels: nothing is downloaded. They run on the image the
pass already holds in memory (decoded once for all of them, :class:`ComputeSignals`), on CPU threads
(ONNX Runtime; its CUDA provider when installed and ``device`` allows). ``aesthetic`` (and a trained
``punsafe`` head, ``filters.clip.unsafe_head``) read the CLIP image embedding :class:`ScoreClip` computed.
``signal_sources`` names the file or package (and version) of every signal column of the row.
The rules over them (``min_aesthetic``, ``max_text_area``, ``max_caption_ocr_overlap``, ``max_nsfw_score``,
``top_fraction``/``top_by``) are dataset-wide and re-applicable from the stored columns
(:mod:`clipcrawl.filters.signals.rules`).
"""

from __future__ import annotations

import importlib.util

from clipcrawl.schemas.components import SIGNAL_NAMES, SignalsConfig
from clipcrawl.schemas.configbase import ConfigError

#: signal -> (extra, modules it needs)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "text": ("ocr", ("rapidocr", "onnxruntime", "cv2")),
    "nsfw": ("nudity", ("nudenet", "onnxruntime", "cv2")),
    "aesthetic": ("", ()),
}


def missing_extra(signal: str) -> str | None:
    """The extra ``signal`` needs when one of its modules is not installed, else None."""
    extra, modules = EXTRAS[signal]
    if any(importlib.util.find_spec(m) is None for m in modules):
        return extra
    return None


def check_signals(cfg: SignalsConfig, clip_enabled: bool = True) -> None:
    """ConfigError (exit 2) before anything is written: an unknown signal, a missing extra (named), an
    aesthetic signal without its head file or without CLIP scoring."""
    for name in cfg.compute:
        if name not in SIGNAL_NAMES:  # pragma: no cover - the config's Literal refuses it first
            raise ConfigError(f"unknown signal {name!r} (fix: one of {', '.join(SIGNAL_NAMES)})")
        extra = missing_extra(name)
        if extra:
            raise ConfigError(f"signal {name!r} needs the [{extra}] extra, which is not installed "
                              f'(fix: pip install "clipcrawl[{extra}]", or leave {name} out of --signals)')
    if "aesthetic" in cfg.compute:
        if not cfg.aesthetic_head:
            raise ConfigError("signal 'aesthetic' needs LAION's aesthetic predictor file (fix: --aesthetic-head "
                              "PATH, e.g. improved-aesthetic-predictor's sac+logos+ava1-l14-linearMSE.pth)")
        if not clip_enabled:
            raise ConfigError("signal 'aesthetic' reads the CLIP image embedding (fix: enable filters.clip)")


def signal_stage(cfg: SignalsConfig, unsafe_head: str | None = None):
    """The one stage computing ``cfg.compute`` (None when nothing is asked)."""
    if not cfg.compute and not unsafe_head:
        return None
    from clipcrawl.filters.signals.stage import ComputeSignals

    return ComputeSignals(cfg, unsafe_head)
