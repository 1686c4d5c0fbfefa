"""Several scorers in one pass (``filters.clip.models`` / repeated ``--model``): their names and columns.

The first model is the primary: its cosine is ``clip_similarity`` (what every rule, dedup keep rule
and report used before), its name ``clip_model``, and SigLIP-style models add ``clip_sigmoid`` =
sigmoid(logit_scale * cosine + logit_bias), the model's own calibrated pair probability. Each
further model writes the same columns with a ``_<name>`` suffix: ``clip_similarity_<name>``,
``clip_sigmoid_<name>``, ``clip_model_<name>``. ``<name>`` is the spec's ``name`` or the model name
lower-cased with runs of other characters as ``_`` (``ViT-L-14`` -> ``vit_l_14``); a clash gets ``_2``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clipcrawl.schemas.components import ClipConfig, ClipModelSpec


@dataclass(frozen=True)
class Scorer:
    suffix: str  # "" for the primary model
    model: str
    pretrained: str | None
    tokenizer: str | None

    def column(self, base: str) -> str:
        return f"{base}_{self.suffix}" if self.suffix else base

    @property
    def similarity_column(self) -> str:
        return self.column("clip_similarity")

    @property
    def sigmoid_column(self) -> str:
        return self.column("clip_sigmoid")

    @property
    def model_column(self) -> str:
        return self.column("clip_model")


def slug(model: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")[:40] or "model"


def scorers(cfg: ClipConfig) -> list[Scorer]:
    """The primary scorer, then one per further entry of ``cfg.models``."""
    specs = list(cfg.models) or [ClipModelSpec(model=cfg.model, pretrained=cfg.pretrained, tokenizer=cfg.tokenizer)]
    out = [Scorer("", cfg.model, cfg.pretrained, cfg.tokenizer)]
    used: set[str] = set()
    for spec in specs[1:]:
        base = spec.name or slug(spec.model)
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        out.append(Scorer(name, spec.model, spec.pretrained, spec.tokenizer))
    return out
