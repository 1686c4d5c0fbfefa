"""Curation presets: a known recipe turned into config overrides (``--preset NAME`` / YAML ``preset:``).

Each preset names its source and its exact rules. :func:`apply_preset` is a pure function over
the pydantic configs: it returns a copy of a :class:`~clipcrawl.schemas.config.RunConfig` (or of a
:class:`~clipcrawl.schemas.components.FiltersConfig`) with the preset's fields set, except the
fields the user set explicitly (pydantic's ``model_fields_set``): those win.

Presets (what clipcrawl can reproduce; what it cannot is said per preset):

``laion400m``
    LAION-400M (Schuhmann et al. 2021, arXiv:2111.02114; laion.ai/blog/laion-400-open-dataset).
    Alt texts shorter than 5 characters dropped; images smaller than 5 KB dropped; CLIP ViT-B/32
    (OpenAI weights) image-text cosine >= 0.30. (LAION also tagged NSFW and removed duplicates
    by URL+text; clipcrawl's dedup does the latter by default.)
``laion2b-en``
    LAION-2B-en, the English part of LAION-5B (Schuhmann et al. 2022, arXiv:2210.08402). Same
    first filters (>= 5 characters, >= 5 KB), English captions, CLIP ViT-B/32 OpenAI cosine >=
    0.28. LAION identified the language with CLD3; clipcrawl uses fastText lid.176.
``datacomp-basic``
    DataComp "Basic filtering" baseline (Gadre et al. 2023, arXiv:2304.14108;
    github.com/mlfoundations/datacomp ``baselines/filters.py``): English (fastText), caption with
    more than 2 words and more than 5 characters, smaller original side >= 200 px, aspect ratio
    <= 3. No CLIP cut. (DataComp counts words with ``str.split``; clipcrawl counts ``\\w+`` runs.)
``datacomp-clip-top30``
    DataComp "CLIP score (L/14 30%)" baseline: the 30% of the pool with the highest CLIP ViT-L/14
    (OpenAI weights) cosine, ranked over the whole pool. No other rule.
``datacomp-intersect-b32-l14``
    A DataComp-style intersection of two CLIP-score filters in one pass (two scorers, one decode):
    CLIP ViT-B/32 (OpenAI) cosine >= 0.25 AND in the top 30 % of the pool by CLIP ViT-L/14 (OpenAI)
    cosine, the L/14 cut-off ranked over the whole pool independently of the B/32 rule. Both filters
    are DataComp's ``clip_score`` baseline (Gadre et al. 2023, arXiv:2304.14108, Sec. 3.4 and App. Q;
    github.com/mlfoundations/datacomp ``baselines/filters.py``: ``--arch b32|l14`` with ``--threshold``
    or ``--fraction``), and intersecting two filters' keep sets is what its
    ``image_based_intersect_clip_score`` baseline does. The pair of numbers (B/32 >= 0.25, L/14
    top 30 %) is clipcrawl's recipe (issue 27), not a row of DataComp's result tables. Columns:
    ``clip_similarity`` (B/32), ``clip_similarity_l14`` (L/14).
``metaclip``
    MetaCLIP (Xu et al. 2023, "Demystifying CLIP Data", arXiv:2309.16671;
    github.com/facebookresearch/MetaCLIP): captions substring-matched to metadata entries, each
    pair kept with probability min(1, t / count of its rarest entry), t = 20000 (their 400M
    setting), unmatched pairs dropped. No CLIP cut. Default entries: the small shipped list
    (clipcrawl/assets/metaclip/PROVENANCE.md); pass MetaCLIP's 500k-entry file for the real one.
``laion-aesthetics-6plus``
    LAION-Aesthetics V2 "6+" (laion.ai/blog/laion-aesthetics): pairs whose aesthetic rating by the improved
    aesthetic predictor (``sac+logos+ava1-l14-linearMSE.pth``, an MLP on CLIP ViT-L/14 image embeddings) is
    at least 6. The predictor file is the user's (``--aesthetic-head`` / ``filters.signals.aesthetic_head``);
    LAION ran it over laion2B-en/5B, whose own filters the other presets cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from clipcrawl.schemas.configbase import ConfigError

__all__ = ["Preset", "PRESETS", "apply_preset", "describe_preset", "preset_overrides"]


@dataclass(frozen=True)
class Preset:
    name: str
    source: str
    rules: tuple[str, ...]  # human-readable, shown by `run --check` and the stats report
    overrides: dict[str, dict[str, Any]]  # FiltersConfig component -> field -> value


_LAION_TEXT = {"min_chars": 5, "min_words": 0, "drop_generic": False}
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("laion400m", "LAION-400M, Schuhmann et al. 2021, arXiv:2111.02114",
           ("caption >= 5 characters", "image >= 5000 bytes", "CLIP ViT-B-32/openai cosine >= 0.30"),
           {"text": _LAION_TEXT, "image": {"min_bytes": 5000},
            "clip": {"model": "ViT-B-32", "pretrained": "openai", "threshold": 0.30}}),
    Preset("laion2b-en", "LAION-5B (English subset), Schuhmann et al. 2022, arXiv:2210.08402",
           ("caption >= 5 characters", "caption language en", "image >= 5000 bytes",
            "CLIP ViT-B-32/openai cosine >= 0.28"),
           {"text": {**_LAION_TEXT, "languages": ["en"]}, "image": {"min_bytes": 5000},
            "clip": {"model": "ViT-B-32", "pretrained": "openai", "threshold": 0.28}}),
    Preset("datacomp-basic", "DataComp basic filtering, Gadre et al. 2023, arXiv:2304.14108 (mlfoundations/datacomp)",
           ("caption language en", "caption > 2 words", "caption > 5 characters",
            "original smaller side >= 200 px", "aspect ratio <= 3", "no CLIP cut"),
           {"text": {"languages": ["en"], "min_words": 3, "min_chars": 6, "drop_generic": False},
            "image": {"min_side": 200, "max_aspect_ratio": 3.0},
            "clip": {"threshold": -1.0}}),
    Preset("datacomp-clip-top30", "DataComp CLIP score (L/14 30%), Gadre et al. 2023, arXiv:2304.14108",
           ("top 30% of the pool by CLIP ViT-L-14/openai cosine (ranked over the whole dataset)",),
           {"text": {"min_words": 0, "min_chars": 0, "drop_generic": False},
            "clip": {"model": "ViT-L-14", "pretrained": "openai", "threshold": -1.0, "top_fraction": 0.3}}),
    Preset("datacomp-intersect-b32-l14",
           "DataComp CLIP-score filters intersected, Gadre et al. 2023, arXiv:2304.14108 (mlfoundations/datacomp "
           "baselines/filters.py); the B/32 0.25 + L/14 30% pair is clipcrawl's recipe",
           ("CLIP ViT-B-32/openai cosine >= 0.25 (clip_similarity)",
            "AND top 30% of the pool by CLIP ViT-L-14/openai cosine (clip_similarity_l14, ranked over the whole "
            "dataset, independent of the B/32 rule)"),
           {"text": {"min_words": 0, "min_chars": 0, "drop_generic": False},
            "clip": {"models": [{"model": "ViT-B-32", "pretrained": "openai"},
                                {"model": "ViT-L-14", "pretrained": "openai", "name": "l14"}],
                     "model": "ViT-B-32", "pretrained": "openai", "threshold": 0.25, "threshold_by": "clip_similarity",
                     "top_fraction": 0.3, "top_fraction_by": "clip_similarity_l14"}}),
    Preset("metaclip", "MetaCLIP, Xu et al. 2023, arXiv:2309.16671 (facebookresearch/MetaCLIP)",
           ("caption substring-matched to metadata entries (unmatched dropped)",
            "keep with probability min(1, t / count of rarest matched entry), t = 20000, seeded", "no CLIP cut"),
           {"balance": {"enabled": True, "t": 20_000}, "clip": {"threshold": -1.0}}),
    Preset("laion-aesthetics-6plus", "LAION-Aesthetics V2 6+ (laion.ai/blog/laion-aesthetics; "
           "christophschuhmann/improved-aesthetic-predictor)",
           ("aesthetic >= 6 by the improved aesthetic predictor on CLIP ViT-L-14/openai image embeddings "
            "(--aesthetic-head sac+logos+ava1-l14-linearMSE.pth)", "no CLIP cut"),
           {"clip": {"model": "ViT-L-14", "pretrained": "openai", "threshold": -1.0},
            "signals": {"compute": ["aesthetic"], "min_aesthetic": 6.0}}),
)}


def _preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r} (fix: use one of {', '.join(PRESETS)})") from None


def preset_overrides(name: str) -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in _preset(name).overrides.items()}


def _apply_filters(filters: BaseModel, preset: Preset) -> BaseModel:
    updates = {}
    for comp, fields in preset.overrides.items():
        sub = getattr(filters, comp)
        explicit = sub.model_fields_set if comp in filters.model_fields_set else set()
        vals = {k: v for k, v in fields.items() if k not in explicit}
        if comp == "clip" and "models" in vals and explicit & {"model", "pretrained", "tokenizer"}:
            # the user's model replaces the recipe's first scorer; the further ones stay
            first = {**vals["models"][0], **{k: getattr(sub, k) for k in ("model", "pretrained", "tokenizer")
                                             if k in explicit}}
            vals["models"] = [first, *vals["models"][1:]]
        # validate through the model (model_copy(update=) would skip validation)
        updates[comp] = type(sub).model_validate({**sub.model_dump(), **vals})
    return filters.model_copy(update=updates)


def apply_preset(cfg: BaseModel, name: str | None = None) -> BaseModel:
    """``cfg`` with preset ``name`` (default ``cfg.preset``) applied; explicit fields win. Pure."""
    name = name if name is not None else getattr(cfg, "preset", None)
    if not name:
        return cfg
    preset = _preset(name)
    if hasattr(cfg, "filters"):
        out = cfg.model_copy(update={"filters": _apply_filters(cfg.filters, preset)})
        return out.model_copy(update={"preset": name}) if "preset" in type(cfg).model_fields else out
    return _apply_filters(cfg, preset)


def describe_preset(name: str | None) -> list[str]:
    """Lines for ``run --check`` and the stats report (empty when no preset)."""
    if not name:
        return []
    p = _preset(name)
    return [f"preset {p.name}: {p.source}", *(f"  - {r}" for r in p.rules)]
