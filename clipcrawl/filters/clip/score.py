"""CLIP scoring stages: ``ScoreClip`` computes, ``ApplyClipThreshold`` decides ("score, then decide").

``ScoreClip`` reads the transient ``image`` (encoded bytes) and ``caption`` columns of the rows still
``success`` and writes ``clip_similarity`` (cosine of the L2-normalised embeddings, float32),
``clip_model``, ``punsafe``/``pwatermark`` (zero-shot prompt scores, uncalibrated, never used to filter;
or a user-supplied trained head's, :mod:`clipcrawl.filters.clip.safety_head`), and the transient ``image_embedding`` /
``text_embedding`` (fixed-size list<float32>). Rows without image bytes keep null scores; images
that cannot be decoded become ``failed_to_score``. Decoding runs in threads ahead of the model
(:mod:`clipcrawl.filters.clip.prefetch`).

Several models (``ClipConfig.models``, :mod:`clipcrawl.filters.clip.multi`) share that decode: the
first writes the columns above (and ``clip_sigmoid`` when it is a SigLIP-style sigmoid model), each
further one ``clip_similarity_<name>`` / ``clip_sigmoid_<name>`` / ``clip_model_<name>``; tags and
embeddings come from the first.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clipcrawl.base.stage import Stage, mark, ok_mask, set_column
from clipcrawl.schemas.config import ClipConfig
from clipcrawl.schemas.status import Status
from clipcrawl.schemas.tables import IMAGE_COLUMN


def embedding_array(values: np.ndarray, valid: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float32 + validity mask -> fixed_size_list<float32>[D] with nulls where not valid."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    n, d = values.shape
    flat = pa.array(values.reshape(-1), type=pa.float32())
    mask = None if valid.all() else pa.array(~valid, type=pa.bool_())
    return pa.FixedSizeListArray.from_arrays(flat, d, mask=mask)


def _float_column(values: np.ndarray, valid: np.ndarray, old: pa.ChunkedArray | None) -> pa.Array:
    """New float32 values where ``valid``; elsewhere the existing column's value (or null)."""
    new = pa.array(values.astype(np.float32), type=pa.float32(), mask=~valid)
    if old is None:
        return new
    return pc.if_else(pa.array(valid), new, old.combine_chunks().cast(pa.float32()))


