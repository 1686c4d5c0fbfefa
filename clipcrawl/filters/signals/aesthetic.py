"""``aesthetic`` signal: LAION's aesthetic predictor on the CLIP image embedding ScoreClip computed.

The head is a local file in its published format (:mod:`clipcrawl.filters.clip.safety_head`:
improved-aesthetic-predictor's ``layers.N`` MLP such as ``sac+logos+ava1-l14-linearMSE.pth``, or the v1
linear head); its input width must be the CLIP model's (768: ViT-L/14). ``aesthetic`` is its raw rating
(about 1-10). Rows without an embedding keep null.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from clipcrawl.filters.signals.base import Signal


class AestheticSignal(Signal):
    name: ClassVar[str] = "signal_aesthetic"
    signal: ClassVar[str] = "aesthetic"
    columns: ClassVar[tuple[str, ...]] = ("aesthetic",)
    needs_pixels: ClassVar[bool] = False
    _transient = ("head",)

    def __init__(self, head_path: str) -> None:
        self.head_path = head_path
        self.head = None

    def setup(self) -> None:
        from clipcrawl.filters.clip.safety_head import load_head

        self.head = load_head(self.head_path, "aesthetic")

    def source(self) -> str:
        self.ready()
        return self.head.describe()

    def compute(self, rows, pixels, captions, table: pa.Table) -> tuple[dict[str, list[Any]], dict[int, str]]:
        self.ready()
        if "image_embedding" not in table.column_names or not len(rows):
            return {"aesthetic": [None] * len(rows)}, {}
        col = table.column("image_embedding").combine_chunks()
        valid = [int(r) for r in rows if col[int(r)].is_valid]
        out: list[Any] = [None] * len(rows)
        if valid:
            emb = np.stack([np.asarray(col[r].as_py(), dtype=np.float32) for r in valid])
            if emb.shape[1] != self.head.in_dim:
                from clipcrawl.schemas.configbase import ConfigError

                raise ConfigError(f"aesthetic head {self.head_path} takes {self.head.in_dim}-d embeddings but the "
                                  f"CLIP model gives {emb.shape[1]}-d (fix: the head of this model, e.g. ViT-L-14 "
                                  "for LAION's)")
            pred = dict(zip(valid, self.head.predict(emb).tolist()))
            out = [pred.get(int(r)) for r in rows]
        return {"aesthetic": out}, {}
