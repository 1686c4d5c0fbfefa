"""CLIP image embeddings for dedup passes that have none (standalone ``clipcrawl dedup``, eval sets).

Uses the CLIP filter's model loader (``clipcrawl.filters.clip.model.load_clip``: open_clip names,
local checkpoints, or the shipped ``tiny`` model), in fp32, so the vectors are comparable with the
``image_embedding`` column the CLIP stage produces for the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Embedded:
    emb: np.ndarray  # (n, d) float32 unit rows; zeros where ``ok`` is false
    ok: np.ndarray
    model: str


class ImageEmbedder:
    """``ImageEmbedder("tiny").embed([jpeg_bytes, ...])`` -> unit image embeddings."""

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = "openai", device: str = "auto",
                 batch_size: int = 64):
        self.model_name, self.pretrained, self.device, self.batch_size = model, pretrained, device, batch_size
        self._clip = None

    def _load(self):
        if self._clip is None:
            from clipcrawl.filters.clip.model import load_clip

            self._clip = load_clip(self.model_name, self.pretrained, device=self.device, precision="fp32")
        return self._clip

    @property
    def name(self) -> str:
        """The ``clip_model`` string of the loaded model ("<model>/<pretrained>")."""
        return self._load().name

    def embed(self, images: Sequence[bytes | None]) -> Embedded:
        from clipcrawl.filters.clip.encoders import make_encoder
        from clipcrawl.filters.clip.prefetch import decode_image

        clip = self._load()
        encoder = make_encoder(clip)  # fp32: open_clip eager; the tiny model without torch: ONNX Runtime
        out = np.zeros((len(images), clip.embed_dim), dtype=np.float32)
        ok = np.zeros(len(images), dtype=bool)
        for start in range(0, len(images), self.batch_size):
            tensors, rows = [], []
            for i in range(start, min(start + self.batch_size, len(images))):
                if not images[i]:
                    continue
                try:
                    tensors.append(decode_image(images[i], clip.preprocess))
                    rows.append(i)
                except ValueError:
                    continue
            if not tensors:
                continue
            if isinstance(tensors[0], np.ndarray):
                batch = np.stack(tensors)
            else:
                import torch

                batch = torch.stack(tensors)
            out[rows] = encoder.encode_images(batch)
            ok[rows] = True
        return Embedded(out, ok, clip.name)