class ScoreClip(Stage):
    """Embed image and caption of every success row with CLIP; store similarity and zero-shot tags."""

    name: ClassVar[str] = "clip"
    reports_progress: ClassVar[bool] = True
    #: a quarter GPU per worker when the cluster has GPUs (``device: auto`` then resolves to CUDA there)
    resources: ClassVar[dict[str, float]] = {"gpu": 0.25}
    _transient = ("clip", "encoder", "tags", "logit_scale", "others")

    def __init__(self, config: ClipConfig | None = None) -> None:
        self.config = config or ClipConfig()

    def needs(self) -> dict[str, float]:
        dev = self.config.device
        return {} if dev == "cpu" or dev.startswith("mps") else dict(self.resources)

    def setup(self) -> None:
        from clipcrawl.filters.clip.encoders import make_encoder
        from clipcrawl.filters.clip.model import load_clip
        from clipcrawl.filters.clip.multi import scorers
        from clipcrawl.filters.clip.zeroshot import ZeroShotTag

        c = self.config
        specs = scorers(c)
        self.clip = load_clip(c.model, c.pretrained, device=c.device, precision=c.precision, tokenizer=c.tokenizer)
        kwargs: dict[str, Any] = {"quantize": c.quantize} if self.clip.precision == "fast" else {}
        self.encoder = make_encoder(self.clip, **kwargs)
        #: further models: (scorer, loaded, encoder), all loaded before the first row is read
        self.others = []
        for sc in specs[1:]:
            other = load_clip(sc.model, sc.pretrained, device=c.device, precision=c.precision, tokenizer=sc.tokenizer)
            kw = {"quantize": c.quantize} if other.precision == "fast" else {}
            self.others.append((sc, other, make_encoder(other, **kw)))
        scale = getattr(self.clip.model, "logit_scale", None)
        self.logit_scale = float(scale.exp().item()) if scale is not None else 100.0
        if hasattr(self.clip.model, "logit_scale_exp"):  # the tiny model on ONNX Runtime (no torch)
            self.logit_scale = float(self.clip.model.logit_scale_exp)

        def enc(texts: list[str]) -> np.ndarray:
            return self.encoder.encode_texts(self.clip.tokenizer(texts))

        from clipcrawl.filters.clip.safety_head import load_head

        d = self.clip.embed_dim
        self.tags = [
            t
            for t in (
                load_head(c.unsafe_head, "punsafe", d) if c.unsafe_head
                else ZeroShotTag.build("punsafe", c.unsafe_prompts, c.safe_prompts, enc),
                load_head(c.watermark_head, "pwatermark", d) if c.watermark_head
                else ZeroShotTag.build("pwatermark", c.watermark_prompts, c.clean_prompts, enc),
            )
            if t is not None
        ]

    @property
    def model_name(self) -> str:
        return self.clip.name

    @property
    def model_names(self) -> dict[str, str]:
        """model-name column -> the model name it records, for every scorer."""
        return {"clip_model": self.clip.name, **{sc.model_column: o.name for sc, o, _ in self.others}}

    def process(self, table: pa.Table) -> pa.Table:
        from clipcrawl.filters.clip.prefetch import Prefetcher

        n = table.num_rows
        d = self.clip.embed_dim
        images = table.column(IMAGE_COLUMN).to_pylist() if IMAGE_COLUMN in table.column_names else [None] * n
        captions = table.column("caption").to_pylist() if "caption" in table.column_names else [None] * n
        captions = [c if isinstance(c, str) else "" for c in captions]
        todo = [i for i in np.flatnonzero(ok_mask(table)) if images[i] is not None]

        img_emb = np.zeros((n, d), dtype=np.float32)
        txt_emb = np.zeros((n, d), dtype=np.float32)
        scored = np.zeros(n, dtype=bool)
        failed = np.zeros(n, dtype=bool)
        messages: list[str | None] = [None] * n
        more_sims = [np.zeros(n, dtype=np.float32) for _ in self.others]
        more = [(o.preprocess, o.tokenizer) for _, o, _ in self.others]
        with Prefetcher(self.clip.preprocess, self.clip.tokenizer, workers=self.config.workers, more=more) as pf:
            for batch in pf.batches(todo, images, captions, self.config.batch_size):
                rows = np.asarray(batch.rows)
                ok = np.asarray(batch.ok, dtype=bool)
                for r, err in zip(rows[~ok], (e for e, k in zip(batch.errors, batch.ok) if not k)):
                    failed[r], messages[r] = True, err
                if not ok.any():
                    self.tick(len(rows))
                    continue
                good = rows[ok]
                img_emb[good] = self.encoder.encode_images(batch.pixels)
                txt_emb[good] = self.encoder.encode_texts(batch.tokens[ok])
                for k, ((_, _, enc), (pix, tok)) in enumerate(zip(self.others, batch.more or [])):
                    more_sims[k][good] = (enc.encode_images(pix) * enc.encode_texts(tok[ok])).sum(axis=1)
                scored[good] = True
                self.tick(len(rows))

        sims = (img_emb * txt_emb).sum(axis=1)
        cols: dict[str, pa.Array] = {"clip_similarity": _float_column(sims, scored, _col(table, "clip_similarity"))}
        for tag in self.tags:
            probs = np.zeros(n, dtype=np.float32)
            probs[scored] = tag.probabilities(img_emb[scored], self.logit_scale)
            cols[tag.column] = _float_column(probs, scored, _col(table, tag.column))
        models = [("clip_model", self.clip.name)]
        _sigmoid_column(cols, table, "clip_sigmoid", self.clip, sims, scored)
        for (sc, other, _), ms in zip(self.others, more_sims):
            cols[sc.similarity_column] = _float_column(ms, scored, _col(table, sc.similarity_column))
            _sigmoid_column(cols, table, sc.sigmoid_column, other, ms, scored)
            models.append((sc.model_column, other.name))
        for column, name in models:
            model = pa.array([name if s else None for s in scored], pa.string())
            old = _col(table, column)
            cols[column] = model if old is None else pc.if_else(pa.array(scored), model, old.combine_chunks().cast(pa.string()))
        cols["image_embedding"] = embedding_array(img_emb, scored)
        cols["text_embedding"] = embedding_array(txt_emb, scored)
        for name, arr in cols.items():
            table = set_column(table, name, arr)
        if failed.any():
            table = mark(table, failed, Status.FAILED_TO_SCORE, self.name, messages)
        return table


def _sigmoid_column(cols: dict[str, pa.Array], table: pa.Table, name: str, clip: Any, sims: np.ndarray,
                    scored: np.ndarray) -> None:
    """``name`` = the model's sigmoid of ``sims`` on scored rows; a softmax model nulls what an earlier
    (sigmoid) model left there, so a score never outlives the model that produced it."""
    old = _col(table, name)
    if clip.logit_bias is not None:
        cols[name] = _float_column(clip.sigmoid(sims), scored, old)
    elif old is not None:
        cols[name] = pc.if_else(pa.array(scored), pa.nulls(len(scored), pa.float32()),
                                old.combine_chunks().cast(pa.float32()))


def _col(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    return table.column(name) if name in table.column_names else None


class ApplyClipThreshold(Stage):
    """Move success rows with ``column`` (default ``clip_similarity``) ``< threshold`` to ``filtered_clip``
    (null scores stay)."""

    name: ClassVar[str] = "clip_threshold"

    def __init__(self, threshold: float, column: str = "clip_similarity") -> None:
        self.threshold = float(threshold)
        self.column = column

    def process(self, table: pa.Table) -> pa.Table:
        if self.column not in table.column_names or table.num_rows == 0:
            return table
        sims = table.column(self.column).to_numpy(zero_copy_only=False).astype(np.float64)
        below = np.nan_to_num(sims, nan=np.inf) < self.threshold
        msgs = [f"{self.column} {s:.3f} < {self.threshold:g}" if b else None for s, b in zip(sims, below)]
        return mark(table, below, Status.FILTERED_CLIP, self.name, msgs)
