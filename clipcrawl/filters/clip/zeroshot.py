"""Zero-shot tag probabilities from prompt lists (LAION's ``punsafe`` / ``pwatermark`` columns).

A tag's probability is the softmax mass of its positive prompts among positive + negative prompts,
with the model's own logit scale (100 for OpenAI CLIP). The values are stored, never thresholded
here: filtering on them is a downstream decision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class ZeroShotTag:
    column: str
    prompts: np.ndarray  # (P, D) L2-normalised prompt embeddings, positives first
    n_positive: int

    @classmethod
    def build(
        cls,
        column: str,
        positives: Sequence[str],
        negatives: Sequence[str],
        encode_texts: Callable[[list[str]], np.ndarray],
    ) -> ZeroShotTag | None:
        if not positives or not negatives:
            return None
        emb = encode_texts(list(positives) + list(negatives))
        return cls(column, emb.astype(np.float32), len(positives))

    def probabilities(self, image_emb: np.ndarray, logit_scale: float) -> np.ndarray:
        """(N, D) normalised image embeddings -> (N,) float32 probability of the positive prompts."""
        if len(image_emb) == 0:
            return np.zeros(0, dtype=np.float32)
        logits = logit_scale * (image_emb @ self.prompts.T)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return p[:, : self.n_positive].sum(axis=1).astype(np.float32)
